#pragma once
// What the training loop reports once per iteration to the logs people read (metrics JSONL,
// TensorBoard events; the console line is the trainer's own). Rank 0 only: the trainer calls a
// TrainingLog in iteration order, after the iteration's evaluation when it has one.
#include <cstdint>
#include <optional>

namespace tandem::exec {

struct IterationRecord {
  int64_t iteration = 0;             // 1-based, as Megatron counts
  int64_t train_iters = 0;           // the run's last iteration
  int64_t consumed_samples = 0;      // sequences trained on up to and including this iteration
  int64_t global_batch_size = 0;     // sequences per iteration
  double lm_loss = 0;                // mean cross-entropy per token (nats) over the global batch
  double lr = 0;                     // learning rate of this iteration's update
  double grad_norm = 0;              // L2 norm of all gradients before clipping
  double iteration_time_s = 0;       // rank 0's wall time of the iteration (without evaluation)
  double tokens_per_s = 0;           // global batch tokens / iteration_time_s
  double model_tflops_per_rank = 0;  // Megatron's model FLOPs (no recompute) / time / ranks / 1e12
  std::optional<double> mfu;         // model FLOP/s per rank / the device's peak; none if unknown
  double mem_peak_bytes = 0;         // rank 0's device: highest live bytes during the iteration
  double mem_allocated_bytes = 0;    // rank 0's device: live bytes after the iteration
  bool skipped = false;              // update skipped (fp16 overflow); tandem has no loss scaler: false
  std::optional<double> eval_loss;   // validation loss when this iteration evaluated
  // Set on iterations that print a console line: means over the iterations since the previous one
  // (Megatron's "elapsed time per iteration" and TFLOP/s per GPU of the log interval).
  std::optional<double> interval_time_s;
  double interval_tflops_per_rank = 0;
};

class TrainingLog {
 public:
  virtual ~TrainingLog() = default;
  // Before the first iteration; first_iteration > 1 when the run resumed from a checkpoint.
  virtual void begin(int64_t first_iteration) = 0;
  virtual void record(const IterationRecord& r) = 0;
};

}  // namespace tandem::exec
