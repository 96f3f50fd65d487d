#pragma once
// The training loop every real backend runs: lower this rank's program once, initialise the
// parameters from the seed, then per iteration build this rank's microbatches, execute the
// program (ProgramExecutor + ModelRunner) and report loss, learning rate and gradient norm.
// Backend-neutral: the caller supplies the Device and the Communicator. Checkpoints follow the
// job's save / save_interval / load (Megatron semantics: resume from the latest under --load,
// save every save_interval iterations and at the end). Every eval_interval iterations the
// program runs eval_iters times on validation batches without updating anything (the CPU
// backend has no forward-only program: the backward runs and its gradients are discarded).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/executor/communicator.h"
#include "backends/executor/device.h"
#include "backends/executor/training_log.h"
#include "core/job.h"

namespace tandem::exec {

struct TrainOptions {
  int64_t iterations = 0;                       // 0: the job's train_iters
  bool trace_ops = false;                       // keep the op trace of the first iteration
  bool dump_first_step = false;                 // one rank: keep weights, batch, loss, gradients of step 1
  bool record_routing = false;                  // MoE: keep the routing counts of the first iteration
  std::function<void(const std::string&)> log;  // called on rank 0 with one line at a time
  // Rank 0: begin() once after --load, then record() once per iteration (metrics JSONL, TensorBoard).
  std::vector<std::shared_ptr<TrainingLog>> training_logs;
  double peak_flops_per_rank = 0;               // the device's dense peak (FLOP/s) for MFU; 0: unknown
};

// Complete on rank 0 (other ranks hold their own timings only).
struct TrainReport {
  int64_t first_iteration = 1;      // > 1 when resumed from a checkpoint (--load)
  std::vector<double> losses, grad_norms, lrs, iteration_times_s;   // [iteration - first_iteration]
  std::vector<std::pair<int64_t, double>> eval_losses;              // (iteration, validation loss)
  double elapsed_s = 0;
  double tokens_per_s = 0;          // over the iterations after the first
  int64_t tokens_per_iteration = 0;
  double program_peak_bytes = 0;    // rank 0's program, symbolic buffer sizes
  double device_peak_bytes = 0;     // rank 0's device, measured (max over iterations)
  std::string op_trace;             // "# rank R" + op_trace_line per instruction, every rank
  std::vector<std::string> notes;   // what the run did differently from the job (dropout, dtype)
  // JSON (dump_first_step): "config", "tokens"/"labels" [microbatch][row], "loss" of step 1, the
  // forward's "logits" [microbatch] {"shape": [n, V], "value"}, and per parameter "shape", initial
  // "value" and step-1 "grad" — for an independent reference.
  std::string first_step;
  // record_routing: the MoE routing trace of the first iteration (JSON, the format of the
  // simulator's --moe-routing-trace): per MoE layer and microbatch the copies per expert that
  // the lowest rank holding the layer routed, before capacity dropping.
  std::string routing_trace;
};

TrainReport train(const Job& job, Device& device, Communicator& comm, const TrainOptions& options);

}  // namespace tandem::exec
