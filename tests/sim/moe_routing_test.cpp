// The MoE routing model (backends/sim/moe_routing.h): balanced equals the lowering's expected
// sizes, Zipf skew shows in load, time and memory, capacity drops copies and caps time, a trace
// recorded by a CPU training run is read back unchanged, runs are byte-identical, and the
// symmetry-reduced run agrees with playing every rank.
#include "backends/sim/moe_routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "core/parallel_grid.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using json = nlohmann::json;
using testing::run_isolated;

// 4 layers, 16 experts top-2, EP 4 over 8 H100s, PP 2, all-to-all dispatcher.
Job moe_job(const std::vector<std::string>& extra = {}, int64_t gpus = 8) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = gpus;
  request.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16", "--num-experts", "16",
                            "--moe-router-topk", "2", "--expert-model-parallel-size", "4",
                            "--moe-token-dispatcher-type", "alltoall", "--pipeline-model-parallel-size", "2"};
  request.megatron_flags.insert(request.megatron_flags.end(), extra.begin(), extra.end());
  return load_job(request);
}

Job zipf_job(double s, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> flags = {"--moe-routing", "zipf", "--moe-routing-zipf-s", std::to_string(s)};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return moe_job(flags);
}

json simulate_json(const Job& job, const SimOptions& options = {}) {
  return json::parse(run_isolated([&] { return result_to_json(simulate(job, options)).dump(); }));
}

TEST(MoeRouting, BalancedLoadsAreTheLoweringsExpectedSizes) {
  const Job job = moe_job();
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const MoeRoutingModel model(job, grid);
  EXPECT_TRUE(model.is_expected());
  EXPECT_EQ(model.tokens(), 1024);   // s x b, no TP
  const RoutingDraw& d = model.draw(0, 0);
  for (double kept : d.kept) EXPECT_EQ(kept, 4 * 1024 * 2 / 16.0);   // EP sources x copies / E
  EXPECT_EQ(d.dropped, 0);
  // Redrawing a program with the balanced model changes no shape, and FLOPs/bytes only by rounding.
  const Schedule schedule = schedule_for_job(job);
  for (int64_t rank : {0, 1, 2, 3}) {
    const RankProgram base = lower_rank(job, grid, schedule, rank);
    const RankProgram routed = apply_routing(base, job, grid, model, grid.expert_coord(rank).ep);
    ASSERT_EQ(routed.instructions.size(), base.instructions.size());
    int64_t routed_count = 0;
    for (size_t i = 0; i < base.instructions.size(); ++i) {
      const Instruction& a = base.instructions[i];
      const Instruction& b = routed.instructions[i];
      routed_count += a.routed ? 1 : 0;
      EXPECT_EQ(a.m, b.m) << i << " " << to_string(a.site);
      EXPECT_EQ(a.n, b.n);
      EXPECT_EQ(a.batch, b.batch);
      EXPECT_NEAR(a.flops, b.flops, 1e-12 * std::max(1.0, a.flops)) << i << " " << to_string(a.site);
      EXPECT_NEAR(a.bytes, b.bytes, 1e-12 * std::max(1.0, a.bytes)) << i << " " << to_string(a.site);
    }
    EXPECT_GT(routed_count, 0);
    EXPECT_NEAR(routed.peak_bytes(), base.peak_bytes(), 1e-9 * base.peak_bytes());
    for (size_t i = 0; i < routed.instructions.size(); ++i)
      if (routed.instructions[i].cost)
        for (int64_t r : routed.instructions[i].cost->expert_rows) EXPECT_EQ(r, base.instructions[i].m);
  }
}

TEST(MoeRouting, BalancedRoutingKeepsTheIterationTime) {
  const json implicit = simulate_json(moe_job());
  const json explicit_balanced = simulate_json(moe_job({"--moe-routing", "balanced"}));
  EXPECT_EQ(implicit["iteration_time_s"], explicit_balanced["iteration_time_s"]);
  EXPECT_EQ(implicit["peak_memory_gib"], explicit_balanced["peak_memory_gib"]);
  EXPECT_EQ(implicit["moe_routing"]["model"], "balanced");
  EXPECT_DOUBLE_EQ(implicit["moe_routing"]["max_over_mean"].get<double>(), 1.0);
  EXPECT_EQ(implicit["symmetry_classes"].get<int64_t>(), 2);   // PP only: balanced ranks stay alike
}

TEST(MoeRouting, ZipfDrawsAreMultinomialsOfTheCopies) {
  const Job job = zipf_job(1.0);
  const MoeRoutingModel model(job, ParallelGrid::from_job(job));
  EXPECT_FALSE(model.is_expected());
  for (int64_t source = 0; source < 4; ++source) {
    const std::vector<double> loads = model.source_loads(2, 3, source);
    ASSERT_EQ(loads.size(), 16u);
    EXPECT_EQ(std::accumulate(loads.begin(), loads.end(), 0.0), double(model.copies()));
    for (double c : loads) {
      EXPECT_EQ(c, std::floor(c));
      EXPECT_LE(c, double(model.tokens()));   // top-k picks distinct experts
    }
    EXPECT_EQ(loads, model.source_loads(2, 3, source));   // a pure function of the key
  }
  EXPECT_NE(model.source_loads(2, 3, 0), model.source_loads(2, 4, 0));
  EXPECT_NE(model.source_loads(2, 3, 0), model.source_loads(2, 3, 1));
}

TEST(MoeRouting, LargerZipfSkewGivesLargerLoadLongerIterationAndMorememory) {
  std::vector<json> runs;
  for (double s : {0.3, 0.8, 1.4}) runs.push_back(simulate_json(zipf_job(s)));
  const json balanced = simulate_json(moe_job());
  double load = 1.0, time = balanced["iteration_time_s"].get<double>(), memory = balanced["peak_memory_gib"].get<double>();
  for (const json& r : runs) {
    EXPECT_EQ(r["moe_routing"]["model"], "zipf");
    EXPECT_GT(r["moe_routing"]["max_over_mean"].get<double>(), load);
    EXPECT_GT(r["iteration_time_s"].get<double>(), time);
    EXPECT_GT(r["peak_memory_gib"].get<double>(), memory);
    load = r["moe_routing"]["max_over_mean"].get<double>();
    time = r["iteration_time_s"].get<double>();
    memory = r["peak_memory_gib"].get<double>();
    EXPECT_EQ(r["symmetry_classes"].get<int64_t>(), 8);   // PP 2 x EP 4
  }
}

TEST(MoeRouting, CapacityFactorDropsCopiesAndCapsTheTime) {
  const Job capped_job = zipf_job(1.4, {"--moe-expert-capacity-factor", "1.0"});
  const MoeRoutingModel model(capped_job, ParallelGrid::from_job(capped_job));
  EXPECT_EQ(model.capacity(), 2.0 * 1024 / 16);   // ceil(tokens x topk / E x 1.0)
  const RoutingDraw& d = model.draw(1, 0);
  EXPECT_GT(d.dropped, 0);
  for (double kept : d.kept) EXPECT_LE(kept, 4 * model.capacity());   // per source, 4 sources
  const json dropless = simulate_json(zipf_job(1.4));
  const json capped = simulate_json(capped_job);
  EXPECT_GT(capped["moe_routing"]["dropped_fraction"].get<double>(), 0.1);
  EXPECT_EQ(dropless["moe_routing"]["dropped_fraction"].get<double>(), 0.0);
  EXPECT_LT(capped["iteration_time_s"].get<double>(), dropless["iteration_time_s"].get<double>());
  EXPECT_LT(capped["peak_memory_gib"].get<double>(), dropless["peak_memory_gib"].get<double>());
  // Balanced routing fits the capacity exactly: nothing dropped, the expected sizes.
  const Job balanced = moe_job({"--moe-expert-capacity-factor", "1.0"});
  EXPECT_TRUE(MoeRoutingModel(balanced, ParallelGrid::from_job(balanced)).is_expected());
}

TEST(MoeRouting, SameJobGivesByteIdenticalJson) {
  const Job job = zipf_job(1.0, {"--moe-routing-seed", "7"});
  EXPECT_EQ(simulate_json(job).dump(), simulate_json(job).dump());
  const json other_seed = simulate_json(zipf_job(1.0, {"--moe-routing-seed", "8"}));
  EXPECT_NE(simulate_json(job)["moe_routing"].dump(), other_seed["moe_routing"].dump());
}

TEST(MoeRouting, ReducedRunEqualsAllRanksWithImbalancedExperts) {
  // EP 2 over 8 GPUs without PP: DP 8 = 4 copies of a 2-rank block; ranks differ by EP coordinate.
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 8;
  request.megatron_flags = {"--num-layers", "2", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16", "--num-experts", "8",
                            "--moe-router-topk", "2", "--expert-model-parallel-size", "2",
                            "--moe-token-dispatcher-type", "alltoall", "--moe-routing", "zipf",
                            "--moe-routing-zipf-s", "1.2"};
  const Job job = load_job(request);
  SimOptions all;
  all.all_ranks = true;
  const json reduced = simulate_json(job);
  const json faithful = simulate_json(job, all);
  EXPECT_TRUE(reduced["symmetry_reduced"].get<bool>());
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 2);
  EXPECT_EQ(faithful["ranks_played"].get<int64_t>(), 8);
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_NEAR(reduced["iteration_time_s"].get<double>(), t, 1e-9 * t);
  EXPECT_NEAR(reduced["peak_memory_gib"].get<double>(), faithful["peak_memory_gib"].get<double>(), 1e-12);
  // Every rank of the faithful run matches the rank that played its part.
  for (const json& rank : faithful["ranks"]) {
    const json& image = reduced["ranks"][static_cast<size_t>(rank["rank"].get<int64_t>() % 2)];
    EXPECT_EQ(rank["symmetry_class"], image["symmetry_class"]);
    EXPECT_DOUBLE_EQ(rank["peak_memory_gib"].get<double>(), image["peak_memory_gib"].get<double>());
  }
  // The two EP ranks really differ.
  EXPECT_NE(reduced["ranks"][0]["busy_s"], reduced["ranks"][1]["busy_s"]);
  EXPECT_EQ(reduced["moe_routing"], faithful["moe_routing"]);
}

TEST(MoeRouting, ImbalancedRanksWhoseDataParallelGroupsCrossNodesAreAllPlayed) {
  // 32 GPUs, PP 2: each stage's data-parallel group spans two nodes and mixes EP coordinates.
  const Job job = moe_job({"--moe-routing", "zipf", "--moe-token-dispatcher-type", "allgather"}, 32);
  SimOptions all;
  all.all_ranks = true;
  const json reduced = simulate_json(job);
  const json faithful = simulate_json(job, all);
  EXPECT_FALSE(reduced["symmetry_reduced"].get<bool>());
  EXPECT_EQ(reduced["iteration_time_s"], faithful["iteration_time_s"]);
  EXPECT_EQ(reduced["peak_memory_gib"], faithful["peak_memory_gib"]);
  // Balanced routing keeps the reduction.
  EXPECT_TRUE(simulate_json(moe_job({"--moe-token-dispatcher-type", "allgather"}, 32))["symmetry_reduced"].get<bool>());
}

// `tandem train --backend cpu --record-routing` writes the trace; the simulator reads the same counts.
TEST(MoeRouting, TraceRecordedByCpuTrainingIsReadBackUnchanged) {
  const std::string tandem = std::string(TANDEM_BINARY_DIR) + "/tandem";
  if (!std::filesystem::exists(tandem)) GTEST_SKIP() << "the tandem binary is not built";
  const std::string trace = (std::filesystem::temp_directory_path() / "tandem_routing_trace_test.json").string();
  const std::vector<std::string> flags = {"--num-layers", "3", "--hidden-size", "64", "--num-attention-heads", "4",
                                          "--seq-length", "32", "--vocab-size", "128", "--num-experts", "4",
                                          "--moe-router-topk", "2", "--micro-batch-size", "2",
                                          "--global-batch-size", "4", "--moe-layer-freq", "[1,0,1]",
                                          "--disable-bias-linear"};
  std::string command = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + tandem +
                        " train --backend cpu --record-routing " + trace + " --";
  for (const std::string& f : flags) command += " '" + f + "'";
  command += " --train-iters 1 --lr 1e-3 --mock-data > /dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const json recorded = json::parse(std::ifstream(trace));
  EXPECT_EQ(recorded["experts"], 4);
  EXPECT_EQ(recorded["topk"], 2);
  ASSERT_EQ(recorded["layers"].size(), 2u);   // the MoE layers 0 and 2

  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 1;
  request.megatron_flags = flags;
  for (const char* f : {"--moe-routing", "trace", "--moe-routing-trace"}) request.megatron_flags.push_back(f);
  request.megatron_flags.push_back(trace);
  const Job job = load_job(request);
  const MoeRoutingModel model(job, ParallelGrid::from_job(job));
  ASSERT_EQ(model.moe_layers(), (std::vector<int64_t>{0, 2}));
  for (size_t l = 0; l < 2; ++l) {
    ASSERT_EQ(recorded["layers"][l].size(), 2u);   // two micro-batches
    for (size_t mb = 0; mb < 2; ++mb) {
      const auto counts = recorded["layers"][l][mb].get<std::vector<double>>();
      EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), 0.0), double(model.copies()));   // real routing
      EXPECT_EQ(model.source_loads(model.moe_layers()[l], int64_t(mb), 0), counts);
    }
  }
  const json result = simulate_json(job);
  double worst = 1.0;
  for (const json& layer : recorded["layers"])
    for (const json& row : layer) {
      const auto c = row.get<std::vector<double>>();
      worst = std::max(worst, *std::max_element(c.begin(), c.end()) / (std::accumulate(c.begin(), c.end(), 0.0) / 4));
    }
  EXPECT_DOUBLE_EQ(result["moe_routing"]["max_over_mean"].get<double>(), worst);
  std::remove(trace.c_str());
}

TEST(MoeRouting, TraceThatDoesNotFitTheJobIsAUserError) {
  const std::string path = (std::filesystem::temp_directory_path() / "tandem_bad_routing_trace.json").string();
  std::ofstream(path) << R"({"experts": 8, "topk": 2, "layers": [[[1, 2, 3, 4, 5, 6, 7, 8]]]})";
  const Job job = moe_job({"--moe-routing", "trace", "--moe-routing-trace", path});
  try {
    MoeRoutingModel model(job, ParallelGrid::from_job(job));
    FAIL() << "a trace of 8 experts was accepted for 16";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--moe-routing-trace = " + path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("8 experts"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tandem::sim
