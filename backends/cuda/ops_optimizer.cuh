#pragma once
// AdamW over flat fp32 master weights (host-includable launcher), math from
// backends/kernel_math/adamw_math.h. The global gradient norm's local sum of squares over many
// buffers is launch_sum_of_squares_ranges (ops_reduce.cuh).
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "backends/kernel_math/adamw_math.h"

namespace tandem::cuda {

// param, grad, exp_avg, exp_avg_sq [n]: one AdamW step with gradient grad * grad_scale.
// param_bf16 [n] (optional, may be null) receives the updated parameters rounded to bf16
// (nearest, ties to even): the copy that bf16 runs feed their GEMMs.
void launch_adamw(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const kmath::AdamWStep& step, float grad_scale, __nv_bfloat16* param_bf16, cudaStream_t stream);

}  // namespace tandem::cuda
