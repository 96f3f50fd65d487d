#pragma once
// Optimizer-side kernels over flat fp32 buffers: AdamW (math in
// backends/kernel_math/adamw_math.h), the sum of squares that the global gradient norm is
// built from, gradient scaling for clipping, and bf16 rounding of stored tensors.
//
// Global-norm clipping across ranks (Megatron's clip_grad_norm): every rank calls
// sum_of_squares over the gradients it owns, the caller all-reduces the sums over the
// model-parallel (and, with the distributed optimizer, data-parallel) group, then
// norm = sqrt(total) and clip_coefficient(norm, clip_grad) scales the gradients (or is passed
// as grad_scale to adamw_step).
#include <cstdint>
#include <span>

#include "backends/kernel_math/adamw_math.h"

namespace tandem::cpu {

// params [n], grads [n], exp_avg [n], exp_avg_sq [n]: one AdamW step; each gradient is
// multiplied by grad_scale first (clip coefficient, 1 / loss scale, ...).
void adamw_step(std::span<float> params, std::span<const float> grads, std::span<float> exp_avg,
                std::span<float> exp_avg_sq, const kmath::AdamWStep& step, float grad_scale = 1.0f);

// sum_i x[i]^2, accumulated in double.
double sum_of_squares(std::span<const float> x);

// Megatron's clip coefficient: max_norm / (norm + 1e-6) when that is < 1, else 1.
float clip_coefficient(double global_norm, double max_norm);

// x[i] *= factor.
void scale_in_place(std::span<float> x, float factor);

// x[i] = round_to_bf16(x[i]) (nearest, ties to even).
void round_to_bf16_in_place(std::span<float> x);

}  // namespace tandem::cpu
