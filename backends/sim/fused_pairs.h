#pragma once
// DualPipe's overlapped F&B pairs as the simulator plays them.
//
// DualPipe (DeepSeek-V3 report, section 3.2.1) runs the forward of one microbatch and the backward
// of another as one unit: each is cut at its communication (the MoE dispatch and combine
// all-to-alls, and around them attention and MLP compute), and the pieces alternate so that one
// microbatch's all-to-all runs while the other computes. The lowering (program/lower_pipeline.cpp)
// emits a fused pair as the forward's instructions, then the backward's, with the receives of both
// before and the sends of both after (core/schedule.h, Action::fused_with_next). This pass rewrites
// the simulator's copy of the program: the two instruction sequences are cut after each
// expert-parallel communication instruction (StreamKind::EpComm) and merged piece by piece,
// forward first. Each sequence keeps its own order and dependencies; the compute stream then runs
// the other microbatch's piece while an all-to-all is in flight on the EP stream, and compute that
// overlaps a collective across the network is slowed by the SMs NCCL takes
// (ExecutorOptions::comm_compute_slowdown), as DeepSeek reserves 20 of 132 SMs for communication.
// The real backends run the pair as lowered, with the same numbers; --trace-ops shows the lowered
// program. A pair is left as lowered when its instructions are not one block (forward, then
// backward); jobs without expert-parallel communication gain nothing (no cut points).
#include <cstdint>

#include "core/schedule.h"
#include "program/program.h"

namespace tandem::sim {

struct FusedPairsResult {
  int64_t pairs = 0;    // fused pairs merged
  int64_t pieces = 0;   // pieces they were cut into (both sequences)
};

// Rewrites `program` (the program of pipeline rank program.pipeline_rank under `schedule`) in place.
FusedPairsResult interleave_fused_pairs(RankProgram& program, const Schedule& schedule);

}  // namespace tandem::sim
