// Host bookkeeping of the CUDA memory pool (PoolArena), its sizing from a program and its
// exhaustion message: no device needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backends/cuda/cuda_pool.h"
#include "program/model_layout.h"
#include "tests/program_test_util.h"

namespace tandem::cuda {
namespace {

constexpr int64_t A = PoolArena::kAlignment;

TEST(PoolArena, RoundsRequestsToTheAlignment) {
  EXPECT_EQ(PoolArena::round_up(0), A);   // a zero-byte tensor still gets its own address
  EXPECT_EQ(PoolArena::round_up(1), A);
  EXPECT_EQ(PoolArena::round_up(A), A);
  EXPECT_EQ(PoolArena::round_up(A + 1), 2 * A);
  EXPECT_THROW(PoolArena::round_up(-4), std::invalid_argument);
  EXPECT_THROW(PoolArena(1000), std::invalid_argument);   // not a multiple of the alignment
  EXPECT_THROW(PoolArena(0), std::invalid_argument);
}

TEST(PoolArena, OffsetsAreAlignedAndDisjoint) {
  PoolArena arena(64 * A);
  std::vector<std::pair<int64_t, int64_t>> blocks;   // (offset, bytes)
  for (int64_t bytes : {1, 300, 256, 4000, 17, 513}) {
    const auto off = arena.allocate(bytes);
    ASSERT_TRUE(off.has_value()) << bytes;
    EXPECT_EQ(*off % A, 0);
    EXPECT_EQ(arena.block_bytes(*off), PoolArena::round_up(bytes));
    blocks.emplace_back(*off, PoolArena::round_up(bytes));
  }
  for (size_t i = 0; i < blocks.size(); ++i)
    for (size_t j = i + 1; j < blocks.size(); ++j) {
      const bool disjoint = blocks[i].first + blocks[i].second <= blocks[j].first ||
                            blocks[j].first + blocks[j].second <= blocks[i].first;
      EXPECT_TRUE(disjoint) << i << " overlaps " << j;
    }
}

TEST(PoolArena, BestFitTakesTheSmallestHoleThatFits) {
  PoolArena arena(64 * A);
  const int64_t a = *arena.allocate(4 * A);
  const int64_t sep1 = *arena.allocate(A);
  const int64_t b = *arena.allocate(2 * A);
  const int64_t sep2 = *arena.allocate(A);
  arena.release(a);   // hole of 4A
  arena.release(b);   // hole of 2A
  EXPECT_EQ(*arena.allocate(2 * A - 10), b);   // the 2A hole, not the 4A one nor the tail
  EXPECT_EQ(*arena.allocate(3 * A), a);        // then the 4A hole, leaving A of it free
  EXPECT_EQ(*arena.allocate(A), a + 3 * A);
  (void)sep1;
  (void)sep2;
}

TEST(PoolArena, FreedNeighboursCoalesce) {
  PoolArena arena(16 * A);
  std::vector<int64_t> offs;
  for (int i = 0; i < 16; ++i) offs.push_back(*arena.allocate(A));
  EXPECT_FALSE(arena.allocate(1).has_value());   // full
  // Fragmentation: every other block free gives 8A free but no room for 2A.
  for (int i = 0; i < 16; i += 2) arena.release(offs[static_cast<size_t>(i)]);
  EXPECT_EQ(arena.free_bytes(), 8 * A);
  EXPECT_EQ(arena.largest_free_block(), A);
  EXPECT_FALSE(arena.allocate(2 * A).has_value());
  // Freeing the rest in a shuffled order merges everything back into one block.
  std::vector<int64_t> rest;
  for (int i = 1; i < 16; i += 2) rest.push_back(offs[static_cast<size_t>(i)]);
  std::mt19937 rng(7);
  std::shuffle(rest.begin(), rest.end(), rng);
  for (int64_t o : rest) arena.release(o);
  EXPECT_EQ(arena.free_blocks(), 1u);
  EXPECT_EQ(arena.largest_free_block(), 16 * A);
  EXPECT_EQ(*arena.allocate(16 * A), 0);
}

TEST(PoolArena, TracksLiveAndPeakBytes) {
  PoolArena arena(32 * A);
  const int64_t x = *arena.allocate(3 * A);
  const int64_t y = *arena.allocate(5 * A);
  EXPECT_EQ(arena.used_bytes(), 8 * A);
  arena.release(x);
  EXPECT_EQ(arena.used_bytes(), 5 * A);
  EXPECT_EQ(arena.peak_used_bytes(), 8 * A);
  arena.reset_peak();
  EXPECT_EQ(arena.peak_used_bytes(), 5 * A);
  arena.release(y);
  EXPECT_EQ(arena.used_bytes(), 0);
  EXPECT_EQ(arena.live_blocks(), 0u);
}

TEST(PoolArena, ExhaustionIsReportedNotFatal) {
  PoolArena arena(8 * A);
  ASSERT_TRUE(arena.allocate(6 * A).has_value());
  EXPECT_FALSE(arena.allocate(3 * A).has_value());
  EXPECT_TRUE(arena.allocate(2 * A).has_value());
  EXPECT_FALSE(arena.allocate(1).has_value());
}

TEST(PoolArena, StreamTaggedBlocksWaitForTheirFence) {
  PoolArena arena(8 * A);
  const int64_t a = *arena.allocate(4 * A);
  const int64_t b = *arena.allocate(4 * A);
  arena.release(a, /*tag=*/2, /*fence=*/5);   // stream 2 may reuse it at once, others after fence 5
  EXPECT_FALSE(arena.allocate(A, 1).has_value());
  EXPECT_FALSE(arena.allocate(A).has_value());   // kAnyStream asks for a block free for everyone
  const int64_t again = *arena.allocate(A, 2);
  EXPECT_EQ(again, a);
  arena.release(again, 2, 6);   // merges with the rest of a's block: fence 6 now
  arena.retire(2, 5);
  EXPECT_FALSE(arena.allocate(A, 1).has_value());
  arena.retire(2, 6);
  EXPECT_EQ(*arena.allocate(4 * A, 1), a);
  arena.release(b, 3, 1);   // a block of another stream does not merge with an untagged one
  arena.release(a);
  EXPECT_EQ(arena.free_blocks(), 2u);
  arena.retire(3, 1);
  EXPECT_EQ(arena.free_blocks(), 1u);
  EXPECT_EQ(arena.largest_free_block(), 8 * A);
}

TEST(PoolArena, ReleaseOfAnUnknownOffsetIsAProgrammerError) {
  PoolArena arena(4 * A);
  EXPECT_DEATH(arena.release(A), "not allocated");
}

RankProgram program_of(std::vector<Buffer> buffers, std::vector<std::pair<OpKind, int32_t>> steps) {
  RankProgram p;
  p.buffers = std::move(buffers);
  for (const auto& [kind, buffer] : steps) {
    Instruction ins;
    ins.kind = kind;
    ins.buffer = buffer;
    ins.bytes = p.buffers[static_cast<size_t>(buffer)].bytes;
    p.instructions.push_back(ins);
  }
  return p;
}

TEST(PoolSizing, CountsTheProgramInFp32Storage) {
  const double n = 1000;   // parameters
  // bf16: weights 2, gradients 4, optimizer 12 bytes per parameter; activations 2 per element.
  // (role, part, layer, microbatch, chunk, experts, bytes): param/L0, grad/L0, optim/L0, act/layer/L0/mb0, mb1.
  const RankProgram p = program_of({{BufferRole::Parameter, BufferPart::Layer, 0, -1, -1, false, 2 * n},
                                    {BufferRole::Gradient, BufferPart::Layer, 0, -1, -1, false, 4 * n},
                                    {BufferRole::OptimizerState, BufferPart::Layer, 0, -1, -1, false, 12 * n},
                                    {BufferRole::Activation, BufferPart::Layer, 0, 0, 0, false, 3000},
                                    {BufferRole::Activation, BufferPart::Layer, 0, 1, 0, false, 5000}},
                                   {{OpKind::Alloc, 0}, {OpKind::Alloc, 1}, {OpKind::Alloc, 2}, {OpKind::Alloc, 3},
                                    {OpKind::Free, 3}, {OpKind::Alloc, 4}, {OpKind::Free, 4}});
  const PoolSizing s = size_pool(p, DType::BF16);
  EXPECT_DOUBLE_EQ(s.program_peak_bytes, 18 * n + 5000);
  EXPECT_DOUBLE_EQ(s.fp32_peak_bytes, 16 * n + 2 * 5000);   // 4 + 4 + 8 per parameter, fp32 activations
  EXPECT_DOUBLE_EQ(s.margin_bytes, kPoolMarginFraction * s.fp32_peak_bytes + kPoolMarginBytes);
  EXPECT_GE(s.pool_bytes, s.fp32_peak_bytes + s.margin_bytes);
  EXPECT_LT(s.pool_bytes, s.fp32_peak_bytes + s.margin_bytes + double(A));
  EXPECT_EQ(static_cast<int64_t>(s.pool_bytes) % A, 0);
}

TEST(PoolSizing, AnFp32ProgramNeedsItsOwnPeak) {
  for (const std::string dtype : {"--fp32", "--bf16"}) {
    const Job job = testing::tiny_llama({"--pipeline-model-parallel-size", "2", "--global-batch-size", "4", dtype}, 2);
    const auto lowered = testing::lower_all(job);
    for (const RankProgram& p : lowered.programs) {
      const DType program_dtype = lower::dims_for_job(job, lowered.grid).dtype;
      const PoolSizing s = size_pool(p, program_dtype);
      EXPECT_GT(s.program_peak_bytes, 0);
      if (program_dtype == DType::FP32) EXPECT_DOUBLE_EQ(s.fp32_peak_bytes, s.program_peak_bytes);
      else EXPECT_GT(s.fp32_peak_bytes, 0.5 * s.program_peak_bytes);
      EXPECT_GT(s.pool_bytes, s.fp32_peak_bytes);
    }
  }
}

TEST(PoolSizing, ChoosesThePredictedSizeWithinTheFreeMemory) {
  PoolSizing s;
  s.fp32_peak_bytes = 1e9;
  s.margin_bytes = 0.25e9 + kPoolMarginBytes;
  s.pool_bytes = 1024.0 * std::ceil((s.fp32_peak_bytes + s.margin_bytes) / 1024.0);
  const double roomy = 80e9, tight = 1.1e9 + kReservedDeviceBytes;
  EXPECT_DOUBLE_EQ(choose_pool_bytes(s, roomy, ""), s.pool_bytes);
  // Little free memory: the pool shrinks to what is there (above the peak, below the margin).
  const double tight_pool = choose_pool_bytes(s, tight, "");
  EXPECT_GE(tight_pool, s.fp32_peak_bytes);
  EXPECT_LE(tight_pool, tight - kReservedDeviceBytes);
  // Not even the peak fits: a user error that says how much is needed.
  try {
    choose_pool_bytes(s, 0.5e9 + kReservedDeviceBytes, "");
    ADD_FAILURE() << "expected an error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("953.7 MiB"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--micro-batch-size"), std::string::npos) << e.what();
  }
  // $TANDEM_CUDA_POOL_BYTES overrides: a byte count or 0 (grow on demand).
  EXPECT_DOUBLE_EQ(choose_pool_bytes(s, roomy, "0"), 0.0);
  EXPECT_DOUBLE_EQ(choose_pool_bytes(s, roomy, "2e9"), 2e9);
  EXPECT_THROW(choose_pool_bytes(s, roomy, "lots"), UserError);
  EXPECT_THROW(choose_pool_bytes(s, roomy, "-5"), UserError);
  EXPECT_THROW(choose_pool_bytes(s, roomy, "1e12"), UserError);
}

TEST(PoolExhaustedMessage, SaysSizesAndWhatToDo) {
  PoolUsage u;
  u.device = 3;
  u.pool_bytes = int64_t{512} << 20;
  u.requested_bytes = int64_t{96} << 20;
  u.live_bytes = int64_t{480} << 20;
  u.free_bytes = int64_t{32} << 20;
  u.largest_free = int64_t{16} << 20;
  const std::string m = pool_exhausted_message(u);
  EXPECT_NE(m.find("device 3"), std::string::npos) << m;
  EXPECT_NE(m.find("512.0 MiB"), std::string::npos) << m;
  EXPECT_NE(m.find("96.0 MiB requested"), std::string::npos) << m;
  EXPECT_NE(m.find("480.0 MiB live"), std::string::npos) << m;
  EXPECT_NE(m.find("--micro-batch-size"), std::string::npos) << m;
  EXPECT_NE(m.find("recompute"), std::string::npos) << m;
}

}  // namespace
}  // namespace tandem::cuda
