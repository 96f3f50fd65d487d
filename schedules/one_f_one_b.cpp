// 1F1B, a.k.a. PipeDream-Flush (Narayanan et al., "Memory-Efficient Pipeline-Parallel DNN
// Training", 2021; Megatron-LM's forward_backward_pipelining_without_interleaving).
// Rank r runs min(p-r-1, m) warm-up forwards, then alternates one forward and one (full)
// backward, then drains the remaining backwards. Peak activations on rank r: min(p-r, m).
// Unit costs (F=1, full B=2): makespan 3(m+p-1), the same as GPipe, with p instead of m
// activations in flight.
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule 1f1b --pp 4 --microbatches 8`):
//   F forward, B full backward, number = microbatch; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 .  .  .  .  .  .  B0 -- F4 B1 -- F5 B2 -- F6 B3 -- F7 B4 -- .  B5 -- .  B6 -- .  B7 --
//   rank 1 | .  F0 F1 F2 .  .  .  .  B0 -- F3 B1 -- F4 B2 -- F5 B3 -- F6 B4 -- F7 B5 -- .  B6 -- .  B7 -- .  .
//   rank 2 | .  .  F0 F1 .  .  B0 -- F2 B1 -- F3 B2 -- F4 B3 -- F5 B4 -- F6 B5 -- F7 B6 -- .  B7 -- .  .  .  .
//   rank 3 | .  .  .  F0 B0 -- F1 B1 -- F2 B2 -- F3 B3 -- F4 B4 -- F5 B5 -- F6 B6 -- F7 B7 -- .  .  .  .  .  .
//   makespan 33, bubble fraction 0.2727
#include <algorithm>

#include "schedules/schedule_util.h"

namespace tandem {
namespace {

Schedule build_1f1b(const ScheduleParams& p) {
  ComputeOrder order(p.pp);
  const int m = p.microbatches;
  for (int r = 0; r < p.pp; ++r) {
    const int warmup = std::min(p.pp - r - 1, m);
    auto& out = order[r];
    for (int mb = 0; mb < warmup; ++mb) out.push_back(sched::fwd(mb));
    for (int k = 0; k < m - warmup; ++k) {  // steady state: F(k + warmup), B(k)
      out.push_back(sched::fwd(k + warmup));
      out.push_back(sched::bwd(k));
    }
    for (int mb = m - warmup; mb < m; ++mb) out.push_back(sched::bwd(mb));
  }
  return make_schedule("1f1b", linear_layout(p.pp, m), order);
}

void check_1f1b(const ScheduleParams& p) { sched::require_no_group_size(p, "1f1b"); }

}  // namespace

ScheduleInfo one_f_one_b_schedule_info() {
  return ScheduleInfo{"1f1b", "one forward, one backward (PipeDream-Flush, Megatron default)",
                      "Narayanan et al., PipeDream-2BW/Flush (ICML 2021); Megatron-LM",
                      ChunkRule{1, 1, 1}, check_1f1b, build_1f1b};
}

}  // namespace tandem
