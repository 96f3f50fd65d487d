// AdamW kernel (ops_optimizer.cuh): one thread per element, grid-stride.
#include "backends/cuda/ops_optimizer.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

__global__ void adamw_kernel(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                             kmath::AdamWStep step, float grad_scale, __nv_bfloat16* param_bf16) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    kmath::adamw_update(&p, &m, &v, grad[i] * grad_scale, step);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
  }
}

}  // namespace

void launch_adamw(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const kmath::AdamWStep& step, float grad_scale, __nv_bfloat16* param_bf16, cudaStream_t stream) {
  check_size("adamw", "n", n);
  if (n > 0 && (param == nullptr || grad == nullptr || exp_avg == nullptr || exp_avg_sq == nullptr))
    throw std::invalid_argument("adamw: null param, grad, exp_avg or exp_avg_sq");
  if (!(step.bias_correction1 > 0.0f) || !(step.bias_correction2 > 0.0f))
    throw std::invalid_argument("adamw: bias corrections " + std::to_string(step.bias_correction1) + ", " +
                                std::to_string(step.bias_correction2) + " must be positive (step >= 1)");
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  adamw_kernel<<<c.grid, c.block, 0, stream>>>(param, grad, exp_avg, exp_avg_sq, n, step, grad_scale, param_bf16);
  TANDEM_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace tandem::cuda
