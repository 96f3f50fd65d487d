// Elementwise kernels (ops_elementwise.cuh): grid-stride loops over flat fp32 buffers.
#include "backends/cuda/ops_elementwise.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/dropout_math.h"

namespace tandem::cuda {
namespace {

__device__ inline int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void fill_kernel(float* x, int64_t n, float value) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] = value;
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) out[i] = a[i] + b[i];
}

__global__ void axpy_kernel(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) y[i] += alpha * x[i];
}

__global__ void scale_kernel(float* x, int64_t n, float factor) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] *= factor;
}

// x [rows, cols]: element i belongs to column i % cols.
__global__ void add_row_vector_kernel(float* x, const float* bias, int64_t n, int64_t cols) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] += bias[i % cols];
}

// dst [rows, width] from src [rows, cols] at column offset begin.
__global__ void copy_columns_kernel(const float* src, int64_t cols, int64_t begin, float* dst, int64_t width,
                                    int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const int64_t r = i / width, c = i % width;
    dst[i] = src[r * cols + begin + c];
  }
}

// x [rows, cols], row_ids [rows]: the CPU's keep hash per (global row, column).
__global__ void dropout_kernel(float* x, const int64_t* row_ids, int64_t cols, int64_t n, float p, float scale,
                               uint64_t key) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const int64_t r = i / cols, c = i % cols;
    const uint64_t row_seed = kmath::hidden_dropout_row_seed(key, row_ids[r]);
    x[i] = kmath::hidden_dropout_keep(row_seed, c, p) ? x[i] * scale : 0.0f;
  }
}

void check_pointer(const char* op, const char* field, const void* p, int64_t n) {
  if (n > 0 && p == nullptr) throw std::invalid_argument(std::string(op) + ": " + field + " is null");
}

}  // namespace

void launch_fill(float* x, int64_t n, float value, cudaStream_t stream) {
  check_size("fill", "n", n);
  check_pointer("fill", "x", x, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  fill_kernel<<<c.grid, c.block, 0, stream>>>(x, n, value);
  TANDEM_CHECK_LAUNCH("fill_kernel");
}

void launch_copy(const float* src, float* dst, int64_t n, cudaStream_t stream) {
  check_size("copy", "n", n);
  check_pointer("copy", "src", src, n);
  check_pointer("copy", "dst", dst, n);
  if (n == 0 || src == dst) return;
  if (src < dst + n && dst < src + n) throw std::invalid_argument("copy: src and dst partly overlap");
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice,
                                    stream));
}

void launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream) {
  check_size("add", "n", n);
  check_pointer("add", "a", a, n);
  check_pointer("add", "b", b, n);
  check_pointer("add", "out", out, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  add_kernel<<<c.grid, c.block, 0, stream>>>(a, b, out, n);
  TANDEM_CHECK_LAUNCH("add_kernel");
}

void launch_axpy(float alpha, const float* x, float* y, int64_t n, cudaStream_t stream) {
  check_size("axpy", "n", n);
  check_pointer("axpy", "x", x, n);
  check_pointer("axpy", "y", y, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  axpy_kernel<<<c.grid, c.block, 0, stream>>>(alpha, x, y, n);
  TANDEM_CHECK_LAUNCH("axpy_kernel");
}

void launch_scale(float* x, int64_t n, float factor, cudaStream_t stream) {
  check_size("scale", "n", n);
  check_pointer("scale", "x", x, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  scale_kernel<<<c.grid, c.block, 0, stream>>>(x, n, factor);
  TANDEM_CHECK_LAUNCH("scale_kernel");
}

void launch_add_row_vector(float* x, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  check_size("add_row_vector", "rows", rows);
  check_size("add_row_vector", "cols", cols);
  if (cols == 0 && rows > 0) throw std::invalid_argument("add_row_vector: cols = 0 with rows = " + std::to_string(rows));
  const int64_t n = rows * cols;
  check_pointer("add_row_vector", "x", x, n);
  check_pointer("add_row_vector", "bias", bias, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  add_row_vector_kernel<<<c.grid, c.block, 0, stream>>>(x, bias, n, cols);
  TANDEM_CHECK_LAUNCH("add_row_vector_kernel");
}

void launch_copy_columns(const float* src, int64_t rows, int64_t cols, int64_t begin, float* dst, int64_t width,
                         cudaStream_t stream) {
  check_size("copy_columns", "rows", rows);
  check_size("copy_columns", "cols", cols);
  check_size("copy_columns", "width", width);
  if (begin < 0 || begin + width > cols)
    throw std::invalid_argument("copy_columns: columns [" + std::to_string(begin) + ", " + std::to_string(begin + width) +
                                ") outside a source of " + std::to_string(cols) + " columns");
  const int64_t n = rows * width;
  check_pointer("copy_columns", "src", src, n);
  check_pointer("copy_columns", "dst", dst, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  copy_columns_kernel<<<c.grid, c.block, 0, stream>>>(src, cols, begin, dst, width, n);
  TANDEM_CHECK_LAUNCH("copy_columns_kernel");
}

void launch_dropout(float* x, const int64_t* row_ids, int64_t rows, int64_t cols, float p, uint64_t key,
                    cudaStream_t stream) {
  check_size("dropout", "rows", rows);
  check_size("dropout", "cols", cols);
  if (!(p >= 0.0f && p <= 1.0f)) throw std::invalid_argument("dropout: p = " + std::to_string(p) + " is not in [0, 1]");
  const int64_t n = rows * cols;
  check_pointer("dropout", "x", x, n);
  check_pointer("dropout", "row_ids", row_ids, n);
  const LaunchConfig c = grid_1d(n);
  if (c.empty()) return;
  dropout_kernel<<<c.grid, c.block, 0, stream>>>(x, row_ids, cols, n, p, 1.0f / (1.0f - p), key);
  TANDEM_CHECK_LAUNCH("dropout_kernel");
}

}  // namespace tandem::cuda
