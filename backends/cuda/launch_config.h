#pragma once
// Launch configuration of the CUDA kernels, computed on the host from sizes alone (no CUDA
// headers, so tests run without a device). Shared by every backends/cuda/ops_*.cu file.
//
//   grid_1d(n)              grid-stride loop over n elements: block 256, grid capped
//   rows_config(rows, cols) one block per row, block size from the column count (a multiple of
//                           the warp size, 32..1024), grid = rows
//   reduce_config(n)        a two-pass block reduction: blocks of 256 threads, at most
//                           kMaxReduceBlocks partials (the second pass is one block over them)
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tandem::cuda {

inline constexpr int kWarpSize = 32;
inline constexpr int kDefaultBlock = 256;
inline constexpr int64_t kMaxGrid1d = 65535LL * 8;   // enough blocks to fill any SM count
inline constexpr int kMaxReduceBlocks = 1024;        // partials of a two-pass reduction
inline constexpr int64_t kMaxGridX = 2147483647LL;   // CUDA's grid.x limit

struct LaunchConfig {
  int64_t grid = 0;   // blocks (0: nothing to launch)
  int block = 0;      // threads per block
  bool empty() const { return grid == 0; }
};

// Rounds up a / b for positive b.
constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Throws std::invalid_argument "<op>: <field> = <value> ..." for a negative or too large size.
inline void check_size(const char* op, const char* field, int64_t value, int64_t max = INT64_MAX) {
  if (value < 0 || value > max)
    throw std::invalid_argument(std::string(op) + ": " + field + " = " + std::to_string(value) +
                                (value < 0 ? " is negative" : " is too large (max " + std::to_string(max) + ")"));
}

// A grid-stride loop over n elements: kernels loop `for (i = blockIdx.x * blockDim.x + threadIdx.x;
// i < n; i += gridDim.x * blockDim.x)`, so any n fits in the capped grid.
inline LaunchConfig grid_1d(int64_t n, int block = kDefaultBlock, int64_t max_grid = kMaxGrid1d) {
  check_size("grid_1d", "n", n);
  if (block <= 0 || block > 1024 || block % kWarpSize != 0)
    throw std::invalid_argument("grid_1d: block = " + std::to_string(block) + " is not a multiple of 32 in 32..1024");
  if (n == 0) return {0, block};
  const int64_t grid = ceil_div(n, block);
  return {grid < max_grid ? grid : max_grid, block};
}

// Threads for a block that strides over `cols` columns: the smallest multiple of 32 covering
// cols / per_thread, within [32, max_block].
inline int block_for_columns(int64_t cols, int per_thread = 1, int max_block = 1024) {
  check_size("block_for_columns", "cols", cols);
  const int64_t want = ceil_div(cols, per_thread > 0 ? per_thread : 1);
  int64_t block = ceil_div(want, kWarpSize) * kWarpSize;
  if (block < kWarpSize) block = kWarpSize;
  if (block > max_block) block = max_block;
  return static_cast<int>(block);
}

// One block per row: grid = rows, block from the column count (each thread handles at least
// `per_thread` columns before the block grows; threads stride over the row).
inline LaunchConfig rows_config(int64_t rows, int64_t cols, int per_thread = 4, int max_block = 1024) {
  check_size("rows_config", "rows", rows, kMaxGridX);
  check_size("rows_config", "cols", cols);
  if (rows == 0) return {0, kWarpSize};
  return {rows, block_for_columns(cols, per_thread, max_block)};
}

// First pass of a two-pass reduction over n elements: `grid` partials, one per block of `block`
// threads (grid-stride inside), then one block of `block` threads reduces the partials.
inline LaunchConfig reduce_config(int64_t n, int block = kDefaultBlock, int max_blocks = kMaxReduceBlocks) {
  check_size("reduce_config", "n", n);
  if (n == 0) return {0, block};
  const int64_t grid = ceil_div(n, block);
  return {grid < max_blocks ? grid : max_blocks, block};
}

// Shared memory for one value of `bytes_per_value` per warp of a block (block reductions).
inline size_t warp_shared_bytes(int block, size_t bytes_per_value) {
  return static_cast<size_t>(ceil_div(block, kWarpSize)) * bytes_per_value;
}

}  // namespace tandem::cuda
