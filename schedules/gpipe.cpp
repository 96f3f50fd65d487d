// GPipe (Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
// Parallelism", 2019): every rank runs the forwards of all microbatches, then all backwards
// (full backward, no weight-gradient split). Peak activations: m microbatches on every rank.
// Unit costs (F=1, full B=2): makespan 3(m+p-1).
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule gpipe --pp 4 --microbatches 8`):
//   F forward, B full backward, number = microbatch; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 F4 F5 F6 F7 .  .  .  .  .  .  .  .  .  B0 -- B1 -- B2 -- B3 -- B4 -- B5 -- B6 -- B7 --
//   rank 1 | .  F0 F1 F2 F3 F4 F5 F6 F7 .  .  .  .  .  .  B0 -- B1 -- B2 -- B3 -- B4 -- B5 -- B6 -- B7 -- .  .
//   rank 2 | .  .  F0 F1 F2 F3 F4 F5 F6 F7 .  .  .  B0 -- B1 -- B2 -- B3 -- B4 -- B5 -- B6 -- B7 -- .  .  .  .
//   rank 3 | .  .  .  F0 F1 F2 F3 F4 F5 F6 F7 B0 -- B1 -- B2 -- B3 -- B4 -- B5 -- B6 -- B7 -- .  .  .  .  .  .
//   makespan 33, bubble fraction 0.2727
#include "schedules/schedule_util.h"

namespace tandem {
namespace {

Schedule build_gpipe(const ScheduleParams& p) {
  ComputeOrder order(p.pp);
  for (int r = 0; r < p.pp; ++r) {
    for (int mb = 0; mb < p.microbatches; ++mb) order[r].push_back(sched::fwd(mb));
    for (int mb = 0; mb < p.microbatches; ++mb) order[r].push_back(sched::bwd(mb));
  }
  return make_schedule("gpipe", linear_layout(p.pp, p.microbatches), order);
}

void check_gpipe(const ScheduleParams& p) { sched::require_no_group_size(p, "gpipe"); }

}  // namespace

ScheduleInfo gpipe_schedule_info() {
  return ScheduleInfo{"gpipe", "all forwards, then all backwards",
                      "Huang et al., GPipe (NeurIPS 2019)", ChunkRule{1, 1, 1}, check_gpipe,
                      build_gpipe};
}

}  // namespace tandem
