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

Instruction compute(double seconds, const char* label, std::vector<int32_t> deps, Phase phase = Phase::Forward) {
  Instruction x;
  x.kind = OpKind::Gemm;
  x.stream = StreamKind::Compute;
  x.phase = phase;
  x.flops = seconds;
  x.label = label;
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
  x.label = kind == OpKind::Send ? "send" : "recv";
  x.deps = std::move(deps);
  return x;
}

Instruction collective(OpKind kind, ParallelGroup group, StreamKind stream, double bytes, std::vector<int32_t> deps) {
  Instruction x;
  x.kind = kind;
  x.stream = stream;
  x.group = group;
  x.bytes = bytes;
  x.label = "collective";
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
        Instruction x = compute(action_cost(s, a, costs), short_code(a.kind) == 'F' ? "F" : "B", recvs);
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

}  // namespace
}  // namespace tandem::sim
