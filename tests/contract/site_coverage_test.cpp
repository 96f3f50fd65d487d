// The contract between the lowering and its interpreters: every (OpKind, Site) the lowering emits
// for every model preset and a grid of layouts has a handler in the real executor
// (site_handlers.h) and a finite, positive cost in the simulator's compute model (multi-latent
// attention and multi-token prediction included).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/executor/site_handlers.h"
#include "backends/sim/compute_model.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "program/program.h"

namespace tandem {
namespace {

struct Layout {
  std::string name;
  std::vector<std::string> flags;
  int64_t gpus;
};

// Layouts that exercise every emitter: TP with and without SP, PP with interleaving and V
// schedules, CP, EP/ETP, recompute, the distributed optimizer with overlap.
std::vector<Layout> layouts(bool moe) {
  std::vector<Layout> out = {
      {"tp2-sp-pp2-vpp", {"--tensor-model-parallel-size", "2", "--sequence-parallel", "--pipeline-model-parallel-size",
                          "2", "--num-layers-per-virtual-pipeline-stage", "1", "--use-distributed-optimizer",
                          "--overlap-grad-reduce", "--overlap-param-gather"}, 8},
      {"tp2-cp2-recompute", {"--tensor-model-parallel-size", "2", "--context-parallel-size", "2",
                             "--recompute-granularity", "full", "--recompute-method", "uniform",
                             "--recompute-num-layers", "1"}, 4},
      {"pp2-dualpipev-selective", {"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "dualpipev",
                                   "--recompute-activations"}, 2},
      {"pp2-zb-h1", {"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "zb-h1"}, 2},
  };
  if (moe)
    out.push_back({"tp2-sp-ep2-etp1", {"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                       "--expert-model-parallel-size", "2", "--expert-tensor-parallel-size", "1"}, 4});
  return out;
}

// A job file with the preset's architecture and none of its published layout defaults.
std::string architecture_file(const std::string& preset) {
  nlohmann::json model = read_json_file(data_dir() + "/models/presets/" + preset + ".json");
  for (const char* key : {"name", "source", "defaults"}) model.erase(key);
  // A per-layer MoE pattern (DeepSeek-V3's dense first layers) shrinks with the model: one dense
  // layer, then three MoE layers.
  if (model.contains("moe_layer_freq") && !model["moe_layer_freq"].is_number()) model["moe_layer_freq"] = "([0]*1+[1]*3)";
  const std::string path = ::testing::TempDir() + "site_coverage_" + preset + ".json";
  std::ofstream(path) << nlohmann::json{{"model", model}}.dump();
  return path;
}

// A preset's architecture shrunk to 4 layers, one sequence of 256 tokens per microbatch.
Job shrunk(const std::string& preset, const Layout& layout, const std::vector<std::string>& extra) {
  JobRequest r;
  r.config_file = architecture_file(preset);
  r.cluster = "dgx-h100";
  r.gpus = layout.gpus;
  r.megatron_flags = {"--num-layers", "4", "--seq-length", "256", "--max-position-embeddings", "256",
                      "--micro-batch-size", "1"};
  r.megatron_flags.insert(r.megatron_flags.end(), extra.begin(), extra.end());
  r.megatron_flags.insert(r.megatron_flags.end(), layout.flags.begin(), layout.flags.end());
  return load_job(r);
}

// The lowered programs of one job (one per symmetry class), or nothing when the layout does not
// suit the model (heads over TP, experts over EP, MoE with TP but no SP): a UserError.
std::vector<RankProgram> programs_of(const Job& job) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  std::vector<RankProgram> out;
  for (int64_t rank : class_representatives(job, grid)) out.push_back(lower_rank(job, grid, schedule, rank));
  return out;
}

TEST(SiteCoverage, EveryEmittedSiteHasAHandlerAndACost) {
  std::set<std::pair<OpKind, Site>> seen;
  int64_t jobs = 0;
  for (const std::string& preset : list_model_presets()) {
    const bool moe = shrunk(preset, {"single", {}, 1}, {"--global-batch-size", "1"}).model.is_moe();
    for (const Layout& layout : layouts(moe)) {
      Job job;
      std::vector<RankProgram> programs;
      try {   // 4 microbatches per data-parallel rank at most (DP <= GPUs)
        job = shrunk(preset, layout, {"--global-batch-size", std::to_string(4 * layout.gpus)});
        programs = programs_of(job);
      } catch (const UserError&) {
        continue;
      }
      const sim::ComputeModel model = sim::ComputeModel::for_job(job);
      ++jobs;
      for (const RankProgram& p : programs)
        for (const Instruction& x : p.instructions) {
          if (is_memory(x.kind)) continue;
          seen.insert({x.kind, x.site});
          ASSERT_NE(x.site, Site::None) << preset << " " << layout.name << ": " << op_trace_line(x);
          EXPECT_NE(exec::handler_of(x.kind, x.site), exec::Handler::None)
              << preset << " " << layout.name << ": no real-backend handler for " << op_trace_line(x);
          if (is_compute(x.kind)) {
            const double t = model.time(x);
            EXPECT_TRUE(std::isfinite(t) && t > 0)
                << preset << " " << layout.name << ": simulator cost " << t << " for " << op_trace_line(x);
          }
        }
    }
  }
  EXPECT_GT(jobs, 40);
  EXPECT_GT(seen.size(), 100u);   // the grid reaches most of the table
  std::printf("%lld jobs, %zu distinct (kind, site) pairs\n", static_cast<long long>(jobs), seen.size());
}

TEST(SiteCoverage, EverySiteHasAName) {
  std::set<std::string> names;
  for (int s = 1; s < kSiteCount; ++s) {
    const std::string name = to_string(static_cast<Site>(s));
    EXPECT_FALSE(name.empty()) << s;
    EXPECT_TRUE(names.insert(name).second) << "two sites named " << name;
  }
}

}  // namespace
}  // namespace tandem
