// Software stacks (backends/sim/stack.h): every stack file loads, its parameters keep their
// values and priors inside their bounds, fitted parameters name their fit, and jobs pick the
// stack they name, else their cluster's.
#include <filesystem>

#include <gtest/gtest.h>

#include "backends/sim/stack.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::sim {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> stack_files() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(fs::path(data_dir()) / "clusters" / "stacks"))
    if (e.path().extension() == ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Stack, EveryStackFileLoadsWithParametersInsideTheirBounds) {
  const std::vector<std::string> files = stack_files();
  ASSERT_GE(files.size(), 4u);
  for (const std::string& f : files) {
    const Stack s = load_stack(f);
    EXPECT_EQ(s.name, fs::path(f).stem().string()) << f;
    EXPECT_GE(s.parameters.size(), 15u) << f;
    for (const StackParameter& p : s.parameters) {
      EXPECT_FALSE(p.meaning.empty()) << f << " " << p.name;
      EXPECT_FALSE(p.prior_source.empty()) << f << " " << p.name;
      EXPECT_LE(p.lower, p.value) << f << " " << p.name;
      EXPECT_LE(p.value, p.upper) << f << " " << p.name;
      EXPECT_LE(p.lower, p.prior) << f << " " << p.name;
      EXPECT_LE(p.prior, p.upper) << f << " " << p.name;
      // A value other than the prior was set by a fit, which the file records.
      if (p.value != p.prior) {
        EXPECT_FALSE(p.fitted_command.empty()) << f << " " << p.name << ": moved from its prior without a fit";
        EXPECT_TRUE(s.fit.has_value()) << f;
      }
    }
  }
}

TEST(Stack, GpuModelFilesHoldNoEfficiencyConstant) {
  for (const auto& e : fs::directory_iterator(fs::path(data_dir()) / "clusters" / "gpu_models")) {
    const nlohmann::json doc = read_json_file(e.path().string());
    for (const auto& [key, value] : doc.items())
      EXPECT_TRUE(key == "gpu" || key == "source" || key == "default_stack") << e.path() << ": " << key;
  }
}

TEST(Stack, JobsUseTheStackTheyNameElseTheirClusters) {
  JobRequest req;
  req.cluster = "dgx-h100";
  req.megatron_flags = {"--num-layers", "2", "--hidden-size", "256", "--num-attention-heads", "4", "--seq-length", "256"};
  EXPECT_EQ(stack_for_job(load_job(req)).name, "nemo-24-26-h100");
  req.cluster = "dgx-a100";
  EXPECT_EQ(stack_for_job(load_job(req)).name, "megatron-2021-a100");
  req.stack = "generic";
  EXPECT_EQ(stack_for_job(load_job(req)).name, "generic");
  req.stack = "mcore-0.8-h100";   // made for another GPU
  EXPECT_THROW(stack_for_job(load_job(req)), UserError);
  req.stack = "no-such-stack";
  EXPECT_THROW(stack_for_job(load_job(req)), UserError);
}

TEST(Stack, SetParameterKeepsBoundsAndUpdatesTheModelValues) {
  Stack s = load_stack("mcore-0.8-h100");
  const StackParameter* p = find_parameter(s, "gemm.fraction_bf16");
  ASSERT_NE(p, nullptr);
  const double lower = p->lower, upper = p->upper;
  set_parameter(s, "gemm.fraction_bf16", 0.5 * (lower + upper));
  EXPECT_DOUBLE_EQ(s.efficiency.gemm_fraction_half, 0.5 * (lower + upper));
  EXPECT_DOUBLE_EQ(s.doc["gemm"]["fraction_bf16"]["value"].get<double>(), 0.5 * (lower + upper));
  set_parameter(s, "launch_overhead_us", 5.0);
  EXPECT_DOUBLE_EQ(s.efficiency.launch_overhead_s, 5e-6);
  EXPECT_THROW(set_parameter(s, "gemm.fraction_bf16", upper + 0.01), UserError);
  EXPECT_THROW(set_parameter(s, "gemm.no_such", 0.5), UserError);
}

TEST(Stack, BadParameterEntriesNameTheField) {
  nlohmann::json doc = load_stack("mcore-0.8-h100").doc;
  doc["gemm"]["fraction_bf16"]["bounds"] = {0.9, 0.3};
  try {
    parse_stack(doc, "bad.json");
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("gemm.fraction_bf16.bounds"), std::string::npos) << e.what();
  }
  doc = load_stack("mcore-0.8-h100").doc;
  doc["launch_overhead_us"].erase("prior");
  EXPECT_THROW(parse_stack(doc, "bad.json"), UserError);
}

}  // namespace
}  // namespace tandem::sim
