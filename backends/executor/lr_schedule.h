#pragma once
// Megatron-LM's learning-rate schedule (OptimizerParamScheduler), in iterations: a linear warmup
// from 0 to --lr over the warmup iterations, then constant, linear or cosine decay to --min-lr
// at --lr-decay-iters (default --train-iters), min-lr after; inverse-square-root as Megatron.
// Megatron counts samples (iterations x global batch); the ratios are the same in iterations.
// The optimizer step of iteration i (1-based) uses lr_at(i - 1), as Megatron's scheduler steps
// after the optimizer (Megatron's log prints the value for the next iteration).
#include <cstdint>

#include "core/job.h"

namespace tandem::exec {

class LrSchedule {
 public:
  // UserError for a style the schedule does not implement (WSD) or inconsistent iterations.
  LrSchedule(const TrainingConfig& training, int64_t train_iters);
  double lr_at(int64_t completed_iterations) const;

 private:
  double max_lr_ = 0, min_lr_ = 0;
  double warmup_ = 0, decay_ = 0;
  LrDecayStyle style_ = LrDecayStyle::Linear;
};

}  // namespace tandem::exec
