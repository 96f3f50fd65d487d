#pragma once
// Device helpers shared by the baseline and the flash attention kernels (device code: include
// from .cu files only). Index math of the [s, b, heads, d] layouts and the masks.
#if !defined(__CUDACC__)
#error "attention_device.cuh holds device code: include it from .cu files only"
#endif
#include "backends/cuda/ops_attention.cuh"
#include "backends/kernel_math/bf16_math.h"
#include "backends/kernel_math/dropout_math.h"

namespace tandem::cuda {

// Element e of head h, batch element b, row i of a [s, nb, heads, d] tensor.
__device__ inline int64_t head_index(int64_t i, int64_t b, int64_t h, int64_t e, int64_t nb, int64_t heads, int64_t d) {
  return ((i * nb + b) * heads + h) * d + e;
}

__device__ inline float bf16_round(float x) { return kmath::round_to_bf16(x); }

// The dropout factor of probability (b, h, i, j): 1 without dropout.
__device__ inline float attention_keep_factor(const AttentionProblem& p, int64_t b, int64_t h, int32_t q_pos,
                                              int32_t kv_pos) {
  if (p.dropout <= 0.0f) return 1.0f;
  const bool keep = kmath::attention_dropout_keep(p.dropout_key, p.samples[b], p.head_offset + h, q_pos, kv_pos,
                                                  p.dropout);
  return kmath::dropout_factor(keep, p.dropout);
}

}  // namespace tandem::cuda
