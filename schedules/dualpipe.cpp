// DualPipe (DeepSeek-V3 Technical Report, 2024, section 3.2.1; github.com/deepseek-ai/DualPipe):
// bidirectional pipeline. The model is split into p stages and every rank holds two of them:
// stage r (chunk 0, microbatches [0, m/2) entering at rank 0) and stage p-1-r (chunk 1,
// microbatches [m/2, m) entering at rank p-1), hence 2x parameter memory. The two streams meet
// in the middle; in the steady state every forward of one direction is overlapped with a
// backward of the other (F&B pairs, fused_with_next), and the second half of the backwards splits
// off weight gradients to fill the tail.
// Accepted: p even, m even and m >= 2p (the repository's asserts).
// Bubble (report, Table 2): (p/2-1)(F&B + B - 3W) with B the full backward; activations p+1.
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule dualpipe --pp 4 --microbatches 8`):
//   F forward, B backward (full when followed by --, else input gradient), W weight gradient,
//   number = microbatch; lower case = chunk 1; steady-state F B neighbours are overlapped F&B pairs; . idle
//   rank 0 | F0 F1 F2 f4 b4 w4 f5 F3 b5 -- .  f6 B0 -- b6 -- .  f7 B1 -- b7 -- B2 W2 B3 W3
//   rank 1 | .  F0 f4 F1 f5 F2 b4 -- f6 B0 -- F3 b5 -- f7 B1 -- b6 -- B2 -- .  b7 B3 w7 W3
//   rank 2 | .  f4 F0 f5 F1 f6 B0 -- F2 b4 -- f7 B1 -- F3 b5 -- B2 -- b6 -- .  B3 b7 W3 w7
//   rank 3 | f4 f5 f6 F0 B0 W0 F1 f7 B1 -- .  F2 b4 -- B2 -- .  F3 b5 -- B3 -- b6 w6 b7 w7
//   makespan 26, bubble fraction 0.0769
#include <algorithm>

#include "schedules/dualpipe_order.h"
#include "schedules/schedule_util.h"

namespace tandem {
namespace {

Schedule build_dualpipe(const ScheduleParams& p) {
  const int pp = p.pp, half = p.microbatches / 2;
  ComputeOrder order(pp);
  for (int r = 0; r < pp; ++r) {
    const bool second_half = r >= pp / 2;
    sched::DualRankShape shape;
    shape.ranks = pp / 2;
    shape.rank = std::min(r, pp - 1 - r);
    shape.microbatches = half;
    // Phase 0 is the direction that enters on this rank's side of the pipeline.
    shape.chunk_of_phase = [second_half](int phase) { return phase ^ (second_half ? 1 : 0); };
    shape.microbatch_of = [half](int chunk, int index) { return chunk * half + index; };
    order[r] = sched::dual_rank_order(shape);
  }
  return make_schedule("dualpipe", bidirectional_layout(pp, p.microbatches), order);
}

void check_dualpipe(const ScheduleParams& p) {
  sched::require_no_group_size(p, "dualpipe");
  sched::require_even_pp(p, "dualpipe");
  if (p.microbatches % 2 != 0 || p.microbatches < 2 * p.pp)
    throw_field_error("microbatches", p.microbatches,
                      "dualpipe needs an even number of microbatches >= 2*pp = " +
                          std::to_string(2 * p.pp) + " (half enter at each end)");
}

}  // namespace

ScheduleInfo dualpipe_schedule_info() {
  return ScheduleInfo{"dualpipe", "bidirectional, overlapped F&B pairs, 2x parameters",
                      "DeepSeek-V3 Technical Report (2024); github.com/deepseek-ai/DualPipe",
                      ChunkRule{2, 2, 2}, check_dualpipe, build_dualpipe};
}

}  // namespace tandem
