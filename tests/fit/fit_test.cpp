// `tandem fit`'s pieces that need no simulation: the bounded optimiser and the run files.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/check.h"
#include "fit/fit.h"
#include "fit/optimizer.h"
#include "fit/runs.h"

namespace tandem::fit {
namespace {

namespace fs = std::filesystem;

class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_((fs::temp_directory_path() / ("tandem_fit_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Minimise, FindsAnInteriorMinimumDeterministically) {
  auto f = [](const std::vector<double>& x) { return std::pow(x[0] - 0.3, 2) + 4 * std::pow(x[1] - 7.0, 2); };
  const Minimum a = minimise(f, {0.9, 2.0}, {0.0, 0.0}, {1.0, 10.0});
  const Minimum b = minimise(f, {0.9, 2.0}, {0.0, 0.0}, {1.0, 10.0});
  EXPECT_NEAR(a.x[0], 0.3, 1e-4);
  EXPECT_NEAR(a.x[1], 7.0, 1e-3);
  EXPECT_EQ(a.x, b.x);
  EXPECT_EQ(a.evaluations, b.evaluations);
}

TEST(Minimise, StaysInsideTheBox) {
  auto f = [](const std::vector<double>& x) { return std::pow(x[0] - 3.0, 2); };
  const Minimum m = minimise(f, {0.5}, {0.0}, {1.0});
  EXPECT_NEAR(m.x[0], 1.0, 1e-6);
  EXPECT_LE(m.x[0], 1.0);
}

const char* kFlags = "--num-layers 2 --hidden-size 256 --num-attention-heads 4 --seq-length 256";

TEST(RunFile, CsvWithQuotedFieldsAndBothMetrics) {
  const TempFile f("runs.csv", std::string("label,family,cluster,gpus,megatron_args,step_time_s,tokens_per_s\n") +
                                   "\"a, small\",fam,dgx-h100,8,\"" + kFlags + "\",1.5,\n" +
                                   "b,fam,dgx-h100,8,\"" + kFlags + "\",,20000\n");
  const RunFile r = load_run_file(f.path());
  ASSERT_EQ(r.runs.size(), 2u);
  EXPECT_EQ(r.runs[0].label, "a, small");
  EXPECT_EQ(r.runs[0].metric, Metric::IterationTime);
  EXPECT_DOUBLE_EQ(r.runs[0].measured, 1.5);
  EXPECT_EQ(r.runs[1].metric, Metric::TokensPerSecond);
  EXPECT_EQ(*r.runs[1].request.gpus, 8);
  EXPECT_EQ(resolve_runs(r.runs).size(), 2u);
}

void expect_error(const std::string& name, const std::string& text, const std::string& a, const std::string& b) {
  const TempFile f(name, text);
  try {
    const RunFile r = load_run_file(f.path());
    resolve_runs(r.runs);
    FAIL() << "expected UserError for " << name;
  } catch (const UserError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(a), std::string::npos) << what;
    EXPECT_NE(what.find(b), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

TEST(RunFile, BadInputNamesTheRowAndTheField) {
  const std::string head = "cluster,gpus,megatron_args,step_time_s\n";
  expect_error("col.csv", "cluster,gpus,megatron_args,step_time\n", "header", "step_time");
  expect_error("neg.csv", head + "dgx-h100,8,\"" + kFlags + "\",-2\n", "row 2", "step_time_s = -2");
  expect_error("flag.csv", head + "dgx-h100,8,\"" + kFlags + " --frobnicate 1\",2\n", "row 2", "--frobnicate");
  expect_error("gpus.csv", head + "dgx-h100,eight,\"" + kFlags + "\",2\n", "row 2", "gpus = eight");
  expect_error("both.json", std::string(R"({"runs": [{"cluster": "dgx-h100", "gpus": 8, "megatron_args": ")") + kFlags +
                                R"(", "step_time_s": 1, "tokens_per_s": 5}]})",
               "runs[0]", "step_time_s");
  expect_error("field.json", R"({"runs": [{"cluster": "dgx-h100", "gpu": 8}]})", "runs[0]", "gpu");
}

TEST(RunFile, PublishedSetsReadTheirMetric) {
  const RunFile r = load_run_file(data_dir() + "/experiments/reproduce/megatron-h100.json");
  ASSERT_EQ(r.runs.size(), 9u);
  EXPECT_EQ(r.runs[0].metric, Metric::ModelTflopsPerGpu);
  EXPECT_TRUE(is_rate(r.runs[0].metric));
  EXPECT_DOUBLE_EQ(r.runs[0].measured, 408.8);
}

}  // namespace
}  // namespace tandem::fit
