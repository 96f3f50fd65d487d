// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 2.1): 1F1B with the
// backward split into B (input gradient) and W (weight gradient). Rank r runs p-r warm-up
// forwards and delays its W passes by r microbatches, so every rank holds at most p microbatches
// of activations, like 1F1B; the faster B chain shortens the warm-up bubble and the delayed W
// fill the tail.
// Unit costs F=B=W=1: makespan 3m + p - 1, i.e. a bubble of (p-1)(F+B-W) per rank, a third of
// 1F1B's (the DeepSeek-V3 report writes (p-1)(F+B-2W) with B the full backward). With unit
// costs this makespan is the lower bound (the last rank starts at p-1 and has 3m of work).
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule zb-h1 --pp 4 --microbatches 8`):
//   F forward, B input-gradient backward, W weight gradient, number = microbatch; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 .  .  .  B0 W0 F4 B1 W1 F5 B2 W2 F6 B3 W3 F7 B4 W4 B5 W5 B6 W6 B7 W7
//   rank 1 | .  F0 F1 F2 .  .  B0 F3 B1 W0 F4 B2 W1 F5 B3 W2 F6 B4 W3 F7 B5 W4 B6 W5 B7 W6 W7
//   rank 2 | .  .  F0 F1 .  B0 F2 B1 F3 B2 W0 F4 B3 W1 F5 B4 W2 F6 B5 W3 F7 B6 W4 B7 W5 W6 W7
//   rank 3 | .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 F5 B5 W2 F6 B6 W3 F7 B7 W4 W5 W6 W7
//   makespan 27, bubble fraction 0.1111
#include "schedules/schedule_util.h"
#include "schedules/zero_bubble_order.h"

namespace tandem {
namespace {

Schedule build_zb_h1(const ScheduleParams& p) {
  const int pp = p.pp;
  const ComputeOrder order = sched::zero_bubble_order(
      pp, p.microbatches, [pp](int r) { return pp - r; }, [](int r) { return r; });
  return make_schedule("zb-h1", linear_layout(pp, p.microbatches), order);
}

void check_zb_h1(const ScheduleParams& p) { sched::require_no_group_size(p, "zb-h1"); }

}  // namespace

ScheduleInfo zb_h1_schedule_info() {
  return ScheduleInfo{"zb-h1", "zero bubble, 1F1B memory: B/W split, W delayed to fill the tail",
                      "Qi et al., Zero Bubble Pipeline Parallelism (ICLR 2024), ZB-H1",
                      ChunkRule{1, 1, 1}, check_zb_h1, build_zb_h1};
}

}  // namespace tandem
