// bf16 <-> fp32 conversion kernels (ops_convert.cuh).
#include "backends/cuda/ops_convert.cuh"

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/bf16_math.h"

namespace tandem::cuda {
namespace {

__global__ void fp32_to_bf16_kernel(const float* __restrict__ src, uint16_t* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = kmath::float_to_bf16_bits(src[i]);
}

__global__ void bf16_to_fp32_kernel(const uint16_t* __restrict__ src, float* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = kmath::bf16_bits_to_float(src[i]);
}

void check_pointers(const char* op, int64_t n, const void* src, const void* dst) {
  check_size(op, "n", n);
  if (n > 0 && (src == nullptr || dst == nullptr))
    throw std::invalid_argument(std::string(op) + ": null buffer for n = " + std::to_string(n));
}

}  // namespace

void launch_fp32_to_bf16(const float* src, uint16_t* dst, int64_t n, cudaStream_t stream) {
  check_pointers("fp32_to_bf16", n, src, dst);
  const LaunchConfig cfg = grid_1d(n);
  if (cfg.empty()) return;
  fp32_to_bf16_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(src, dst, n);
  TANDEM_CHECK_LAUNCH("fp32_to_bf16_kernel");
}

void launch_bf16_to_fp32(const uint16_t* src, float* dst, int64_t n, cudaStream_t stream) {
  check_pointers("bf16_to_fp32", n, src, dst);
  const LaunchConfig cfg = grid_1d(n);
  if (cfg.empty()) return;
  bf16_to_fp32_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(src, dst, n);
  TANDEM_CHECK_LAUNCH("bf16_to_fp32_kernel");
}

}  // namespace tandem::cuda
