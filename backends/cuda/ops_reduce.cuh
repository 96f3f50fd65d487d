#pragma once
// Deterministic reductions over fp32 device buffers, accumulated in double (host-includable).
//
//   launch_sum / launch_sum_of_squares: x [n] -> *result (one double in device memory), two
//     passes: reduce_config(n) blocks each write a partial (fixed grid-stride order), then one
//     block sums the partials in order.
//   launch_sum_of_squares_ranges: the same over a list of (pointer, count) ranges in one launch
//     (the global gradient norm's local sum of squares).
//   launch_column_sums: out [cols] += column sums of a [rows, cols] term, two passes through
//     double partials [chunks, cols] (column_sums_config); no atomics.
// Scratch sizes come from the *_scratch_bytes functions; the caller provides device scratch.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tandem::cuda {

// Bytes of device scratch for launch_sum / launch_sum_of_squares over n elements (partials).
size_t sum_scratch_bytes(int64_t n);
// *result (device double) = sum_i x[i] / sum_i x[i]^2 over x [n].
void launch_sum(const float* x, int64_t n, double* result, void* scratch, size_t scratch_bytes, cudaStream_t stream);
void launch_sum_of_squares(const float* x, int64_t n, double* result, void* scratch, size_t scratch_bytes,
                           cudaStream_t stream);

struct FloatRange {
  const float* data = nullptr;   // device pointer
  int64_t count = 0;             // elements
};
// Blocks per range (grid.x) of the ranges' first pass: from the largest count, capped so that the
// partials stay few.
int64_t ranges_blocks_per_range(const FloatRange* ranges, int64_t num_ranges);
size_t sum_of_squares_ranges_scratch_bytes(const FloatRange* ranges, int64_t num_ranges);
// ranges [num_ranges] is HOST memory listing device buffers. *result (device double) = sum over
// ranges of sum_i data[i]^2. The range list is copied into the scratch on the stream.
void launch_sum_of_squares_ranges(const FloatRange* ranges, int64_t num_ranges, double* result, void* scratch,
                                  size_t scratch_bytes, cudaStream_t stream);

// Column reduction layout: 32 columns per block (x), kColumnRowLanes threads over rows (y),
// `chunks` blocks over rows (grid.y), each over `rows_per_chunk` consecutive rows.
inline constexpr int kColumnTile = 32;
inline constexpr int kColumnRowLanes = 8;
struct ColumnSumsConfig {
  int64_t col_tiles = 0, chunks = 0, rows_per_chunk = 0;
};
ColumnSumsConfig column_sums_config(int64_t rows, int64_t cols);
size_t column_sums_scratch_bytes(int64_t rows, int64_t cols);

// What is summed per element (r, c) of the [rows, cols] inputs.
enum class ColumnTerm {
  X,        // x[r, c]
  DyXhat,   // dy[r, c] * (x[r, c] - mean[r]) * rstd[r]   (norm dgamma; mean null for RMSNorm)
};
struct ColumnTermInputs {
  const float* x = nullptr;      // [rows, cols]
  const float* dy = nullptr;     // [rows, cols] (DyXhat)
  const float* mean = nullptr;   // [rows] (DyXhat, LayerNorm) or null
  const float* rstd = nullptr;   // [rows] (DyXhat)
};
// out [cols] += sum_r term(r, c), the sum formed in double and added once in fp32.
void launch_column_sums(ColumnTerm term, const ColumnTermInputs& in, int64_t rows, int64_t cols, float* out,
                        void* scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace tandem::cuda
