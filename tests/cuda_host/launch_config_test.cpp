// Launch configuration of the CUDA kernels (backends/cuda/launch_config.h) and the sizes of the
// reductions' scratch (ops_reduce.cuh, ops_rope.cuh, ops_norm.cuh): pure host arithmetic.
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

#include "backends/cuda/launch_config.h"
#include "backends/cuda/ops_norm.cuh"
#include "backends/cuda/ops_reduce.cuh"
#include "backends/cuda/ops_rope.cuh"

namespace tandem::cuda {
namespace {

TEST(LaunchConfig, Grid1dCoversSmallSizesWithOneThreadPerElement) {
  for (int64_t n : {1, 31, 255, 256, 257, 1000, 4097}) {
    const LaunchConfig c = grid_1d(n);
    EXPECT_EQ(c.block, kDefaultBlock);
    EXPECT_EQ(c.grid, (n + kDefaultBlock - 1) / kDefaultBlock) << n;
    EXPECT_GE(c.grid * c.block, n);
    EXPECT_LT((c.grid - 1) * c.block, n);
  }
}

TEST(LaunchConfig, Grid1dCapsTheGridForHugeSizes) {
  const LaunchConfig c = grid_1d(int64_t{1} << 40);
  EXPECT_EQ(c.grid, kMaxGrid1d);
  EXPECT_EQ(grid_1d(1000, 128, 3).grid, 3);
}

TEST(LaunchConfig, Grid1dOfNothingLaunchesNothing) { EXPECT_TRUE(grid_1d(0).empty()); }

TEST(LaunchConfig, Grid1dRejectsBadSizesAndBlocks) {
  EXPECT_THROW(grid_1d(-1), std::invalid_argument);
  EXPECT_THROW(grid_1d(10, 100), std::invalid_argument);
  EXPECT_THROW(grid_1d(10, 2048), std::invalid_argument);
  EXPECT_THROW(grid_1d(10, 0), std::invalid_argument);
}

TEST(LaunchConfig, BlockForColumnsIsAWarpMultipleWithinLimits) {
  EXPECT_EQ(block_for_columns(0), 32);
  EXPECT_EQ(block_for_columns(1), 32);
  EXPECT_EQ(block_for_columns(33), 64);
  EXPECT_EQ(block_for_columns(1000), 1024);
  EXPECT_EQ(block_for_columns(100000), 1024);
  EXPECT_EQ(block_for_columns(1000, 4), 256);
  EXPECT_EQ(block_for_columns(1001, 4), 256);
  EXPECT_EQ(block_for_columns(1030, 4), 288);
  EXPECT_EQ(block_for_columns(100000, 4, 512), 512);
}

TEST(LaunchConfig, RowsConfigIsOneBlockPerRow) {
  const LaunchConfig c = rows_config(77, 4099);
  EXPECT_EQ(c.grid, 77);
  EXPECT_EQ(c.block, 1024);
  EXPECT_EQ(rows_config(5, 100).block, 32);   // 100 columns at 4 per thread: 25 threads -> one warp
  EXPECT_EQ(rows_config(5, 129).block, 64);
  EXPECT_TRUE(rows_config(0, 10).empty());
  EXPECT_THROW(rows_config(-1, 10), std::invalid_argument);
  EXPECT_THROW(rows_config(kMaxGridX + 1, 10), std::invalid_argument);
}

TEST(LaunchConfig, ReduceConfigBoundsThePartials) {
  EXPECT_EQ(reduce_config(1).grid, 1);
  EXPECT_EQ(reduce_config(257).grid, 2);
  EXPECT_EQ(reduce_config(int64_t{1} << 30).grid, kMaxReduceBlocks);
  EXPECT_TRUE(reduce_config(0).empty());
  EXPECT_EQ(warp_shared_bytes(256, 8), 64u);
  EXPECT_EQ(warp_shared_bytes(33, 4), 8u);
}

TEST(ReduceScratch, SumNeedsOneDoublePerBlock) {
  EXPECT_EQ(sum_scratch_bytes(0), 0u);
  EXPECT_EQ(sum_scratch_bytes(1000), 4 * sizeof(double));
  EXPECT_EQ(sum_scratch_bytes(int64_t{1} << 32), static_cast<size_t>(kMaxReduceBlocks) * sizeof(double));
}

TEST(ReduceScratch, ColumnSumsChunkRowsAndCoverEveryRowOnce) {
  for (int64_t rows : {1, 63, 64, 65, 1000, 16384, 100003}) {
    const ColumnSumsConfig c = column_sums_config(rows, 70);
    EXPECT_EQ(c.col_tiles, 3);
    EXPECT_GE(c.chunks * c.rows_per_chunk, rows) << rows;
    EXPECT_LT((c.chunks - 1) * c.rows_per_chunk, rows) << rows;
    EXPECT_LE(c.chunks, 256);
    EXPECT_EQ(column_sums_scratch_bytes(rows, 70), static_cast<size_t>(c.chunks * 70) * sizeof(double));
    EXPECT_EQ(norm_param_grads_scratch_bytes(rows, 70), column_sums_scratch_bytes(rows, 70));
  }
  EXPECT_EQ(column_sums_config(0, 5).chunks, 0);
  EXPECT_EQ(column_sums_scratch_bytes(0, 5), 0u);
  EXPECT_THROW(column_sums_config(-2, 5), std::invalid_argument);
}

TEST(ReduceScratch, RangesShareABoundedNumberOfPartials) {
  const std::vector<FloatRange> ranges = {{nullptr, 0}, {nullptr, 1000}, {nullptr, 100}};
  const int64_t bpr = ranges_blocks_per_range(ranges.data(), 3);
  EXPECT_EQ(bpr, 4);   // ceil(1000 / 256)
  // The range list (16-byte aligned) then one double per (range, block).
  EXPECT_EQ(sum_of_squares_ranges_scratch_bytes(ranges.data(), 3), 48u + 3 * 4 * sizeof(double));
  std::vector<FloatRange> many(10000, FloatRange{nullptr, int64_t{1} << 24});
  const int64_t bpr_many = ranges_blocks_per_range(many.data(), 10000);
  EXPECT_EQ(bpr_many, 1);   // 8192 partials at most: one block per range
  EXPECT_EQ(ranges_blocks_per_range(nullptr, 0), 1);
  const std::vector<FloatRange> bad = {{nullptr, -3}};
  EXPECT_THROW(ranges_blocks_per_range(bad.data(), 1), std::invalid_argument);
}

TEST(ReduceScratch, RopeTablesHoldCosAndSinPerPositionAndPair) {
  EXPECT_EQ(rope_scratch_bytes(7, 10), 2u * 7 * 5 * sizeof(float));
  EXPECT_EQ(rope_scratch_bytes(0, 64), 0u);
  EXPECT_THROW(rope_scratch_bytes(-1, 64), std::invalid_argument);
}

}  // namespace
}  // namespace tandem::cuda
