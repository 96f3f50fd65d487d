// ZB-H2 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, section 2.2): the zero-bubble
// schedule that trades memory for a parallelogram-shaped timeline. Rank r runs 2(p-r)-1 warm-up
// forwards, filling the time until its first B arrives, and delays its W passes by 2r
// microbatches, so that the tail holds only W passes; every rank holds at most 2p-1 microbatches.
// Unit costs F=B=W=1: each rank r is busy without a gap from r to 3m + r, so with the
// optimizer step synchronisation bypassed (the paper's post-validation) the per-rank bubble is
// 0; the one-iteration makespan stays 3m + p - 1.
//
// TIMELINE_PLACEHOLDER
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
