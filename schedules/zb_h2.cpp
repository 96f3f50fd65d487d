// ZB-H2 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 2.2): the zero-bubble
// schedule that trades memory for a parallelogram-shaped timeline. Rank r runs 2(p-r)-1 warm-up
// forwards, filling the time until its first B arrives, and delays its W passes by 2r
// microbatches, so that the tail holds only W passes; every rank holds at most 2p-1 microbatches.
// Unit costs F=B=W=1: each rank r is busy without a gap from r to 3m + r, so with the
// optimizer step synchronisation bypassed (the paper's post-validation) the per-rank bubble is
// 0; the one-iteration makespan stays 3m + p - 1.
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule zb-h2 --pp 4 --microbatches 8`):
//   F forward, B input-gradient backward, W weight gradient, number = microbatch; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 F4 F5 F6 B0 W0 F7 B1 W1 B2 W2 B3 W3 B4 W4 B5 W5 B6 W6 B7 W7 .  .  .
//   rank 1 | .  F0 F1 F2 F3 F4 B0 F5 B1 F6 B2 W0 F7 B3 W1 B4 W2 B5 W3 B6 W4 B7 W5 W6 W7 .  .
//   rank 2 | .  .  F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 W0 F7 B5 W1 B6 W2 B7 W3 W4 W5 W6 W7 .
//   rank 3 | .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 W0 F7 B7 W1 W2 W3 W4 W5 W6 W7
//   makespan 27, bubble fraction 0.1111
#include "schedules/schedule_util.h"
#include "schedules/zero_bubble_order.h"

namespace tandem {
namespace {

Schedule build_zb_h2(const ScheduleParams& p) {
  const int pp = p.pp;
  const ComputeOrder order = sched::zero_bubble_order(
      pp, p.microbatches, [pp](int r) { return 2 * (pp - r) - 1; }, [](int r) { return 2 * r; });
  return make_schedule("zb-h2", linear_layout(pp, p.microbatches), order);
}

void check_zb_h2(const ScheduleParams& p) { sched::require_no_group_size(p, "zb-h2"); }

}  // namespace

ScheduleInfo zb_h2_schedule_info() {
  return ScheduleInfo{"zb-h2", "zero bubble with 2p-1 activations: parallelogram timeline",
                      "Qi et al., Zero Bubble Pipeline Parallelism (ICLR 2024), ZB-H2",
                      ChunkRule{1, 1, 1}, check_zb_h2, build_zb_h2};
}

}  // namespace tandem
