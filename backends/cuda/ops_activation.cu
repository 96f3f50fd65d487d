// GeLU (tanh and erf forms) and SwiGLU kernels (ops_activation.cuh): grid-stride elementwise.
#include "backends/cuda/ops_activation.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/activation_math.h"

namespace tandem::cuda {
namespace {

__device__ inline int64_t first_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <GeluForm kForm>
__global__ void gelu_forward_kernel(const float* x, int64_t n, float* y) {
  for (int64_t i = first_index(); i < n; i += grid_stride())
    y[i] = kForm == GeluForm::Tanh ? kmath::gelu_tanh(x[i]) : kmath::gelu_erf(x[i]);
}

template <GeluForm kForm>
__global__ void gelu_backward_kernel(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = first_index(); i < n; i += grid_stride())
    dx[i] = dy[i] * (kForm == GeluForm::Tanh ? kmath::gelu_tanh_grad(x[i]) : kmath::gelu_erf_grad(x[i]));
}

// y [rows, f]: element i = (r, j) reads gate x[r, j] and up x[r, f + j].
__global__ void swiglu_forward_kernel(const float* x, int64_t f, int64_t n, float* y) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const int64_t r = i / f, j = i % f;
    const float* row = x + r * 2 * f;
    y[i] = kmath::swiglu(row[j], row[f + j]);
  }
}

__global__ void swiglu_backward_kernel(const float* x, const float* dy, int64_t f, int64_t n, float* dx) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const int64_t r = i / f, j = i % f;
    const float* row = x + r * 2 * f;
    float* d_row = dx + r * 2 * f;
    kmath::swiglu_grad(row[j], row[f + j], dy[i], d_row + j, d_row + f + j);
  }
}

template <typename... Pointers>
void check_pointers(const char* op, int64_t n, const Pointers*... pointers) {
  if (n > 0 && ((pointers == nullptr) || ...))
    throw std::invalid_argument(std::string(op) + ": null input or output");
}

}  // namespace

void launch_gelu_forward(GeluForm form, const float* x, int64_t n, float* y, cudaStream_t stream) {
  check_size("gelu_forward", "n", n);
  check_pointers("gelu_forward", n, x, y);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  if (form == GeluForm::Tanh) gelu_forward_kernel<GeluForm::Tanh><<<c.grid, c.block, 0, stream>>>(x, n, y);
  else gelu_forward_kernel<GeluForm::Erf><<<c.grid, c.block, 0, stream>>>(x, n, y);
  TANDEM_CHECK_LAUNCH("gelu_forward_kernel");
}

void launch_gelu_backward(GeluForm form, const float* x, const float* dy, int64_t n, float* dx, cudaStream_t stream) {
  check_size("gelu_backward", "n", n);
  check_pointers("gelu_backward", n, x, dy, dx);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  if (form == GeluForm::Tanh) gelu_backward_kernel<GeluForm::Tanh><<<c.grid, c.block, 0, stream>>>(x, dy, n, dx);
  else gelu_backward_kernel<GeluForm::Erf><<<c.grid, c.block, 0, stream>>>(x, dy, n, dx);
  TANDEM_CHECK_LAUNCH("gelu_backward_kernel");
}

void launch_swiglu_forward(const float* x, int64_t rows, int64_t f, float* y, cudaStream_t stream) {
  check_size("swiglu_forward", "rows", rows);
  check_size("swiglu_forward", "f", f);
  check_pointers("swiglu_forward", rows * f, x, y);
  const LaunchConfig c = grid_1d(rows * f);
  if (c.empty()) return;
  swiglu_forward_kernel<<<c.grid, c.block, 0, stream>>>(x, f, rows * f, y);
  TANDEM_CHECK_LAUNCH("swiglu_forward_kernel");
}

void launch_swiglu_backward(const float* x, const float* dy, int64_t rows, int64_t f, float* dx,
                            cudaStream_t stream) {
  check_size("swiglu_backward", "rows", rows);
  check_size("swiglu_backward", "f", f);
  check_pointers("swiglu_backward", rows * f, x, dy, dx);
  const LaunchConfig c = grid_1d(rows * f);
  if (c.empty()) return;
  swiglu_backward_kernel<<<c.grid, c.block, 0, stream>>>(x, dy, f, rows * f, dx);
  TANDEM_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace tandem::cuda
