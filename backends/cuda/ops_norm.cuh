#pragma once
// LayerNorm and RMSNorm over rows of x [rows, h] (host-includable launchers), math from
// backends/kernel_math/norm_math.h. Forward and the input gradient run one block per row
// (rows_config) with warp-shuffle block reductions in fp32; the parameter gradients are column
// sums formed in double through per-chunk partials (ops_reduce.cuh), no atomics, so every
// output is byte-identical run to run.
//   stats: mean [rows] (LayerNorm only), rstd [rows]
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tandem::cuda {

// y [rows, h] = layernorm(x) * gamma [h] + beta [h] (beta may be null); writes mean, rstd [rows].
void launch_layernorm_forward(const float* x, const float* gamma, const float* beta, int64_t rows, int64_t h, float eps,
                              float* y, float* mean, float* rstd, cudaStream_t stream);
// y [rows, h] = x * rstd * gamma [h]; writes rstd [rows].
void launch_rmsnorm_forward(const float* x, const float* gamma, int64_t rows, int64_t h, float eps, float* y,
                            float* rstd, cudaStream_t stream);
// dx [rows, h] (overwritten, may alias dy) from x, gamma, the saved stats and dy [rows, h].
// mean null: RMSNorm; otherwise LayerNorm.
void launch_norm_backward_input(const float* x, const float* gamma, const float* mean, const float* rstd,
                                const float* dy, int64_t rows, int64_t h, float* dx, cudaStream_t stream);
// dgamma [h] += sum_r dy * xhat, dbeta [h] += sum_r dy (dbeta may be null); mean null: RMSNorm.
size_t norm_param_grads_scratch_bytes(int64_t rows, int64_t h);
void launch_norm_param_grads(const float* x, const float* mean, const float* rstd, const float* dy, int64_t rows,
                             int64_t h, float* dgamma, float* dbeta, void* scratch, size_t scratch_bytes,
                             cudaStream_t stream);

}  // namespace tandem::cuda
