// DualPipeV (DeepSeek's DualPipe repository, dualpipev.py; the "cut-in-half" DualPipe of Sea AI
// Lab): DualPipe folded into a V. p ranks hold 2p stages, chunk 0 of rank r = stage r, chunk 1 =
// stage 2p-1-r (as ZB-V); all microbatches enter at rank 0 and their loss is computed on rank 0.
// Same eight steps as DualPipe with overlapped F&B pairs in the steady state.
// Accepted: m >= 2p (the repository's assert).
// Bubble (repository README): (S/2-1)(F&B + B - 3W) for S = 2p stages, B the full backward.
//
// TIMELINE_PLACEHOLDER
#include "schedules/dualpipe_order.h"
#include "schedules/schedule_util.h"

namespace tandem {
namespace {

Schedule build_dualpipev(const ScheduleParams& p) {
  ComputeOrder order(p.pp);
  for (int r = 0; r < p.pp; ++r) {
    sched::DualRankShape shape;
    shape.ranks = p.pp;
    shape.rank = r;
    shape.microbatches = p.microbatches;
    shape.chunk_of_phase = [](int phase) { return phase; };
    shape.microbatch_of = [](int, int index) { return index; };
    order[r] = sched::dual_rank_order(shape);
  }
  return make_schedule("dualpipev", v_layout(p.pp, p.microbatches), order);
}

void check_dualpipev(const ScheduleParams& p) {
  sched::require_no_group_size(p, "dualpipev");
  sched::require_min_microbatches(p, 2 * p.pp,
                                  "dualpipev needs at least 2*pp = " + std::to_string(2 * p.pp) +
                                      " microbatches");
}

}  // namespace

ScheduleInfo dualpipev_schedule_info() {
  return ScheduleInfo{"dualpipev", "DualPipe cut in half: V shape, overlapped F&B pairs",
                      "github.com/deepseek-ai/DualPipe (dualpipev.py); Sea AI Lab cut-in-half",
                      ChunkRule{2, 2, 2}, check_dualpipev, build_dualpipev};
}

}  // namespace tandem
