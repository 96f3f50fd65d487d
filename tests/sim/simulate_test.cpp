// simulate() end to end on lowered programs: symmetry reduction against the faithful mode,
// byte-identical JSON, the breakdown, the OOM verdict, traces, and schedule bubbles at unit cost.
#include "backends/sim/simulator.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "backends/sim/executor.h"
#include "backends/sim/stack.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "schedules/analysis.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using testing::decode;
using testing::encode;
using testing::run_isolated;

Job tiny_job(const std::vector<std::string>& extra = {}, int64_t gpus = 16, const char* stack = nullptr) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = gpus;
  if (stack != nullptr) request.stack = stack;
  request.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16",
                            "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"};
  request.megatron_flags.insert(request.megatron_flags.end(), extra.begin(), extra.end());
  return load_job(request);
}

// Runs simulate() in a child process (one SimGrid engine per process); returns the JSON dump.
std::string simulate_json(const Job& job, const SimOptions& options = {}) {
  return run_isolated([&] { return result_to_json(simulate(job, options)).dump(); });
}

double breakdown_sum(const nlohmann::json& b) {
  double sum = 0;
  for (const auto& [key, value] : b.items()) sum += value.get<double>();
  return sum;
}

TEST(Simulate, TinyMoeJobGivesTheSameIterationTimeWithAndWithoutAllRanks) {
  const Job job = tiny_job({"--num-experts", "8", "--expert-model-parallel-size", "4", "--moe-router-topk", "2",
                            "--tensor-model-parallel-size", "1", "--moe-token-dispatcher-type", "alltoall"});
  SimOptions all, whole_ep;
  all.all_ranks = true;
  whole_ep.expert_parallel_copies = false;
  const nlohmann::json reduced = nlohmann::json::parse(simulate_json(job));
  const nlohmann::json widened = nlohmann::json::parse(simulate_json(job, whole_ep));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(job, all));
  EXPECT_TRUE(reduced["symmetry_reduced"].get<bool>());
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 2);  // balanced routing: dp 0 only, EP all-to-alls one-sided
  EXPECT_EQ(widened["ranks_played"].get<int64_t>(), 8);  // dp 0..3 cover the EP groups
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_NEAR(reduced["iteration_time_s"].get<double>(), t, 1e-9 * t);
  EXPECT_NEAR(widened["iteration_time_s"].get<double>(), t, 1e-9 * t);
  for (const auto& [key, value] : faithful["breakdown"].items())
    EXPECT_NEAR(reduced["breakdown"][key].get<double>(), value.get<double>(), 1e-9 * t) << key;
  EXPECT_NEAR(reduced["peak_memory_gib"].get<double>(), faithful["peak_memory_gib"].get<double>(), 1e-12);
  EXPECT_GT(faithful["breakdown"]["ep_comm"].get<double>() + faithful["breakdown"]["compute"].get<double>(), 0);
}

// Expert parallelism across nodes under balanced routing: EP 16 over two nodes of 8, the reduced
// run plays 2 of 64 ranks (dp 0 of both stages) with one-sided all-to-alls and agrees with
// playing every rank.
TEST(Simulate, ExpertParallelAcrossNodesGivesTheFaithfulResultFromOneSlice) {
  const Job job = tiny_job({"--num-experts", "16", "--expert-model-parallel-size", "16", "--moe-router-topk", "2",
                            "--tensor-model-parallel-size", "1", "--moe-token-dispatcher-type", "alltoall",
                            "--global-batch-size", "64", "--use-distributed-optimizer"},
                           64);
  SimOptions all;
  all.all_ranks = true;
  const nlohmann::json reduced = nlohmann::json::parse(simulate_json(job));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(job, all));
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 2);
  EXPECT_EQ(faithful["ranks_played"].get<int64_t>(), 64);
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_GT(faithful["breakdown"]["ep_comm"].get<double>(), 0);
  EXPECT_NEAR(reduced["iteration_time_s"].get<double>(), t, 1e-9 * t);
  for (const auto& [key, value] : faithful["breakdown"].items())
    EXPECT_NEAR(reduced["breakdown"][key].get<double>(), value.get<double>(), 1e-9 * t) << key;
}

// DualPipe on an MoE job: its F&B pairs cut at the all-to-alls and merged hide one microbatch's
// all-to-all behind the other's compute, so the iteration and the exposed EP time shrink against
// playing each pair's forward then backward; 1F1B has no pairs and is unchanged; the reduced run
// still agrees with playing every rank.
TEST(Simulate, DualPipePairsHideAllToAllsBehindTheOtherMicrobatch) {
  const std::vector<std::string> moe = {"--num-layers", "8", "--num-experts", "16", "--expert-model-parallel-size", "16",
                                        "--moe-router-topk", "2", "--tensor-model-parallel-size", "1",
                                        "--moe-token-dispatcher-type", "alltoall", "--global-batch-size", "128",
                                        "--pipeline-model-parallel-size", "4"};
  std::vector<std::string> dual = moe, plain = moe;
  dual.insert(dual.end(), {"--pipeline-schedule", "dualpipe"});
  plain.insert(plain.end(), {"--pipeline-schedule", "1f1b"});
  SimOptions serial, all;
  serial.overlap_fused_pairs = false;
  all.all_ranks = true;
  // The mechanism on a stack without MoE overheads (the fitted default adds a fixed time to every
  // forward router, which strict alternation of the pieces can place badly in a job this small).
  const char* stack = "mcore-0.8-h100";
  const nlohmann::json overlapped = nlohmann::json::parse(simulate_json(tiny_job(dual, 64, stack)));
  const nlohmann::json one_by_one = nlohmann::json::parse(simulate_json(tiny_job(dual, 64, stack), serial));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(tiny_job(dual, 64, stack), all));
  const double t = overlapped["iteration_time_s"].get<double>();
  EXPECT_LT(t, 0.99 * one_by_one["iteration_time_s"].get<double>());   // 2.9% here: 3 pairs per rank
  EXPECT_LT(overlapped["breakdown"]["ep_comm"].get<double>(), one_by_one["breakdown"]["ep_comm"].get<double>());
  EXPECT_NEAR(faithful["iteration_time_s"].get<double>(), t, 1e-9 * t);
  bool noted = false;
  for (const auto& note : overlapped["notes"]) noted = noted || note.get<std::string>().find("F&B pairs") != std::string::npos;
  EXPECT_TRUE(noted);
  const nlohmann::json a = nlohmann::json::parse(simulate_json(tiny_job(plain, 64)));
  const nlohmann::json b = nlohmann::json::parse(simulate_json(tiny_job(plain, 64), serial));
  EXPECT_EQ(a["iteration_time_s"].get<double>(), b["iteration_time_s"].get<double>());
}

// Node-limited routing: 16 experts on EP 16 over two nodes, two groups of 8 (one per node), each
// token to one group with top-2: it crosses the network once per node it reaches, half the copies,
// so the exposed EP time drops against ungrouped routing; the reduced run still equals --all-ranks.
TEST(Simulate, NodeLimitedRoutingHalvesCrossNodeAllToAllBytes) {
  const std::vector<std::string> moe = {"--num-experts", "16", "--expert-model-parallel-size", "16", "--moe-router-topk", "2",
                                        "--tensor-model-parallel-size", "1", "--moe-token-dispatcher-type", "alltoall",
                                        "--global-batch-size", "64"};
  std::vector<std::string> grouped = moe;
  grouped.insert(grouped.end(), {"--moe-router-num-groups", "2", "--moe-router-group-topk", "1"});
  SimOptions all;
  all.all_ranks = true;
  const nlohmann::json plain = nlohmann::json::parse(simulate_json(tiny_job(moe, 64)));
  const nlohmann::json limited = nlohmann::json::parse(simulate_json(tiny_job(grouped, 64)));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(tiny_job(grouped, 64), all));
  EXPECT_LT(limited["breakdown"]["ep_comm"].get<double>(), 0.8 * plain["breakdown"]["ep_comm"].get<double>());
  EXPECT_LT(limited["iteration_time_s"].get<double>(), plain["iteration_time_s"].get<double>());
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_NEAR(limited["iteration_time_s"].get<double>(), t, 1e-9 * t);
  bool noted = false;
  for (const auto& note : limited["notes"]) noted = noted || note.get<std::string>().find("node-limited") != std::string::npos;
  EXPECT_TRUE(noted);
}

// The flex dispatcher (DeepEP/HybridEP) sends a token once per remote node holding one of its
// experts: EP 16 over 2 nodes, top-4 of 64 experts: 2 copies per token cross the network with the
// plain all-to-all, 1 - C(32,4)/C(64,4) = 0.943 nodes with flex (share 0.472).
TEST(Simulate, FlexDispatcherSendsATokenOncePerRemoteNode) {
  const std::vector<std::string> moe = {"--num-experts", "64", "--expert-model-parallel-size", "16", "--moe-router-topk", "4",
                                        "--tensor-model-parallel-size", "1", "--global-batch-size", "64"};
  std::vector<std::string> plain = moe, flex = moe;
  plain.insert(plain.end(), {"--moe-token-dispatcher-type", "alltoall"});
  flex.insert(flex.end(), {"--moe-token-dispatcher-type", "flex"});
  SimOptions all;
  all.all_ranks = true;
  const nlohmann::json a2a = nlohmann::json::parse(simulate_json(tiny_job(plain, 64)));
  const nlohmann::json dedup = nlohmann::json::parse(simulate_json(tiny_job(flex, 64)));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(tiny_job(flex, 64), all));
  EXPECT_LT(dedup["breakdown"]["ep_comm"].get<double>(), 0.9 * a2a["breakdown"]["ep_comm"].get<double>());
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_NEAR(dedup["iteration_time_s"].get<double>(), t, 1e-9 * t);
  std::string note;
  for (const auto& n : dedup["notes"])
    if (n.get<std::string>().find("flex dispatcher") != std::string::npos) note = n.get<std::string>();
  EXPECT_NE(note.find("0.472"), std::string::npos) << note;
}

// Megatron-Core's --overlap-moe-expert-parallel-comm: steady-state F/B pairs of the interleaved
// schedule hide one microbatch's all-to-all behind the other's compute: less exposed EP time, a
// shorter iteration, exact against --all-ranks; the conditions Megatron-Core sets are errors.
TEST(Simulate, EpOverlapHidesAllToAllBehindTheOtherMicrobatch) {
  const std::vector<std::string> moe = {"--num-experts", "16", "--expert-model-parallel-size", "16", "--moe-router-topk", "2",
                                        "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
                                        "--moe-token-dispatcher-type", "alltoall", "--global-batch-size", "64"};
  std::vector<std::string> overlapped = moe;
  overlapped.push_back("--overlap-moe-expert-parallel-comm");
  SimOptions all;
  all.all_ranks = true;
  const nlohmann::json plain = nlohmann::json::parse(simulate_json(tiny_job(moe, 16)));
  const nlohmann::json paired = nlohmann::json::parse(simulate_json(tiny_job(overlapped, 16)));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(tiny_job(overlapped, 16), all));
  EXPECT_LT(paired["breakdown"]["ep_comm"].get<double>(), 0.8 * plain["breakdown"]["ep_comm"].get<double>());
  EXPECT_LT(paired["iteration_time_s"].get<double>(), plain["iteration_time_s"].get<double>());
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_NEAR(paired["iteration_time_s"].get<double>(), t, 1e-9 * t);
  std::vector<std::string> pipelined = overlapped;
  pipelined[9] = "2";   // PP 2 without virtual stages
  EXPECT_THROW(tiny_job(pipelined, 16), UserError);
  EXPECT_THROW(tiny_job({"--overlap-moe-expert-parallel-comm"}, 16), UserError);
}

// --recompute-modules: each module replayed in the backward lowers peak memory and costs time
// (and hardware FLOPs where it replays GEMMs), against selective recompute of the core alone.
TEST(Simulate, RecomputeModulesTradeTimeForMemory) {
  const std::vector<std::string> mla_moe = {
      "--multi-latent-attention", "--q-lora-rank", "256", "--kv-lora-rank", "128", "--qk-head-dim", "64",
      "--qk-pos-emb-head-dim", "32", "--v-head-dim", "64", "--num-experts", "8", "--moe-router-topk", "2",
      "--moe-ffn-hidden-size", "1024", "--moe-shared-expert-intermediate-size", "1024", "--expert-model-parallel-size", "2",
      "--sequence-parallel", "--moe-token-dispatcher-type", "alltoall", "--recompute-granularity", "selective"};
  const auto run = [&](const std::vector<std::string>& modules) {
    std::vector<std::string> flags = mla_moe;
    if (!modules.empty()) flags.push_back("--recompute-modules");
    flags.insert(flags.end(), modules.begin(), modules.end());
    return nlohmann::json::parse(simulate_json(tiny_job(flags, 16)));
  };
  const nlohmann::json core = run({});
  for (const std::vector<std::string>& more : {std::vector<std::string>{"core_attn", "layernorm"},
                                               {"core_attn", "mla_up_proj"}, {"core_attn", "moe_act"},
                                               {"core_attn", "shared_experts"}, {"core_attn", "moe"}}) {
    const nlohmann::json r = run(more);
    EXPECT_LT(r["peak_memory_gib"].get<double>(), core["peak_memory_gib"].get<double>()) << more[1];
    EXPECT_GT(r["iteration_time_s"].get<double>(), core["iteration_time_s"].get<double>()) << more[1];
    if (more[1] != "layernorm" && more[1] != "moe_act")
      EXPECT_GT(r["hfu"].get<double>() / r["mfu"].get<double>(), core["hfu"].get<double>() / core["mfu"].get<double>())
          << more[1];
  }
}

TEST(Simulate, TinyJobGivesTheSameIterationTimeWithAndWithoutAllRanks) {
  const Job job = tiny_job();
  SimOptions all;
  all.all_ranks = true;
  const nlohmann::json reduced = nlohmann::json::parse(simulate_json(job));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(job, all));
  EXPECT_TRUE(reduced["symmetry_reduced"].get<bool>());
  EXPECT_FALSE(faithful["symmetry_reduced"].get<bool>());
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 2);   // tp 0 of the replica dp 0 (TP 2, PP 2)
  EXPECT_EQ(faithful["ranks_played"].get<int64_t>(), 16);
  const double t = faithful["iteration_time_s"].get<double>();
  EXPECT_GT(t, 0);
  EXPECT_NEAR(reduced["iteration_time_s"].get<double>(), t, 1e-9 * t);
  EXPECT_NEAR(reduced["peak_memory_gib"].get<double>(), faithful["peak_memory_gib"].get<double>(), 1e-12);
  for (const auto& [key, value] : faithful["breakdown"].items())
    EXPECT_NEAR(reduced["breakdown"][key].get<double>(), value.get<double>(), 1e-9 * t) << key;
}

// Tensor-parallel ranks as copies of tp = 0 (narrow_to_tensor_rank_zero): with TP, CP, PP and a
// distributed optimizer across nodes, the run that plays tp = 0 of one replica (4 of 64 ranks)
// gives the result of the run that plays the whole replica (8 ranks), and both are within 0.1% of
// the faithful run (the one-sided data-parallel collectives of a reduced run: 7e-5 here).
TEST(Simulate, TensorParallelCopiesGiveTheReplicaResult) {
  const Job job = tiny_job({"--tensor-model-parallel-size", "2", "--context-parallel-size", "2", "--sequence-parallel",
                            "--use-distributed-optimizer", "--overlap-grad-reduce", "--global-batch-size", "32"},
                           64);
  SimOptions whole_replica, all;
  whole_replica.tensor_parallel_copies = false;
  all.all_ranks = true;
  const nlohmann::json reduced = nlohmann::json::parse(simulate_json(job));
  const nlohmann::json replica = nlohmann::json::parse(simulate_json(job, whole_replica));
  const nlohmann::json faithful = nlohmann::json::parse(simulate_json(job, all));
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 4);   // cp x pp of tp 0, dp 0
  EXPECT_EQ(replica["ranks_played"].get<int64_t>(), 8);
  EXPECT_EQ(faithful["ranks_played"].get<int64_t>(), 64);
  const double t = replica["iteration_time_s"].get<double>();
  EXPECT_NEAR(reduced["iteration_time_s"].get<double>(), t, 1e-12 * t);
  EXPECT_NEAR(reduced["peak_memory_gib"].get<double>(), replica["peak_memory_gib"].get<double>(), 1e-12);
  for (const auto& [key, value] : replica["breakdown"].items())
    EXPECT_NEAR(reduced["breakdown"][key].get<double>(), value.get<double>(), 1e-12 * t) << key;
  EXPECT_NEAR(faithful["iteration_time_s"].get<double>(), t, 1e-3 * t);
  bool noted = false;
  for (const auto& note : reduced["notes"]) noted = noted || note.get<std::string>().find("tensor-parallel rank 0") != std::string::npos;
  EXPECT_TRUE(noted);
}

// Where tensor-parallel ranks could meet on a shared link (an oversubscribed uplink), every tp
// rank of the replica is played.
TEST(Simulate, TensorParallelRanksArePlayedWhereTheyShareLinks) {
  Job job = tiny_job({}, 64);
  job.cluster.oversubscription = 2;
  const nlohmann::json reduced = nlohmann::json::parse(simulate_json(job));
  EXPECT_EQ(reduced["ranks_played"].get<int64_t>(), 4);   // tp x pp of dp 0
}

TEST(Simulate, JsonIsByteIdenticalForTheSameInput) {
  const Job job = tiny_job({"--sequence-parallel"});
  EXPECT_EQ(simulate_json(job), simulate_json(job));
}

TEST(Simulate, BreakdownSumsToTheIterationTime) {
  for (const auto& flags : std::vector<std::vector<std::string>>{
           {},
           {"--sequence-parallel", "--use-distributed-optimizer", "--overlap-grad-reduce"},
           {"--context-parallel-size", "2", "--tensor-model-parallel-size", "1"}}) {
    const nlohmann::json r = nlohmann::json::parse(simulate_json(tiny_job(flags)));
    const double t = r["iteration_time_s"].get<double>();
    EXPECT_NEAR(breakdown_sum(r["breakdown"]), t, 1e-9 * t) << r["breakdown"].dump();
    EXPECT_GT(r["breakdown"]["compute"].get<double>(), 0);
    EXPECT_GT(r["breakdown"]["pipeline_bubble"].get<double>(), 0);
  }
}

TEST(Simulate, ThroughputFiguresFollowFromTheIterationTime) {
  const Job job = tiny_job();
  const nlohmann::json r = nlohmann::json::parse(simulate_json(job));
  const double t = r["iteration_time_s"].get<double>();
  EXPECT_NEAR(r["tokens_per_s"].get<double>(), 16.0 * 1024 / t, 1e-9 * 16 * 1024 / t);
  EXPECT_GT(r["mfu"].get<double>(), 0);
  EXPECT_LT(r["mfu"].get<double>(), 1);
  EXPECT_GE(r["hfu"].get<double>(), r["mfu"].get<double>());
  EXPECT_NEAR(r["mfu"].get<double>(), r["model_tflops_per_gpu"].get<double>() / 989.5, 1e-9);
}

TEST(Simulate, OutOfMemoryWhenARankExceedsTheGpu) {
  const nlohmann::json fits = nlohmann::json::parse(simulate_json(tiny_job()));
  EXPECT_FALSE(fits["oom"].get<bool>());
  EXPECT_GT(fits["peak_memory_gib"].get<double>(), 0);
  EXPECT_LT(fits["peak_memory_gib"].get<double>(), 80);
  // 16 layers of hidden 16384 on two GPUs: ~52B parameters per GPU at 18 bytes each.
  const Job big = tiny_job({"--num-layers", "16", "--hidden-size", "16384", "--num-attention-heads", "128",
                            "--tensor-model-parallel-size", "1", "--global-batch-size", "2"},
                           2);
  const nlohmann::json r = nlohmann::json::parse(simulate_json(big));
  EXPECT_TRUE(r["oom"].get<bool>());
  EXPECT_GT(r["peak_memory_gib"].get<double>(), 80);
}

TEST(Simulate, WritesAChromeTraceAndAnOpTrace) {
  const std::string trace = std::string(TANDEM_BINARY_DIR) + "/simulate_test_trace.json";
  const std::string ops = std::string(TANDEM_BINARY_DIR) + "/simulate_test_ops.txt";
  SimOptions options;
  options.trace_path = trace;
  options.op_trace_path = ops;
  simulate_json(tiny_job(), options);
  std::ifstream in(trace);
  const nlohmann::json doc = nlohmann::json::parse(in);
  std::set<int64_t> pids;
  std::set<std::pair<int64_t, int64_t>> tracks;
  size_t complete = 0;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] != "X") continue;
    ++complete;
    pids.insert(e["pid"].get<int64_t>());
    tracks.insert({e["pid"].get<int64_t>(), e["tid"].get<int64_t>()});
    EXPECT_GE(e["dur"].get<double>(), 0);
  }
  EXPECT_GT(complete, 100u);
  EXPECT_EQ(pids, (std::set<int64_t>{0, 1, 8, 9}));
  EXPECT_GT(tracks.size(), pids.size());  // compute and communication streams
  std::ifstream op_file(ops);
  std::stringstream text;
  text << op_file.rdbuf();
  EXPECT_NE(text.str().find("# rank 9"), std::string::npos);
}


// Lowered programs of a PP4 job timed at unit cost (F = B = W = 1 per action, spread over the
// action's instructions) with free communication: the executor must reproduce the schedule
// analysis' makespan, i.e. the schedule's bubble.
std::vector<double> lowered_unit_cost_makespan(const Job& job) {
  return decode(run_isolated([&] {
    const ParallelGrid grid = ParallelGrid::from_job(job);
    const Schedule schedule = schedule_for_job(job);
    const ReplicaLayout layout = replica_layout(grid, true);
    std::vector<RankProgram> programs;
    for (int64_t r : layout.played) programs.push_back(lower_rank(job, grid, schedule, r));
    Platform platform(job.cluster, grid.world_size());
    Collectives collectives(platform);
    ExecutorOptions options;
    options.compute_time = unit_cost_time(schedule, programs);
    options.free_communication = true;
    const ExecutionResult run = execute(platform, collectives, grid, programs, layout, options);
    return encode({run.makespan_s, analyze_schedule(schedule, ActionCosts{}).makespan});
  }));
}

class LoweredUnitCostBubble : public ::testing::TestWithParam<std::pair<const char*, int>> {};

TEST_P(LoweredUnitCostBubble, MatchesTheScheduleAnalysis) {
  const auto [name, chunks] = GetParam();
  std::vector<std::string> flags = {"--num-layers", "8", "--tensor-model-parallel-size", "1",
                                    "--pipeline-model-parallel-size", "4", "--global-batch-size", "8"};
  if (chunks > 1) flags.insert(flags.end(), {"--num-layers-per-virtual-pipeline-stage", "1"});
  Job job = tiny_job(flags, 4);
  job.parallel.pipeline_schedule = name;
  if (chunks > 1) job.parallel.virtual_pipeline_model_parallel_size = chunks;
  const std::vector<double> r = lowered_unit_cost_makespan(job);
  if (std::string(name).rfind("dualpipe", 0) == 0) {
    // The lowering plays a fused F&B pair as F then B, each sending its output when done; the
    // schedule analysis (like DualPipe) sends both after the pair. Earlier sends can only help.
    EXPECT_LE(r[0], r[1] * (1 + 1e-9)) << name;
    return;
  }
  EXPECT_NEAR(r[0], r[1], 1e-9 * r[1]) << name;
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, LoweredUnitCostBubble,
                         ::testing::Values(std::pair<const char*, int>{"gpipe", 1}, std::pair<const char*, int>{"1f1b", 1},
                                           std::pair<const char*, int>{"interleaved", 2},
                                           std::pair<const char*, int>{"zb-h1", 1}, std::pair<const char*, int>{"zb-h2", 1},
                                           std::pair<const char*, int>{"zb-v", 2},
                                           std::pair<const char*, int>{"dualpipe", 1},
                                           std::pair<const char*, int>{"dualpipev", 2}));


// simulate() lowers one program per symmetry class and renames its peers for the other ranks:
// that must give every rank exactly its own program.
TEST(Simulate, ClassProgramsWithRenamedPeersAreEveryRanksOwnProgram) {
  for (const auto& flags : std::vector<std::vector<std::string>>{
           {}, {"--context-parallel-size", "2", "--tensor-model-parallel-size", "1"}}) {
    const Job job = tiny_job(flags);
    const ParallelGrid grid = ParallelGrid::from_job(job);
    const Schedule schedule = schedule_for_job(job);
    const std::vector<int64_t> representatives = class_representatives(job, grid);
    for (int64_t rank = 0; rank < grid.world_size(); ++rank) {
      const RankProgram own = lower_rank(job, grid, schedule, rank);
      const RankProgram shared =
          lower_rank(job, grid, schedule, representatives[static_cast<size_t>(symmetry_class(job, grid, rank))]);
      ASSERT_TRUE(equal_up_to_peers(own, shared)) << "rank " << rank;
      for (size_t i = 0; i < own.instructions.size(); ++i) {
        const int64_t peer = shared.instructions[i].peer;
        if (peer < 0) continue;
        EXPECT_EQ(rename_peer(grid, shared.rank, rank, peer), own.instructions[i].peer) << "rank " << rank << " " << i;
      }
    }
  }
}


// Windows of local work are an optimisation: playing every instruction on its own must give the
// same times, breakdown included.
std::vector<double> play_lowered(const Job& job, bool merge) {
  return decode(run_isolated([&] {
    const ParallelGrid grid = ParallelGrid::from_job(job);
    const Schedule schedule = schedule_for_job(job);
    const ReplicaLayout layout = replica_layout(grid, false);
    std::vector<RankProgram> programs;
    for (int64_t r : layout.played) programs.push_back(lower_rank(job, grid, schedule, r));
    Platform platform(job.cluster, grid.world_size());
    Collectives collectives(platform);
    const ComputeModel model = ComputeModel::for_job(job);
    ExecutorOptions options;
    options.compute_time = [&model](const RankProgram&, const Instruction& x) { return model.time(x); };
    options.merge_local_work = merge;
    const ExecutionResult run = execute(platform, collectives, grid, programs, layout, options);
    std::vector<double> out = {run.makespan_s};
    for (const RankOutcome& o : run.ranks) {
      const Breakdown& b = o.breakdown;
      out.insert(out.end(), {o.finish_s, o.compute_s, b.compute, b.tp_comm, b.cp_comm, b.ep_comm, b.pp_comm,
                             b.dp_comm, b.pipeline_bubble, b.optimizer});
    }
    return encode(out);
  }));
}

TEST(Simulate, WindowsOfLocalWorkChangeNoTime) {
  for (const auto& flags : std::vector<std::vector<std::string>>{
           {},
           {"--sequence-parallel", "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather"},
           {"--num-layers-per-virtual-pipeline-stage", "1", "--recompute-granularity", "full", "--recompute-method",
            "uniform", "--recompute-num-layers", "1"},
           {"--context-parallel-size", "2", "--tensor-model-parallel-size", "1", "--sequence-parallel"}}) {
    const Job job = tiny_job(flags);
    const std::vector<double> merged = play_lowered(job, true);
    const std::vector<double> single = play_lowered(job, false);
    ASSERT_EQ(merged.size(), single.size());
    // Equal up to SimGrid's event-date resolution (its precision/timing, 1e-9 s by default): the
    // two modes hand SimGrid different sets of events, which it may round to the nanosecond.
    const double tolerance = 2e-9 + 1e-12 * merged[0];
    for (size_t k = 0; k < merged.size(); ++k) EXPECT_NEAR(merged[k], single[k], tolerance) << k;
  }
}


// DualPipe at PP 8 receives some messages in another order than they are sent (schedule
// validation warns "message order"): played with buffered messages, it completes instead of
// deadlocking on rendezvous sends, and says so.
TEST(Simulate, ScheduleThatReceivesOutOfOrderPlaysWithBufferedMessages) {
  const Job job = tiny_job({"--pipeline-model-parallel-size", "8", "--pipeline-schedule", "dualpipe", "--num-layers",
                            "16", "--global-batch-size", "16"});
  const nlohmann::json r = nlohmann::json::parse(simulate_json(job));
  EXPECT_GT(r["iteration_time_s"].get<double>(), 0);
  bool noted = false;
  for (const auto& n : r["notes"]) noted |= n.get<std::string>().find("buffered") != std::string::npos;
  EXPECT_TRUE(noted);
  const nlohmann::json in_order = nlohmann::json::parse(simulate_json(tiny_job()));
  for (const auto& n : in_order["notes"]) EXPECT_EQ(n.get<std::string>().find("buffered"), std::string::npos);
}

TEST(Simulate, InSubprocessCanRunSeveralJobsInOneProcess) {
  const Job small = tiny_job();
  const Job deeper = tiny_job({"--num-layers", "8"});
  const SimResult a = simulate_in_subprocess(small);
  const SimResult b = simulate_in_subprocess(deeper);
  EXPECT_GT(b.iteration_time_s, a.iteration_time_s);
  EXPECT_GT(a.counts.instructions, 0);
  // Same JSON as simulate() in its own process; the JSON round trip is exact.
  EXPECT_EQ(result_to_json(a).dump(), simulate_json(small));
  EXPECT_EQ(result_to_json(result_from_json(result_to_json(b))).dump(), result_to_json(b).dump());
}

TEST(Simulate, InSubprocessRethrowsUserErrors) {
  Job job = tiny_job();
  SimOptions options;
  options.trace_path = "/nonexistent-directory/trace.json";
  EXPECT_THROW(simulate_in_subprocess(job, options), UserError);
}

}  // namespace
}  // namespace tandem::sim

namespace tandem::sim {
namespace {

// The critical rank's busy time re-timed with other stacks (what `tandem fit` builds its
// surrogates from): the job's own stack gives its busy time back, slower GEMMs give more, and a
// full simulation with the slower stack gives about the same critical-rank busy time.
TEST(Simulate, SensitivityStacksRetimeTheCriticalRanksCompute) {
  const Job job = tiny_job();
  const Stack own = stack_for_job(job);
  Stack slow = own;
  set_parameter(slow, "gemm.fraction_bf16", find_parameter(own, "gemm.fraction_bf16")->value / 2);
  SimOptions options;
  options.sensitivity_stacks = {std::make_shared<const Stack>(own), std::make_shared<const Stack>(slow)};
  const SimResult r = simulate_in_subprocess(job, options);
  ASSERT_EQ(r.sensitivity_busy_s.size(), 2u);
  const double busy = critical_busy_s(r);
  ASSERT_GT(busy, 0);
  EXPECT_NEAR(r.sensitivity_busy_s[0] / busy, 1.0, 1e-12);
  EXPECT_GT(r.sensitivity_busy_s[1], 1.02 * busy);   // tiny GEMMs: launches and HBM weigh too
  SimOptions full;
  full.stack = std::make_shared<const Stack>(slow);
  const SimResult s = simulate_in_subprocess(job, full);
  EXPECT_NEAR(r.sensitivity_busy_s[1] / critical_busy_s(s), 1.0, 0.02);
  EXPECT_TRUE(simulate_in_subprocess(job).sensitivity_busy_s.empty());   // only when asked
  EXPECT_FALSE(result_to_json(simulate_in_subprocess(job)).contains("sensitivity_busy_s"));
}

}  // namespace
}  // namespace tandem::sim
