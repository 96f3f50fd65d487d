#pragma once
// Measured per-op times of a job's compute instructions on a real Device: what
// `tandem calibrate` writes as a profile for `tandem simulate --profile` (the format is in
// backends/sim/compute_model.h: entries keyed by op, m, n, k, batch, dtype, with seconds).
//
// 1. collect_op_shapes: the distinct compute instructions of the programs — the profile key
//    (kind, m, n, k, batch, dtype) plus what else changes the device calls the runner makes for
//    them (site, forward/backward pass of a residual, CP ring step of attention).
// 2. time_ops: for each, synthesise tensors of the instruction's shapes and call the Device
//    methods the ModelRunner calls for that instruction (model_runner.h, runner_*.cpp), e.g.
//      Gemm m,n,k              gemm_forward  x [m, k] . W [k, n] -> y [m, n]  (output layer: W [n, k])
//      GemmGradInput m,n,k     gemm_grad_input  dY [m, n] . W^T -> dX [m, k]
//      GemmGradWeight m,n,k    gemm_grad_weight X [m, k], dY [m, n] -> dW [k, n] (+=)
//      Gemm batch > 1          grouped_gemm_* over `batch` experts of m rows each, W [batch, k, n]
//      Attention m,n,k,batch   attention_forward q [m, b, hq, d], k/v [n, b, hkv, d], b x hq = batch
//      Attention step >= 0     a context-parallel ring step as CP rank 0 runs it (its diagonal
//                              block, then half-blocks + attention_merge; backward_block + axpy)
//      Norm / Activation / Rope / CrossEntropy / Router / Permute / OptimizerStep ...
//    Warm-up call, then repeated calls, each between device.synchronize() calls, until both a
//    minimum count and a minimum total time are reached; the median is the op's time.
//    Instructions with no faithful mapping (MLA, MTP, ops the real backends do not execute) are returned as skipped with the reason, never timed with an invented call.
// Communication and memory instructions are not compute and are not collected.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "backends/executor/device.h"
#include "core/job.h"
#include "program/program.h"

namespace tandem::exec {

// One distinct compute instruction of the programs.
struct OpShape {
  OpKind kind = OpKind::Gemm;
  int64_t m = 0, n = 0, k = 0, batch = 1;   // Instruction shape (program/program.h)
  DType dtype = DType::BF16;
  Site site = Site::None;                   // the runner's handler depends on it
  bool backward = false;                    // not a forward (or recompute) pass
  int16_t step = -1;                        // attention: CP ring step (-1 without CP)
  int64_t count = 0;                        // instructions of the programs with this shape
  double flops = 0;                         // per instruction, as lowered (matrix products only)
  double bytes = 0;                         // per instruction, HBM bytes as lowered
  std::string profile_dtype;                // "fp32" | "fp16" | "bf16" | "fp8" (GEMM kinds of fp8 jobs)
  std::string describe() const;             // "Gemm qkv m=.. n=.. k=.. batch=.."
};

// Distinct compute shapes over all programs, in first-seen order; counts summed.
std::vector<OpShape> collect_op_shapes(const Job& job, const std::vector<RankProgram>& programs);
// One program per symmetry class (the ranks the simulator plays by default).
std::vector<RankProgram> representative_programs(const Job& job);

struct OpTimerOptions {
  int64_t min_repeats = 5;        // timed calls at least (after one warm-up call)
  double min_seconds = 0.05;      // and at least this much timed in total
  int64_t max_repeats = 10000;    // upper bound on timed calls
  // Called before each op: (index, total, op).
  std::function<void(size_t, size_t, const OpShape&)> progress;
};

struct OpTiming {
  OpShape op;
  double seconds = 0;             // median of the timed calls, per instruction
  int64_t repeats = 0;            // timed calls
  std::string calls;              // the Device calls made, e.g. "gemm_forward [64,32]x[32,96]"
};

struct SkippedOp {
  OpShape op;
  std::string reason;
};

struct OpTimingReport {
  std::vector<OpTiming> timed;
  std::vector<SkippedOp> skipped;
};

// Times every shape on `device` (rank 0's view of the job: vocabulary slice 0, first CP chunk).
OpTimingReport time_ops(Device& device, const Job& job, const std::vector<OpShape>& shapes,
                        const OpTimerOptions& options = {});

// Profile entries in the compute model's format, one per profile key (kind, m, n, k, batch,
// dtype). Variants sharing a key (e.g. two sites with one shape) are merged into their
// count-weighted mean, so the profile's total over the programs equals the measured total.
nlohmann::json profile_entries(const OpTimingReport& report);

}  // namespace tandem::exec
