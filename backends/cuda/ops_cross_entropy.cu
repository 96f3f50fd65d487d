// Fused vocabulary-parallel cross-entropy kernels (ops_cross_entropy.cuh).
#include "backends/cuda/ops_cross_entropy.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

// Block t: max, sum of exp relative to it (double), and the raw target logit of row t.
__global__ void ce_partials_kernel(const float* logits, int64_t v, const int32_t* targets, int64_t vocab_start,
                                   float* max, float* sum_exp, float* target_logit) {
  const int64_t t = blockIdx.x;
  const float* row = logits + t * v;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m);
  double s = 0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) s += exp(static_cast<double>(row[j]) - m);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const int64_t local = static_cast<int64_t>(targets[t]) - vocab_start;
    max[t] = m;
    sum_exp[t] = static_cast<float>(s);
    target_logit[t] = local >= 0 && local < v ? row[local] : 0.0f;
  }
}

__global__ void rescale_sum_exp_kernel(float* sum_exp, const float* local_max, const float* global_max, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += stride)
    sum_exp[t] = static_cast<float>(sum_exp[t] * exp(static_cast<double>(local_max[t]) - global_max[t]));
}

__global__ void ce_loss_kernel(const float* max, const float* sum_exp, const float* target_logit, float* loss,
                               int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += stride)
    loss[t] = static_cast<float>(log(static_cast<double>(sum_exp[t])) + max[t] - target_logit[t]);
}

// Block t writes d_logits row t; each element is read then written by one thread.
__global__ void ce_backward_kernel(const float* logits, int64_t v, const int32_t* targets, int64_t vocab_start,
                                   const float* max, const float* sum_exp, const float* d_loss, float* d_logits) {
  const int64_t t = blockIdx.x;
  const float* row = logits + t * v;
  float* grad = d_logits + t * v;
  const float m = max[t], inv_sum = 1.0f / sum_exp[t], g = d_loss[t];
  const int64_t local = static_cast<int64_t>(targets[t]) - vocab_start;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float p = expf(row[j] - m) * inv_sum;
    grad[j] = g * (j == local ? p - 1.0f : p);
  }
}

void check_rows(const char* op, int64_t tokens, int64_t v, const void* logits, const void* targets, const void* out) {
  check_size(op, "tokens", tokens, kMaxGridX);
  check_size(op, "v", v);
  if (tokens > 0 && (targets == nullptr || out == nullptr || (v > 0 && logits == nullptr)))
    throw std::invalid_argument(std::string(op) + ": null logits, targets or output");
}

void check_vector(const char* op, int64_t n, const void* a, const void* b, const void* c, const void* d) {
  check_size(op, "tokens", n);
  if (n > 0 && (a == nullptr || b == nullptr || c == nullptr || d == nullptr))
    throw std::invalid_argument(std::string(op) + ": null input or output");
}

}  // namespace

void launch_cross_entropy_partials(const float* logits, int64_t tokens, int64_t v, const int32_t* targets,
                                   int64_t vocab_start, float* max, float* sum_exp, float* target_logit,
                                   cudaStream_t stream) {
  check_rows("cross_entropy_partials", tokens, v, logits, targets, max);
  if (tokens > 0 && (sum_exp == nullptr || target_logit == nullptr))
    throw std::invalid_argument("cross_entropy_partials: null sum_exp or target_logit");
  const LaunchConfig c = rows_config(tokens, v);
  if (c.empty()) return;
  ce_partials_kernel<<<c.grid, c.block, 0, stream>>>(logits, v, targets, vocab_start, max, sum_exp, target_logit);
  TANDEM_CHECK_LAUNCH("ce_partials_kernel");
}

void launch_rescale_sum_exp(float* sum_exp, const float* local_max, const float* global_max, int64_t tokens,
                            cudaStream_t stream) {
  check_vector("rescale_sum_exp", tokens, sum_exp, local_max, global_max, sum_exp);
  const LaunchConfig c = grid_1d(tokens);
  if (c.empty()) return;
  rescale_sum_exp_kernel<<<c.grid, c.block, 0, stream>>>(sum_exp, local_max, global_max, tokens);
  TANDEM_CHECK_LAUNCH("rescale_sum_exp_kernel");
}

void launch_cross_entropy_loss(const float* max, const float* sum_exp, const float* target_logit, float* loss,
                               int64_t tokens, cudaStream_t stream) {
  check_vector("cross_entropy_loss", tokens, max, sum_exp, target_logit, loss);
  const LaunchConfig c = grid_1d(tokens);
  if (c.empty()) return;
  ce_loss_kernel<<<c.grid, c.block, 0, stream>>>(max, sum_exp, target_logit, loss, tokens);
  TANDEM_CHECK_LAUNCH("ce_loss_kernel");
}

void launch_cross_entropy_backward(const float* logits, int64_t tokens, int64_t v, const int32_t* targets,
                                   int64_t vocab_start, const float* max, const float* sum_exp, const float* d_loss,
                                   float* d_logits, cudaStream_t stream) {
  check_rows("cross_entropy_backward", tokens, v, logits, targets, d_logits);
  if (tokens > 0 && (max == nullptr || sum_exp == nullptr || d_loss == nullptr))
    throw std::invalid_argument("cross_entropy_backward: null max, sum_exp or d_loss");
  const LaunchConfig c = rows_config(tokens, v);
  if (c.empty() || v == 0) return;
  ce_backward_kernel<<<c.grid, c.block, 0, stream>>>(logits, v, targets, vocab_start, max, sum_exp, d_loss,
                                                     d_logits);
  TANDEM_CHECK_LAUNCH("ce_backward_kernel");
}

}  // namespace tandem::cuda
