#pragma once
// Rotary position embedding of q or k, Megatron's rotate-half convention (math in
// backends/kernel_math/rope_math.h). Applied to the first rot_dim features of every head
// (rot_dim = head_dim unless --rotary-percent < 1); the rest pass through.
#include <cstdint>
#include <span>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

struct RopeOptions {
  int64_t rot_dim = 0;                  // even, <= head_dim; 0 means head_dim
  double base = 10000.0;                // job.model.rotary_base
  std::span<const int32_t> positions;   // [s] position of each sequence row; empty = 0..s-1
};

// x [s, b, heads, head_dim] -> y [s, b, heads, head_dim]. y may be x (in place).
void rope_forward(ConstTensorView x, const RopeOptions& options, TensorView y);

// dy [s, b, heads, head_dim] -> dx [s, b, heads, head_dim]. dx may be dy (in place).
void rope_backward(ConstTensorView dy, const RopeOptions& options, TensorView dx);

}  // namespace tandem::cpu
