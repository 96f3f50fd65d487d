#pragma once
// Transformer Engine's tensor-parallel communication overlap (--tp-comm-overlap, "userbuffers")
// as the simulator plays it.
//
// With sequence parallelism a column-parallel GEMM (qkv, fc1; in the backward the dgrad of proj
// and fc2) waits for an all-gather of its [n/t, h] input, and a row-parallel GEMM (proj, fc2)
// feeds a reduce-scatter of its [n, h] output. TE splits such a pair into t chunks (t = TP size)
// and pipelines them:
//  - all-gather -> GEMM: a ring exchange of t - 1 steps, each passing one rank's shard to the
//    next; GEMM chunk 0 runs on the local rows at once, chunk i on the rows step i - 1 brought;
//  - GEMM -> reduce-scatter: GEMM chunk i computes the rows destined to one rank and its
//    reduce-scatter is issued as soon as it is done, beside chunk i + 1.
// The column-parallel backward (input all-gather for wgrad beside dgrad, dgrad reduce-scatter
// beside wgrad: TE's "bulk" overlap) already runs on separate streams and is left as it is.
//
// The program stays as lowered: the real backends run each pair unsplit with the same numbers,
// and --trace-ops shows the lowered program. This pass rewrites the simulator's copy only: t
// collectives with their latencies, and t GEMM chunks of m / t rows. TE issues the chunks on
// several CUDA streams, so that one chunk's last wave fills with the next chunk's tiles: a chunk
// is timed as its share of the unsplit GEMM (its CostNote), not as a small GEMM of its own.
// Approximate: TE's ring exchange runs on copy engines and its reduce-scatter on a few SMs; the
// GEMM chunks are not slowed for either.
#include <cstdint>
#include <vector>

#include "program/program.h"

namespace tandem::sim {

struct TpOverlapResult {
  int64_t gathers = 0;   // all-gather -> GEMM pairs pipelined
  int64_t scatters = 0;  // GEMM -> reduce-scatter pairs pipelined
};

// Rewrites `program` in place, pipelining every eligible pair into `chunks` pieces (chunks =
// TP size >= 2; fewer does nothing). Every piece carries a CostNote: its index, for a GEMM chunk
// its share of the unsplit GEMM, for a collective piece after the first that it continues one
// exchange (the executor charges it no latency of its own).
TpOverlapResult pipeline_tp_overlap(RankProgram& program, int64_t chunks);

}  // namespace tandem::sim
