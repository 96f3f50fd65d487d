// DualPipeV (DeepSeek's DualPipe repository, dualpipev.py; the "cut-in-half" DualPipe of Sea AI
// Lab): DualPipe folded into a V. p ranks hold 2p stages, chunk 0 of rank r = stage r, chunk 1 =
// stage 2p-1-r (as ZB-V); all microbatches enter at rank 0 and their loss is computed on rank 0.
// Same eight steps as DualPipe with overlapped F&B pairs in the steady state.
// Accepted: m >= 2p (the repository's assert).
// Bubble (repository README): (S/2-1)(F&B + B - 3W) for S = 2p stages, B the full backward.
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule dualpipev --pp 4 --microbatches 8`):
//   F forward, B backward (full when followed by --, else input gradient), W weight gradient,
//   number = microbatch; lower case = chunk 1; steady-state F B neighbours are overlapped F&B pairs; . idle
//   rank 0 | F0 F1 F2 F3 F4 F5 F6 f0 b0 w0 f1 b1 w1 f2 b2 w2 f3 F7 b3 -- .  .  .  f4 B0 -- b4 -- .  f5 B1 -- b5 -- .  f6 B2 -- b6 -- .  f7 B3 -- b7 -- B4 W4 B5 W5 B6 W6 B7 W7
//   rank 1 | .  F0 F1 F2 F3 F4 f0 F5 f1 b0 w0 f2 b1 w1 f3 F6 b2 -- .  .  f4 B0 -- F7 b3 -- f5 B1 -- b4 -- .  f6 B2 -- b5 -- .  f7 B3 -- b6 -- B4 -- .  b7 B5 w7 B6 W5 B7 W6 W7
//   rank 2 | .  .  F0 F1 F2 f0 F3 f1 F4 f2 b0 w0 f3 F5 b1 -- .  f4 B0 -- F6 b2 -- f5 B1 -- F7 b3 -- f6 B2 -- b4 -- .  f7 B3 -- b5 -- B4 -- .  b6 -- B5 .  b7 B6 W5 B7 w7 W6 W7
//   rank 3 | .  .  .  F0 f0 F1 f1 F2 f2 F3 f3 F4 b0 -- f4 B0 -- F5 b1 -- f5 B1 -- F6 b2 -- f6 B2 -- F7 b3 -- f7 B3 -- b4 -- B4 -- .  b5 -- B5 -- .  b6 B6 .  b7 B7 w6 W6 w7 W7
//   makespan 27, bubble fraction 0.1111
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
