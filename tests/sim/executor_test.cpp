// The executor on hand-built programs: schedule bubbles at unit cost, symmetry reduction against
// the faithful mode, determinism, a WAN link on the pipeline boundary, and the time breakdown.
#include "backends/sim/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "schedules/analysis.h"
#include "schedules/registry.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using testing::decode;
using testing::encode;
using testing::h100_cluster;
using testing::run_isolated;

double breakdown_sum(const Breakdown& b) {
  return b.compute + b.tp_comm + b.cp_comm + b.ep_comm + b.pp_comm + b.dp_comm + b.pipeline_bubble + b.optimizer;
}

std::vector<double> breakdown_values(const Breakdown& b) {
  return {b.compute, b.tp_comm, b.cp_comm, b.ep_comm, b.pp_comm, b.dp_comm, b.pipeline_bubble, b.optimizer};
}

// Compute instructions carry their duration (s) in `flops` in these tests.
double flops_as_seconds(const RankProgram&, const Instruction& x) { return x.flops; }

int32_t push(RankProgram& p, Instruction x) {
  p.instructions.push_back(std::move(x));
  return static_cast<int32_t>(p.instructions.size() - 1);
}

Instruction compute(double seconds, std::vector<int32_t> deps, Phase phase = Phase::Forward) {
  Instruction x;
  x.kind = OpKind::Gemm;
  x.stream = StreamKind::Compute;
  x.phase = phase;
  x.flops = seconds;
  x.deps = std::move(deps);
  return x;
}

Instruction message(OpKind kind, int64_t peer, int64_t tag, double bytes, std::vector<int32_t> deps) {
  Instruction x;
  x.kind = kind;
  x.stream = kind == OpKind::Send ? StreamKind::PpSend : StreamKind::PpRecv;
  x.group = ParallelGroup::Pp;
  x.peer = peer;
  x.tag = tag;
  x.bytes = bytes;
  x.deps = std::move(deps);
  return x;
}

Instruction collective(OpKind kind, ParallelGroup group, StreamKind stream, double bytes, std::vector<int32_t> deps) {
  Instruction x;
  x.kind = kind;
  x.stream = stream;
  x.group = group;
  x.bytes = bytes;
  x.deps = std::move(deps);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Schedules at unit cost

// One compute instruction per compute action (its unit cost as duration), a Send or Recv per
// message; a compute waits for the receives listed before it, a send for the compute before it.
std::vector<RankProgram> schedule_programs(const Schedule& s, const ActionCosts& costs) {
  const int64_t m = s.num_microbatches();
  auto tag = [m](bool gradient, int microbatch, int sending_stage) {
    return (static_cast<int64_t>(sending_stage) * m + microbatch) * 2 + (gradient ? 1 : 0);
  };
  std::vector<RankProgram> programs(static_cast<size_t>(s.num_ranks()));
  for (int r = 0; r < s.num_ranks(); ++r) {
    RankProgram& p = programs[static_cast<size_t>(r)];
    p.rank = r;
    p.pipeline_rank = r;
    std::vector<int32_t> recvs;
    int32_t last = -1;
    for (const Action& a : s.actions[static_cast<size_t>(r)]) {
      if (is_compute(a.kind)) {
        Instruction x = compute(action_cost(s, a, costs), recvs);
        x.microbatch = a.microbatch;
        x.chunk = static_cast<int16_t>(a.chunk);
        last = push(p, std::move(x));
        recvs.clear();
      } else if (is_send(a.kind)) {
        const bool gradient = a.kind == ActionKind::SendGradient;
        push(p, message(OpKind::Send, a.peer, tag(gradient, a.microbatch, a.stage), 1e6, {last}));
      } else {
        const bool gradient = a.kind == ActionKind::RecvGradient;
        const int sender = gradient ? a.stage + 1 : a.stage - 1;
        recvs.push_back(push(p, message(OpKind::Recv, a.peer, tag(gradient, a.microbatch, sender), 1e6, {})));
      }
    }
  }
  return programs;
}

ParallelGrid pipeline_grid(int pp) {
  GridSizes sizes;
  sizes.world = pp;
  sizes.pp = pp;
  return ParallelGrid::create(sizes);
}

double unit_cost_makespan(const Schedule& s) {
  return decode(run_isolated([&] {
    const ActionCosts costs;
    const std::vector<RankProgram> programs = schedule_programs(s, costs);
    const ParallelGrid grid = pipeline_grid(s.num_ranks());
    Platform platform(h100_cluster(), s.num_ranks());
    Collectives coll(platform);
    ExecutorOptions options;
    options.compute_time = flops_as_seconds;
    options.free_communication = true;
    const ExecutionResult r = execute(platform, coll, grid, programs, replica_layout(grid, true), options);
    double worst = 0;  // |breakdown sum - finish| over ranks
    for (const RankOutcome& o : r.ranks) worst = std::max(worst, std::abs(breakdown_sum(o.breakdown) - o.finish_s));
    return encode({r.makespan_s, worst});
  }))[0];
}

class UnitCostBubble : public ::testing::TestWithParam<const char*> {};

TEST_P(UnitCostBubble, MatchesTheScheduleAnalysis) {
  ScheduleParams params;
  params.pp = 4;
  params.microbatches = 8;
  const Schedule s = build_schedule(GetParam(), params);
  const double expected = analyze_schedule(s, ActionCosts{}).makespan;
  EXPECT_NEAR(unit_cost_makespan(s), expected, 1e-9 * expected) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(AllSchedules, UnitCostBubble,
                         ::testing::Values("gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe",
                                           "dualpipev"));

TEST(UnitCostBubble, EveryRegisteredScheduleIsCovered) {
  for (const std::string& name : schedule_names()) {
    ScheduleParams params;
    params.pp = 4;
    params.microbatches = 8;
    const Schedule s = build_schedule(name, params);
    const double expected = analyze_schedule(s, ActionCosts{}).makespan;
    EXPECT_NEAR(unit_cost_makespan(s), expected, 1e-9 * expected) << name;
  }
}


// ---------------------------------------------------------------------------------------------
// A toy training step on a TP x PP x DP grid

struct ToyStep {
  int microbatches = 2;
  double forward_s = 2e-3;        // per microbatch, split in two halves around a TP all-reduce
  double backward_s = 4e-3;
  double tp_bytes = 8e6;          // TP all-reduce per half
  double activation_bytes = 32e6; // pipeline message
  double gradient_bytes = 256e6;  // DP all-reduce
  double optimizer_s = 1e-3;
};

// GPipe order: all forwards, then all backwards; then the DP all-reduce and the optimizer step.
RankProgram toy_program(const ParallelGrid& grid, int64_t rank, const ToyStep& t) {
  RankProgram p;
  p.rank = rank;
  const DenseCoord c = grid.dense_coord(rank);
  p.pipeline_rank = c.pp;
  const int64_t prev = c.pp > 0 ? grid.dense_rank({c.tp, c.cp, c.dp, c.pp - 1}) : -1;
  const int64_t next = c.pp + 1 < grid.pp_size() ? grid.dense_rank({c.tp, c.cp, c.dp, c.pp + 1}) : -1;
  auto half = [&](double seconds, std::vector<int32_t> deps, Phase phase) {
    const int32_t a = push(p, compute(seconds / 2, std::move(deps), phase));
    const int32_t ar = push(p, collective(OpKind::AllReduce, ParallelGroup::Tp, StreamKind::TpComm, t.tp_bytes, {a}));
    return push(p, compute(seconds / 2, {ar}, phase));
  };
  for (int mb = 0; mb < t.microbatches; ++mb) {
    std::vector<int32_t> deps;
    if (prev >= 0) deps.push_back(push(p, message(OpKind::Recv, prev, 2 * mb, t.activation_bytes, {})));
    const int32_t f = half(t.forward_s, deps, Phase::Forward);
    if (next >= 0) push(p, message(OpKind::Send, next, 2 * mb, t.activation_bytes, {f}));
  }
  int32_t last = -1;
  for (int mb = 0; mb < t.microbatches; ++mb) {
    std::vector<int32_t> deps;
    if (next >= 0) deps.push_back(push(p, message(OpKind::Recv, next, 2 * mb + 1, t.activation_bytes, {})));
    last = half(t.backward_s, deps, Phase::Backward);
    if (prev >= 0) push(p, message(OpKind::Send, prev, 2 * mb + 1, t.activation_bytes, {last}));
  }
  Instruction dp = collective(OpKind::AllReduce, ParallelGroup::Dp, StreamKind::DpComm, t.gradient_bytes, {last});
  dp.phase = Phase::GradSync;
  const int32_t sync = push(p, std::move(dp));
  push(p, compute(t.optimizer_s, {sync}, Phase::Optimizer));
  return p;
}

ParallelGrid toy_grid(int64_t tp, int64_t pp, int64_t dp) {
  GridSizes sizes;
  sizes.world = tp * pp * dp;
  sizes.tp = tp;
  sizes.pp = pp;
  return ParallelGrid::create(sizes);
}

// Plays the toy step; returns per played rank: rank, finish, breakdown (8 values); then makespan,
// ghost flows.
std::vector<double> play_toy(const ClusterSpec& cluster, const ParallelGrid& grid, bool all_ranks,
                             GhostTraffic ghosts = GhostTraffic::Shared, const ToyStep& step = {}) {
  return decode(run_isolated([&] {
    const ReplicaLayout layout = replica_layout(grid, all_ranks);
    std::vector<RankProgram> programs;
    for (int64_t r : layout.played) programs.push_back(toy_program(grid, r, step));
    Platform platform(cluster, grid.world_size());
    Collectives coll(platform);
    ExecutorOptions options;
    options.compute_time = flops_as_seconds;
    options.ghosts = ghosts;
    const ExecutionResult result = execute(platform, coll, grid, programs, layout, options);
    std::vector<double> out;
    for (const RankOutcome& o : result.ranks) {
      out.push_back(static_cast<double>(o.rank));
      out.push_back(o.finish_s);
      for (double v : breakdown_values(o.breakdown)) out.push_back(v);
    }
    out.push_back(result.makespan_s);
    out.push_back(static_cast<double>(result.stats.ghost_flows));
    return encode(out);
  }));
}

constexpr size_t kPerRank = 10;

// Two GPUs per node, two nodes per leaf: TP inside a node, DP rings and pipeline messages across
// nodes and leaves.
ClusterSpec small_nodes(double oversubscription) {
  ClusterSpec c = h100_cluster();
  c.gpus_per_node = 2;
  c.nics_per_node = 2;
  c.nodes_per_leaf = 2;
  c.oversubscription = oversubscription;
  return c;
}

// Finish and breakdown of `rank` in a play_toy result.
std::vector<double> rank_row(const std::vector<double>& played, int64_t rank) {
  for (size_t i = 0; i + kPerRank < played.size(); i += kPerRank)
    if (static_cast<int64_t>(played[i]) == rank) return {played.begin() + static_cast<long>(i) + 1,
                                                         played.begin() + static_cast<long>(i + kPerRank)};
  return {};
}

TEST(SymmetryReduction, TinyJobGivesTheSameTimesAsPlayingEveryRank) {
  const ParallelGrid grid = toy_grid(2, 2, 4);  // 16 GPUs
  const ClusterSpec cluster = small_nodes(1.0);
  const std::vector<double> reduced = play_toy(cluster, grid, false);
  const std::vector<double> all = play_toy(cluster, grid, true);
  ASSERT_EQ(reduced.size(), 4 * kPerRank + 2);  // dp = 0: ranks 0, 1, 8, 9
  ASSERT_EQ(all.size(), 16 * kPerRank + 2);
  const double makespan = all[all.size() - 2];
  EXPECT_NEAR(reduced[reduced.size() - 2], makespan, 1e-9 * makespan);
  for (int64_t rank : {0, 1, 8, 9}) {
    const std::vector<double> a = rank_row(reduced, rank);
    const std::vector<double> b = rank_row(all, rank);
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(a[k], b[k], 1e-9 * makespan) << "rank " << rank << " field " << k;
  }
  // Replicas are exact images: every rank of the faithful run finishes with its dp = 0 image.
  for (int64_t rank = 0; rank < 16; ++rank) {
    const DenseCoord c = grid.dense_coord(rank);
    EXPECT_NEAR(rank_row(all, rank)[0], rank_row(all, grid.dense_rank({c.tp, c.cp, 0, c.pp}))[0], 1e-9 * makespan);
  }
}

TEST(SymmetryReduction, GhostFlowsReproduceContentionOnAnOversubscribedFabric) {
  const ParallelGrid grid = toy_grid(2, 2, 4);
  const ClusterSpec cluster = small_nodes(4.0);
  const std::vector<double> none = play_toy(cluster, grid, false, GhostTraffic::None);
  const std::vector<double> shared = play_toy(cluster, grid, false, GhostTraffic::Shared);
  const std::vector<double> every = play_toy(cluster, grid, false, GhostTraffic::All);
  const std::vector<double> all = play_toy(cluster, grid, true);
  const double t_none = none[none.size() - 2];
  const double t_shared = shared[shared.size() - 2];
  const double t_every = every[every.size() - 2];
  const double t_all = all[all.size() - 2];
  EXPECT_GT(shared.back(), 0);           // ghosts were started
  EXPECT_GT(every.back(), shared.back());
  EXPECT_GT(t_all, t_none * 1.05);       // without ghosts the uplinks look idle
  EXPECT_NEAR(t_shared, t_all, 0.02 * t_all);
  EXPECT_NEAR(t_every, t_shared, 1e-9 * t_shared);
}

TEST(Determinism, SameProgramsGiveBitIdenticalResults) {
  const ParallelGrid grid = toy_grid(2, 2, 4);
  const std::vector<double> first = play_toy(small_nodes(3.0), grid, false);
  const std::vector<double> second = play_toy(small_nodes(3.0), grid, false);
  EXPECT_EQ(encode(first), encode(second));
}

TEST(Breakdown, SumsToEachRanksFinishTime) {
  const ParallelGrid grid = toy_grid(2, 2, 4);
  const std::vector<double> played = play_toy(small_nodes(1.0), grid, true);
  for (size_t i = 0; i + kPerRank < played.size(); i += kPerRank) {
    double sum = 0;
    for (size_t k = 2; k < kPerRank; ++k) sum += played[i + k];
    EXPECT_NEAR(sum, played[i + 1], 1e-12) << "rank " << played[i];
  }
}

// ---------------------------------------------------------------------------------------------
// WAN on the pipeline boundary

// Two datacenters of one node each: pipeline stage 0 on GPUs 0-7, stage 1 on GPUs 8-15, eight
// data-parallel replicas whose pipeline messages all cross the 100 Gb/s, 10 ms WAN link.
ClusterSpec two_datacenters() {
  ClusterSpec c = h100_cluster();
  c.datacenters = 2;
  c.wan_bandwidth = 12.5e9;  // bytes/s
  c.wan_latency = 10e-3;     // s
  return c;
}

TEST(Wan, PipelineBoundaryAcrossDatacentersCostsWhatTheLinkImplies) {
  const ParallelGrid grid = toy_grid(1, 2, 8);
  ToyStep step;
  step.microbatches = 1;
  step.forward_s = 10e-3;
  step.backward_s = 10e-3;
  step.activation_bytes = 64e6;
  step.gradient_bytes = 0;
  step.optimizer_s = 0;
  // Stage 0 forward (c), activation over the WAN (T), stage 1 forward and backward (2c), gradient
  // back (T), stage 0 backward (c): 4c + 2T. T: WAN latency + NIC-to-NIC + two uplinks, then the
  // eight replicas' messages share the WAN: 8 x 64 MB at 12.5 GB/s.
  const double c = 10e-3;
  const double wan_t = 10e-3 + 3e-6 + 2 * 0.5e-6 + 8 * 64e6 / 12.5e9;
  const double one_dc_t = 3e-6 + 64e6 / 50e9;  // same leaf: NIC latency, NIC bandwidth
  for (bool all_ranks : {false, true}) {
    const std::vector<double> wan = play_toy(two_datacenters(), grid, all_ranks, GhostTraffic::Shared, step);
    const std::vector<double> local = play_toy(h100_cluster(), grid, all_ranks, GhostTraffic::Shared, step);
    const double t_wan = wan[wan.size() - 2];
    const double t_local = local[local.size() - 2];
    EXPECT_NEAR(t_wan, 4 * c + 2 * wan_t, 1e-3 * t_wan) << (all_ranks ? "all ranks" : "reduced");
    EXPECT_NEAR(t_local, 4 * c + 2 * one_dc_t, 1e-3 * t_local) << (all_ranks ? "all ranks" : "reduced");
    EXPECT_NEAR(t_wan - t_local, 2 * (wan_t - one_dc_t), 2e-3 * (t_wan - t_local));
    // Stage 0's breakdown: compute 2c, the gradient's transfer T as pipeline communication, the
    // rest (stage 1's work and the activation's transfer) as bubble.
    const std::vector<double> stage0 = rank_row(wan, 0);
    EXPECT_NEAR(stage0[1], 2 * c, 1e-9);
    EXPECT_NEAR(stage0[5], wan_t, 1e-3 * wan_t);
    EXPECT_NEAR(stage0[7], 2 * c + wan_t, 1e-3 * wan_t);
  }
}


// A receive that no rank sends: the simulation stops with a report instead of hanging.
TEST(Deadlock, UnmatchedReceiveIsReported) {
  const ParallelGrid grid = pipeline_grid(2);
  std::vector<RankProgram> programs(2);
  for (int r = 0; r < 2; ++r) programs[static_cast<size_t>(r)].rank = r;
  push(programs[0], message(OpKind::Recv, 1, 7, 1e6, {}));
  push(programs[0], compute(1e-3, {0}));
  push(programs[1], compute(1e-3, {}));
  EXPECT_THROW(run_isolated([&] {
                 Platform platform(h100_cluster(), 2);
                 Collectives coll(platform);
                 ExecutorOptions options;
                 options.compute_time = flops_as_seconds;
                 execute(platform, coll, grid, programs, replica_layout(grid, true), options);
                 return std::string("finished");
               }),
               std::runtime_error);
}

}  // namespace
}  // namespace tandem::sim

namespace tandem::sim {
namespace {

// ---------------------------------------------------------------------------------------------
// SM contention: compute that overlaps a collective across the network runs slower

// Per rank: A (1 ms), then a DP all-reduce of `bytes` beside B (10 ms); then C (1 ms) after both.
// Returns [compute seconds of rank 0, makespan] for the given slowdown factor.
std::vector<double> play_overlap(const ClusterSpec& cluster, double bytes, double slowdown) {
  const ParallelGrid grid = toy_grid(1, 1, 2);
  return decode(run_isolated([&] {
    const ReplicaLayout layout = replica_layout(grid, true);
    std::vector<RankProgram> programs;
    for (int64_t r : layout.played) {
      RankProgram p;
      p.rank = r;
      const int32_t a = push(p, compute(1e-3, {}));
      const int32_t ar = push(p, collective(OpKind::AllReduce, ParallelGroup::Dp, StreamKind::DpComm, bytes, {a}));
      const int32_t b = push(p, compute(10e-3, {a}));
      push(p, compute(1e-3, {b, ar}));
      programs.push_back(std::move(p));
    }
    Platform platform(cluster, grid.world_size());
    Collectives coll(platform);
    ExecutorOptions options;
    options.compute_time = flops_as_seconds;
    options.comm_compute_slowdown = slowdown;
    const ExecutionResult result = execute(platform, coll, grid, programs, layout, options);
    return encode({result.ranks[0].breakdown.compute, result.makespan_s});
  }));
}

TEST(SmContention, ComputeOverlappingANetworkCollectiveRunsSlower) {
  ClusterSpec one_per_node = h100_cluster();   // the DP pair crosses the network
  one_per_node.gpus_per_node = 1;
  one_per_node.nics_per_node = 1;
  const double bytes = 1e9;                    // ~20 ms on a 400 Gb/s NIC: outlasts B
  const std::vector<double> plain = play_overlap(one_per_node, bytes, 1.0);
  const std::vector<double> slowed = play_overlap(one_per_node, bytes, 1.25);
  EXPECT_NEAR(plain[0], 12e-3, 1e-9);
  EXPECT_NEAR(slowed[0], 1e-3 + 1.25 * 10e-3 + 1e-3, 1e-9);   // only B overlaps the all-reduce
  // The all-reduce outlasts B either way, so the iteration ends with it, then C.
  EXPECT_NEAR(slowed[1], plain[1], 1e-9);

  // Inside one node the collective is costed analytically on NVLink and takes no SMs here.
  ClusterSpec two_per_node = h100_cluster();
  two_per_node.gpus_per_node = 2;
  const std::vector<double> local = play_overlap(two_per_node, bytes, 1.25);
  EXPECT_NEAR(local[0], 12e-3, 1e-9);
}

}  // namespace
}  // namespace tandem::sim
