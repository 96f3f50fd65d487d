// Deterministic double-accumulated reductions (ops_reduce.cuh): every block's partial is
// formed in a fixed order and the partials are summed in index order, so a result is
// byte-identical run to run for the same input and size.
#include "backends/cuda/ops_reduce.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

constexpr int kReduceBlock = 256;
constexpr int64_t kMaxRangePartials = 8192;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxColumnChunks = 256;
constexpr int64_t kMinRowsPerChunk = 64;

size_t align16(size_t bytes) { return (bytes + 15) / 16 * 16; }

// First pass: partials[blockIdx.x] = sum over this block's grid-stride elements of x or x^2.
template <bool kSquare>
__global__ void sum_partials_kernel(const float* x, int64_t n, double* partials) {
  double acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = x[i];
    acc += kSquare ? v * v : v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Second pass (one block): *result = sum of partials [count] in a fixed order.
__global__ void sum_final_kernel(const double* partials, int64_t count, double* result) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *result = acc;
}

// Ranges: block (x, y) sums squares of its grid-stride share of ranges y, y + gridDim.y, ...
__global__ void ranges_partials_kernel(const FloatRange* ranges, int64_t num_ranges, double* partials) {
  double acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < num_ranges; r += gridDim.y) {
    const float* data = ranges[r].data;
    const int64_t count = ranges[r].count;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
      const double v = data[i];
      acc += v * v;
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = acc;
}

// Column sums, pass 1: block (kColumnTile, kColumnRowLanes) over 32 columns and one chunk of
// rows; partials [chunks, cols].
__global__ void column_partials_kernel(ColumnTerm term, ColumnTermInputs in, int64_t rows, int64_t cols,
                                       int64_t rows_per_chunk, double* partials) {
  __shared__ double lane_sums[kColumnRowLanes][kColumnTile + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  double acc = 0;
  if (col < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kColumnRowLanes) {
      const int64_t i = r * cols + col;
      if (term == ColumnTerm::X) {
        acc += in.x[i];
      } else {
        const float mu = in.mean ? in.mean[r] : 0.0f;
        const float xhat = (in.x[i] - mu) * in.rstd[r];
        acc += static_cast<double>(in.dy[i]) * xhat;
      }
    }
  }
  lane_sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    double sum = 0;
    for (int lane = 0; lane < kColumnRowLanes; ++lane) sum += lane_sums[lane][threadIdx.x];
    partials[static_cast<int64_t>(blockIdx.y) * cols + col] = sum;
  }
}

// Column sums, pass 2: out[c] += sum over chunks of partials[chunk, c], in chunk order.
__global__ void column_final_kernel(const double* partials, int64_t chunks, int64_t cols, float* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    double sum = 0;
    for (int64_t k = 0; k < chunks; ++k) sum += partials[k * cols + c];
    out[c] += static_cast<float>(sum);
  }
}

void check_scratch(const char* op, size_t have, size_t need, const void* scratch) {
  if (have < need || (need > 0 && scratch == nullptr))
    throw std::invalid_argument(std::string(op) + ": scratch_bytes = " + std::to_string(have) + " but " +
                                std::to_string(need) + " are needed");
}

template <bool kSquare>
void launch_sum_impl(const char* op, const float* x, int64_t n, double* result, void* scratch, size_t scratch_bytes,
                     cudaStream_t stream) {
  check_size(op, "n", n);
  if (result == nullptr) throw std::invalid_argument(std::string(op) + ": result is null");
  if (n > 0 && x == nullptr) throw std::invalid_argument(std::string(op) + ": x is null");
  check_scratch(op, scratch_bytes, sum_scratch_bytes(n), scratch);
  if (n == 0) {
    TANDEM_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  const LaunchConfig c = reduce_config(n, kReduceBlock);
  auto* partials = static_cast<double*>(scratch);
  sum_partials_kernel<kSquare><<<c.grid, c.block, 0, stream>>>(x, n, partials);
  TANDEM_CHECK_LAUNCH("sum_partials_kernel");
  sum_final_kernel<<<1, kReduceBlock, 0, stream>>>(partials, c.grid, result);
  TANDEM_CHECK_LAUNCH("sum_final_kernel");
}

}  // namespace

size_t sum_scratch_bytes(int64_t n) {
  check_size("sum", "n", n);
  return static_cast<size_t>(reduce_config(n, kReduceBlock).grid) * sizeof(double);
}

void launch_sum(const float* x, int64_t n, double* result, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  launch_sum_impl<false>("sum", x, n, result, scratch, scratch_bytes, stream);
}

void launch_sum_of_squares(const float* x, int64_t n, double* result, void* scratch, size_t scratch_bytes,
                           cudaStream_t stream) {
  launch_sum_impl<true>("sum_of_squares", x, n, result, scratch, scratch_bytes, stream);
}

int64_t ranges_blocks_per_range(const FloatRange* ranges, int64_t num_ranges) {
  check_size("sum_of_squares_ranges", "num_ranges", num_ranges);
  if (num_ranges > 0 && ranges == nullptr) throw std::invalid_argument("sum_of_squares_ranges: ranges is null");
  int64_t max_count = 0;
  for (int64_t i = 0; i < num_ranges; ++i) {
    check_size("sum_of_squares_ranges", ("ranges[" + std::to_string(i) + "].count").c_str(), ranges[i].count);
    max_count = std::max(max_count, ranges[i].count);
  }
  const int64_t grid_y = std::min(num_ranges, kMaxGridY);
  const int64_t cap = std::max<int64_t>(1, kMaxRangePartials / std::max<int64_t>(1, grid_y));
  return std::clamp<int64_t>(ceil_div(max_count, kReduceBlock), 1, cap);
}

size_t sum_of_squares_ranges_scratch_bytes(const FloatRange* ranges, int64_t num_ranges) {
  const int64_t bpr = ranges_blocks_per_range(ranges, num_ranges);
  const int64_t grid_y = std::min(num_ranges, kMaxGridY);
  return align16(static_cast<size_t>(num_ranges) * sizeof(FloatRange)) + static_cast<size_t>(grid_y * bpr) * sizeof(double);
}

void launch_sum_of_squares_ranges(const FloatRange* ranges, int64_t num_ranges, double* result, void* scratch,
                                  size_t scratch_bytes, cudaStream_t stream) {
  const char* op = "sum_of_squares_ranges";
  if (result == nullptr) throw std::invalid_argument(std::string(op) + ": result is null");
  const size_t need = sum_of_squares_ranges_scratch_bytes(ranges, num_ranges);   // checks the counts
  for (int64_t i = 0; i < num_ranges; ++i)
    if (ranges[i].count > 0 && ranges[i].data == nullptr)
      throw std::invalid_argument(std::string(op) + ": ranges[" + std::to_string(i) + "].data is null");
  check_scratch(op, scratch_bytes, need, scratch);
  if (num_ranges == 0) {
    TANDEM_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  const int64_t grid_y = std::min(num_ranges, kMaxGridY), bpr = ranges_blocks_per_range(ranges, num_ranges);
  const size_t list_bytes = static_cast<size_t>(num_ranges) * sizeof(FloatRange);
  auto* dev_ranges = static_cast<FloatRange*>(scratch);
  auto* partials = reinterpret_cast<double*>(static_cast<char*>(scratch) + align16(list_bytes));
  // Pageable source: the copy is staged before cudaMemcpyAsync returns, so `ranges` may die after.
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(dev_ranges, ranges, list_bytes, cudaMemcpyHostToDevice, stream));
  const dim3 grid(static_cast<unsigned>(bpr), static_cast<unsigned>(grid_y));
  ranges_partials_kernel<<<grid, kReduceBlock, 0, stream>>>(dev_ranges, num_ranges, partials);
  TANDEM_CHECK_LAUNCH("ranges_partials_kernel");
  sum_final_kernel<<<1, kReduceBlock, 0, stream>>>(partials, grid_y * bpr, result);
  TANDEM_CHECK_LAUNCH("sum_final_kernel");
}

ColumnSumsConfig column_sums_config(int64_t rows, int64_t cols) {
  check_size("column_sums", "rows", rows);
  check_size("column_sums", "cols", cols);
  if (rows == 0 || cols == 0) return {};
  ColumnSumsConfig c;
  c.col_tiles = ceil_div(cols, kColumnTile);
  c.rows_per_chunk = std::max(kMinRowsPerChunk, ceil_div(rows, kMaxColumnChunks));
  c.chunks = ceil_div(rows, c.rows_per_chunk);
  if (c.col_tiles > kMaxGridX) throw std::invalid_argument("column_sums: cols = " + std::to_string(cols) + " is too large");
  return c;
}

size_t column_sums_scratch_bytes(int64_t rows, int64_t cols) {
  const ColumnSumsConfig c = column_sums_config(rows, cols);
  return static_cast<size_t>(c.chunks * cols) * sizeof(double);
}

void launch_column_sums(ColumnTerm term, const ColumnTermInputs& in, int64_t rows, int64_t cols, float* out,
                        void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  const char* op = "column_sums";
  const ColumnSumsConfig c = column_sums_config(rows, cols);
  check_scratch(op, scratch_bytes, column_sums_scratch_bytes(rows, cols), scratch);
  if (c.chunks == 0) return;
  if (in.x == nullptr || out == nullptr) throw std::invalid_argument("column_sums: x or out is null");
  if (term == ColumnTerm::DyXhat && (in.dy == nullptr || in.rstd == nullptr))
    throw std::invalid_argument("column_sums: dy or rstd is null for the dy * xhat term");
  auto* partials = static_cast<double*>(scratch);
  const dim3 grid(static_cast<unsigned>(c.col_tiles), static_cast<unsigned>(c.chunks));
  const dim3 block(kColumnTile, kColumnRowLanes);
  column_partials_kernel<<<grid, block, 0, stream>>>(term, in, rows, cols, c.rows_per_chunk, partials);
  TANDEM_CHECK_LAUNCH("column_partials_kernel");
  const LaunchConfig f = grid_1d(cols);
  column_final_kernel<<<f.grid, f.block, 0, stream>>>(partials, c.chunks, cols, out);
  TANDEM_CHECK_LAUNCH("column_final_kernel");
}

}  // namespace tandem::cuda
