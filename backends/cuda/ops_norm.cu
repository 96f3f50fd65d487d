// LayerNorm / RMSNorm kernels (ops_norm.cuh): one block per row, threads stride over the
// features, block reductions in a fixed order.
#include "backends/cuda/ops_norm.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/cuda/ops_reduce.cuh"
#include "backends/kernel_math/norm_math.h"

namespace tandem::cuda {
namespace {

// Block r normalises row r of x [rows, h]. y may alias x: each element is read and written by
// one thread, after the row's statistics are complete.
__global__ void layernorm_forward_kernel(const float* x, const float* gamma, const float* beta, int64_t h, float eps,
                                         float* y, float* mean, float* rstd) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * h;
  float* yr = y + row * h;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) sum += xr[i];
  const float mu = block_sum(sum) / static_cast<float>(h);
  float sq = 0;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float d = xr[i] - mu;
    sq += d * d;
  }
  const float var = block_sum(sq) / static_cast<float>(h);
  const float r = 1.0f / sqrtf(var + eps);
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x)
    yr[i] = kmath::layernorm_apply(xr[i], mu, r, gamma[i], beta ? beta[i] : 0.0f);
  if (threadIdx.x == 0) {
    mean[row] = mu;
    rstd[row] = r;
  }
}

__global__ void rmsnorm_forward_kernel(const float* x, const float* gamma, int64_t h, float eps, float* y,
                                       float* rstd) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * h;
  float* yr = y + row * h;
  float sq = 0;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) sq += xr[i] * xr[i];
  const float r = 1.0f / sqrtf(block_sum(sq) / static_cast<float>(h) + eps);
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) yr[i] = xr[i] * r * gamma[i];
  if (threadIdx.x == 0) rstd[row] = r;
}

// dx for row blockIdx.x. mean == nullptr: RMSNorm (no centring, no mean(g) term).
__global__ void norm_backward_input_kernel(const float* x, const float* gamma, const float* mean, const float* rstd,
                                           const float* dy, int64_t h, float* dx) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * h;
  const float* dyr = dy + row * h;
  float* dxr = dx + row * h;
  const float mu = mean ? mean[row] : 0.0f, r = rstd[row];
  float sum_g = 0, sum_g_xhat = 0;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float xhat = (xr[i] - mu) * r;
    const float g = dyr[i] * gamma[i];
    sum_g += g;
    sum_g_xhat += g * xhat;
  }
  const float mean_g = mean ? block_sum(sum_g) / static_cast<float>(h) : 0.0f;
  const float mean_g_xhat = block_sum(sum_g_xhat) / static_cast<float>(h);
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    const float xhat = (xr[i] - mu) * r;
    const float g = dyr[i] * gamma[i];
    dxr[i] = mean ? kmath::layernorm_grad_input(xhat, g, mean_g, mean_g_xhat, r)
                  : kmath::rmsnorm_grad_input(xhat, g, mean_g_xhat, r);
  }
}

void check_rows(const char* op, int64_t rows, int64_t h) {
  check_size(op, "rows", rows, kMaxGridX);
  check_size(op, "h", h);
  if (rows > 0 && h == 0) throw std::invalid_argument(std::string(op) + ": h = 0 with rows = " + std::to_string(rows));
}

template <typename... Pointers>
void check_pointers(const char* op, int64_t rows, const Pointers*... pointers) {
  if (rows > 0 && ((pointers == nullptr) || ...))
    throw std::invalid_argument(std::string(op) + ": null input or output");
}

}  // namespace

void launch_layernorm_forward(const float* x, const float* gamma, const float* beta, int64_t rows, int64_t h, float eps,
                              float* y, float* mean, float* rstd, cudaStream_t stream) {
  check_rows("layernorm_forward", rows, h);
  check_pointers("layernorm_forward", rows, x, gamma, y, mean, rstd);
  const LaunchConfig c = rows_config(rows, h);
  if (c.empty()) return;
  layernorm_forward_kernel<<<c.grid, c.block, 0, stream>>>(x, gamma, beta, h, eps, y, mean, rstd);
  TANDEM_CHECK_LAUNCH("layernorm_forward_kernel");
}

void launch_rmsnorm_forward(const float* x, const float* gamma, int64_t rows, int64_t h, float eps, float* y,
                            float* rstd, cudaStream_t stream) {
  check_rows("rmsnorm_forward", rows, h);
  check_pointers("rmsnorm_forward", rows, x, gamma, y, rstd);
  const LaunchConfig c = rows_config(rows, h);
  if (c.empty()) return;
  rmsnorm_forward_kernel<<<c.grid, c.block, 0, stream>>>(x, gamma, h, eps, y, rstd);
  TANDEM_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void launch_norm_backward_input(const float* x, const float* gamma, const float* mean, const float* rstd,
                                const float* dy, int64_t rows, int64_t h, float* dx, cudaStream_t stream) {
  check_rows("norm_backward", rows, h);
  check_pointers("norm_backward", rows, x, gamma, rstd, dy, dx);
  const LaunchConfig c = rows_config(rows, h);
  if (c.empty()) return;
  norm_backward_input_kernel<<<c.grid, c.block, 0, stream>>>(x, gamma, mean, rstd, dy, h, dx);
  TANDEM_CHECK_LAUNCH("norm_backward_input_kernel");
}

size_t norm_param_grads_scratch_bytes(int64_t rows, int64_t h) { return column_sums_scratch_bytes(rows, h); }

void launch_norm_param_grads(const float* x, const float* mean, const float* rstd, const float* dy, int64_t rows,
                             int64_t h, float* dgamma, float* dbeta, void* scratch, size_t scratch_bytes,
                             cudaStream_t stream) {
  check_rows("norm_param_grads", rows, h);
  check_pointers("norm_param_grads", rows, x, rstd, dy, dgamma);
  // The two reductions share the scratch: stream order runs them one after the other.
  launch_column_sums(ColumnTerm::DyXhat, ColumnTermInputs{x, dy, mean, rstd}, rows, h, dgamma, scratch, scratch_bytes,
                     stream);
  if (dbeta != nullptr)
    launch_column_sums(ColumnTerm::X, ColumnTermInputs{dy, nullptr, nullptr, nullptr}, rows, h, dbeta, scratch,
                       scratch_bytes, stream);
}

}  // namespace tandem::cuda
