#pragma once
// The per-rank step sequence shared by DualPipe and DualPipeV (DeepSeek-V3 report; DeepSeek's
// DualPipe repository). Both run, on every rank, two "phases" (phase 0 starts the microbatches,
// phase 1 is the way back) in eight steps:
//   1 nF0   2 nF0F1   3 nB1W1F1   4 nF0B1F1B0 (main, overlapped pairs)   5 nB1F1B0
//   6 nB1B0 (second half with the weight grads split off)   7 nWB0   8 nW
// DualPipeV is the sequence for `ranks` ranks; DualPipe runs it for `ranks/2` "half ranks" in
// each direction (rank r and rank p-1-r have the same half rank).
#include <functional>
#include <vector>

#include "core/schedule.h"

namespace tandem::sched {

struct DualRankShape {
  int ranks = 0;          // ranks in the V (DualPipeV: p; DualPipe: p/2)
  int rank = 0;           // position in the V (DualPipeV: r; DualPipe: min(r, p-1-r))
  int microbatches = 0;   // microbatches per phase chain (DualPipeV: m; DualPipe: m/2)
  // Local chunk running `phase` (0 or 1) on this rank.
  std::function<int(int phase)> chunk_of_phase;
  // Global microbatch id of the `index`-th microbatch through `chunk`.
  std::function<int(int chunk, int index)> microbatch_of;
};

std::vector<ComputeStep> dual_rank_order(const DualRankShape& shape);

}  // namespace tandem::sched
