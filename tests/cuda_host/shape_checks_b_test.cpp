// Host-side parts of the CUDA kernels of part B (GEMM mapping to cuBLASLt, shape rules, flash
// attention configuration, MoE index plans, launcher argument checks): no device needed.
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/ops_permute.h"
#include "backends/cpu/ops_router.h"
#include "backends/cuda/ops_attention.cuh"
#include "backends/cuda/ops_convert.cuh"
#include "backends/cuda/ops_flash_attention.cuh"
#include "backends/cuda/ops_gemm.cuh"
#include "backends/cuda/ops_moe.cuh"
#include "backends/cuda/ops_qkv.cuh"
#include "backends/cuda/gemm_mapping.h"
#include "backends/executor/shape_rules.h"

namespace tandem::cuda {
namespace {

using namespace tandem::exec;   // the shared shape rules (backends/executor/shape_rules.h)

using exec::Shape;
using exec::WeightLayout;

std::vector<float> random_values(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// What cuBLASLt computes for the column-major problem: D = op(A') op(B') + beta C, with A' our B
// buffer and B' our A buffer (the operand swap lt_matmul does).
void column_major_product(const ColumnMajorGemm& g, const float* cublas_a, const float* cublas_b, float beta,
                          float* c) {
  for (uint64_t i = 0; i < g.m; ++i)
    for (uint64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (uint64_t l = 0; l < g.k; ++l) {
        const float a = g.trans_a ? cublas_a[l + i * g.ld_a] : cublas_a[i + l * g.ld_a];
        const float b = g.trans_b ? cublas_b[j + l * g.ld_b] : cublas_b[l + j * g.ld_b];
        s += static_cast<double>(a) * b;
      }
      float& out = c[i + j * g.ld_c];
      out = static_cast<float>(s + beta * out);
    }
}

// Runs an LtGemm on host buffers through the column-major emulation.
void emulate(const LtGemm& g, const std::vector<float>& a, const std::vector<float>& b, std::vector<float>& c) {
  const ColumnMajorGemm cm = to_column_major(g.trans_a, g.trans_b, g.m, g.n, g.k);
  ASSERT_EQ((cm.trans_a ? cm.cols_a : cm.rows_a), cm.m);
  ASSERT_EQ((cm.trans_a ? cm.rows_a : cm.cols_a), cm.k);
  ASSERT_EQ((cm.trans_b ? cm.cols_b : cm.rows_b), cm.k);
  ASSERT_EQ((cm.trans_b ? cm.rows_b : cm.cols_b), cm.n);
  ASSERT_EQ(cm.rows_a * cm.cols_a, b.size());
  ASSERT_EQ(cm.rows_b * cm.cols_b, a.size());
  ASSERT_EQ(cm.rows_c * cm.cols_c, c.size());
  column_major_product(cm, b.data(), a.data(), g.beta, c.data());
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::abs(want[i]))) << what << " " << i;
}

cpu::WeightLayout cpu_layout(WeightLayout l) {
  return l == WeightLayout::InOut ? cpu::WeightLayout::InOut : cpu::WeightLayout::OutIn;
}

TEST(GemmMapping, RowMajorProductsThroughColumnMajorDescriptorsEqualTheCpuLinearLayer) {
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t m = 7, k = 13, n = 5;   // odd sizes: any ld mix-up shows
  for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
    const Shape ws = linear_weight_shape(layout, k, n);
    std::vector<float> x = random_values(rng, m * k), w = random_values(rng, k * n), dy = random_values(rng, m * n);
    const LinearDims d = check_gemm_forward({m, k}, ws, nullptr, layout, {m, n});
    std::vector<float> y(static_cast<size_t>(m * n), 0.0f), y_ref(y.size());
    emulate(linear_forward_gemm(d, layout), x, w, y);
    cpu::gemm_forward(cpu::make_view(std::span<const float>(x), {m, k}), cpu::make_view(std::span<const float>(w), ws),
                      {}, cpu_layout(layout), cpu::make_view(std::span<float>(y_ref), {m, n}));
    expect_close(y, y_ref, "forward");

    std::vector<float> dx(static_cast<size_t>(m * k), 0.0f), dx_ref(dx.size());
    emulate(linear_grad_input_gemm(check_gemm_grad_input({m, n}, ws, layout, {m, k}), layout), dy, w, dx);
    cpu::gemm_grad_input(cpu::make_view(std::span<const float>(dy), {m, n}), cpu::make_view(std::span<const float>(w), ws),
                         cpu_layout(layout), cpu::make_view(std::span<float>(dx_ref), {m, k}));
    expect_close(dx, dx_ref, "grad input");

    // Weight gradient accumulates (beta = 1): start both from the same non-zero values.
    std::vector<float> dw = random_values(rng, k * n), dw_ref = dw;
    const LtGemm gw = linear_grad_weight_gemm(check_gemm_grad_weight({m, k}, {m, n}, layout, ws, nullptr), layout);
    EXPECT_EQ(gw.beta, 1.0f);
    if (layout == WeightLayout::InOut) emulate(gw, x, dy, dw);
    else emulate(gw, dy, x, dw);
    cpu::gemm_grad_weight(cpu::make_view(std::span<const float>(x), {m, k}), cpu::make_view(std::span<const float>(dy), {m, n}),
                          cpu_layout(layout), cpu::make_view(std::span<float>(dw_ref), ws), {});
    expect_close(dw, dw_ref, "grad weight");
  }
}

TEST(GemmMapping, TransposedOperandsMapToTheirLeadingDimensions) {
  const ColumnMajorGemm g = to_column_major(true, false, 3, 4, 5);   // A stored [5, 3], B [5, 4]
  EXPECT_FALSE(g.trans_a);   // cuBLAS A = our B, not transposed
  EXPECT_TRUE(g.trans_b);
  EXPECT_EQ(g.ld_a, 4u);
  EXPECT_EQ(g.ld_b, 3u);
  EXPECT_EQ(g.ld_c, 4u);
  EXPECT_EQ(g.m, 4u);
  EXPECT_EQ(g.n, 3u);
  EXPECT_EQ(g.k, 5u);
}

TEST(GemmLauncher, RejectsBadArgumentsBeforeTouchingTheDevice) {
  LtGemm g;
  g.m = 2;
  g.n = 2;
  g.k = 2;
  EXPECT_THROW(lt_matmul(nullptr, nullptr, 0, g, nullptr), std::invalid_argument);   // null buffers
  g.m = -1;
  EXPECT_THROW(lt_matmul(nullptr, nullptr, 0, g, nullptr), std::invalid_argument);
  LtGemm empty;   // m = n = 0: nothing to do
  EXPECT_NO_THROW(lt_matmul(nullptr, nullptr, 0, empty, nullptr));
  float c = 0;
  uint16_t a = 0;
  LtGemm half;
  half.m = half.n = half.k = 1;
  half.a = half.b = &a;
  half.c = &c;
  half.beta = 0.5f;
  EXPECT_THROW(lt_matmul(nullptr, nullptr, 0, half, nullptr), std::invalid_argument);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(uintptr_t{4096})), 256u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(uintptr_t{4100})), 4u);
  EXPECT_EQ(pointer_alignment(reinterpret_cast<const void*>(uintptr_t{4098})), 2u);
}

TEST(FlashAttentionConfig, HeadDimsPadToInstantiatedSizesAndFitSm80SharedMemory) {
  EXPECT_EQ(flash_head_dim(1), 64);
  EXPECT_EQ(flash_head_dim(64), 64);
  EXPECT_EQ(flash_head_dim(65), 128);
  EXPECT_EQ(flash_head_dim(200), 256);
  EXPECT_THROW(flash_head_dim(0), std::invalid_argument);
  EXPECT_THROW(flash_head_dim(257), std::invalid_argument);
  const size_t sm80_optin = 163 * 1024;   // A100's per-block opt-in limit
  for (int d : {64, 128, 256})
    for (FlashKernel kind : {FlashKernel::Forward, FlashKernel::BackwardKv, FlashKernel::BackwardQ})
      EXPECT_LE(flash_shared_bytes(kind, d), sm80_optin) << "d " << d;
  // Forward at d = 64: Q, K, V tiles of 32 x 65 floats, the 32 x 33 probability tile, 64 positions.
  EXPECT_EQ(flash_shared_bytes(FlashKernel::Forward, 64), (3 * 32 * 65 + 32 * 33 + 64) * sizeof(float));
}

TEST(FlashAttentionConfig, GridsCoverQueryOrKeyTilesTimesHeads) {
  AttentionProblem p;
  p.s_q = 33;
  p.s_kv = 65;
  p.b = 2;
  p.hq = 6;
  p.hkv = 2;
  p.d = 40;
  const FlashGrid fwd = flash_grid(FlashKernel::Forward, p);
  EXPECT_EQ(fwd.x, 2);
  EXPECT_EQ(fwd.y, 12);
  const FlashGrid kv = flash_grid(FlashKernel::BackwardKv, p);
  EXPECT_EQ(kv.x, 3);
  EXPECT_EQ(kv.y, 4);
  p.s_q = 0;
  EXPECT_TRUE(flash_grid(FlashKernel::BackwardQ, p).empty());
  p.hq = 70000;
  p.hkv = 1;
  p.b = 1;
  EXPECT_THROW(flash_grid(FlashKernel::Forward, p), std::invalid_argument);
}

TEST(FlashAttentionConfig, TileBoundsFollowArbitraryPositions) {
  std::vector<int32_t> pos{5, 1, 9, 3, 7};
  EXPECT_EQ(tile_max_positions(pos, 2), (std::vector<int32_t>{5, 9, 7}));
  EXPECT_EQ(tile_min_positions(pos, 2), (std::vector<int32_t>{1, 3, 7}));
  EXPECT_TRUE(tile_max_positions({}, 32).empty());
}

TEST(AttentionShapes, InputsOutputsAndArgumentsAreChecked) {
  exec::AttentionArgs args;
  const AttentionShape a = check_attention_inputs("attention_forward", {5, 2, 4, 8}, {7, 2, 2, 8}, {7, 2, 2, 8}, args);
  EXPECT_EQ(a.s_kv, 7);
  EXPECT_EQ(a.hkv, 2);
  EXPECT_THROW(check_attention_inputs("attention_forward", {5, 2, 3, 8}, {7, 2, 2, 8}, {7, 2, 2, 8}, args),
               std::invalid_argument);   // 3 heads over 2 kv heads
  EXPECT_THROW(check_attention_outputs("attention_forward", a, {5, 2, 4, 8}, {5, 2, 4, 8}, {2, 4, 6}),
               std::invalid_argument);
  const std::vector<int32_t> positions{0, 1, 2};
  args.q_positions = positions;
  EXPECT_THROW(check_attention_inputs("attention_forward", {5, 2, 4, 8}, {7, 2, 2, 8}, {7, 2, 2, 8}, args),
               std::invalid_argument);
  args.q_positions = {};
  args.dropout = 0.1f;   // dropout needs the samples of the batch
  EXPECT_THROW(check_attention_inputs("attention_forward", {5, 2, 4, 8}, {7, 2, 2, 8}, {7, 2, 2, 8}, args),
               std::invalid_argument);
  EXPECT_FLOAT_EQ(resolved_softmax_scale(exec::AttentionArgs{}, 16), 0.25f);
  EXPECT_THROW(check_attention_merge({4, 1, 2, 8}, {1, 2, 4}, {3, 1, 2, 8}, {1, 2, 3}, 2), std::invalid_argument);
  EXPECT_NO_THROW(check_attention_merge({4, 1, 2, 8}, {1, 2, 4}, {3, 1, 2, 8}, {1, 2, 3}, 1));
}

TEST(AttentionLaunchers, RejectBadProblemsOnTheHost) {
  AttentionProblem p;
  p.s_q = 4;
  p.s_kv = 4;
  p.b = 1;
  p.hq = 3;
  p.hkv = 2;
  p.d = 8;
  p.scale = 0.5f;
  EXPECT_THROW(check_attention_problem("op", p), std::invalid_argument);   // hq % hkv
  p.hq = 4;
  EXPECT_THROW(check_attention_problem("op", p), std::invalid_argument);   // positions missing
  const int32_t pos[4] = {0, 1, 2, 3};
  p.q_pos = pos;
  p.kv_pos = pos;
  EXPECT_NO_THROW(check_attention_problem("op", p));
  p.dropout = 0.2f;
  EXPECT_THROW(check_attention_problem("op", p), std::invalid_argument);   // samples missing
  p.dropout = 0.0f;
  p.scale = 0.0f;
  EXPECT_THROW(check_attention_problem("op", p), std::invalid_argument);
  EXPECT_THROW(launch_attention_merge(nullptr, nullptr, nullptr, nullptr, 4, 1, 1, 8, 3, 2, nullptr),
               std::invalid_argument);
  p.scale = 0.5f;
  p.d = 300;
  const FlashTileBounds tiles{pos, pos};
  EXPECT_THROW(launch_flash_attention_forward(p, tiles, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);   // head dim above 256
}

TEST(QkvShapes, FusedLayoutWidthsAreChecked) {
  EXPECT_EQ(check_qkv_shapes("split_qkv", {3, 2 * 4 * 5}, 2, 2, 5, {3, 20}, {3, 10}, {3, 10}), 3);
  EXPECT_THROW(check_qkv_shapes("split_qkv", {3, 40}, 2, 2, 5, {3, 20}, {3, 10}, {3, 9}), std::invalid_argument);
  EXPECT_THROW(check_qkv_shapes("merge_qkv", {3, 40}, 2, 0, 5, {3, 0}, {3, 10}, {3, 10}), std::invalid_argument);
  EXPECT_EQ((QkvDims{3, 2, 2, 5}).mixed_width(), 40);
  EXPECT_THROW(launch_split_qkv(nullptr, QkvDims{-1, 2, 2, 5}, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
}

TEST(MoePlans, SegmentsListSourcesInIncreasingOrderPerDestination) {
  const std::vector<int64_t> target{2, 0, 2, 2, 0};
  const RowSegments every = make_row_segments("op", target, 4, true);
  EXPECT_EQ(every.dest_rows, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(every.offsets, (std::vector<int64_t>{0, 2, 2, 5, 5}));
  EXPECT_EQ(every.items, (std::vector<int64_t>{1, 4, 0, 2, 3}));
  const RowSegments used = make_row_segments("op", target, 4, false);
  EXPECT_EQ(used.dest_rows, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(used.offsets, (std::vector<int64_t>{0, 2, 5}));
  try {
    make_row_segments("scatter_add_rows", {0, 4}, 4, false);
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("scatter_add_rows: index[1] = 4"), std::string::npos) << e.what();
  }
}

TEST(MoePlans, CapacityDroppingEqualsTheCpuRouter) {
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t tokens = 37, experts = 5, topk = 2;
  std::vector<float> logits = random_values(rng, tokens * experts);
  const auto view = cpu::make_view(std::span<const float>(logits), {tokens, experts});
  const cpu::Routing dropless = cpu::router_forward(view, cpu::RouterOptions{topk, false, 0.0});
  const cpu::Routing capped = cpu::router_forward(view, cpu::RouterOptions{topk, false, 0.8});
  EXPECT_EQ(expert_capacity(tokens, topk, experts, 0.8), capped.capacity);
  std::vector<float> probs = dropless.probs.data;
  std::vector<uint8_t> kept(probs.size(), 1);
  apply_expert_capacity(dropless.expert, experts, capped.capacity, probs, kept);
  EXPECT_EQ(kept, capped.kept);
  EXPECT_EQ(probs, capped.probs.data);
  int dropped = 0;
  for (uint8_t k : kept) dropped += k == 0;
  EXPECT_GT(dropped, 0) << "capacity 0.8 must drop some selections";
}

TEST(MoePlans, PermutationTokensComeFromTheSelectionIndex) {
  exec::PermutationPlan plan;
  plan.tokens = 3;
  plan.topk = 2;
  plan.source = {0, 3, 5, 2};
  EXPECT_EQ(permutation_tokens("permute_forward", plan), (std::vector<int64_t>{0, 1, 2, 1}));
  plan.source.push_back(6);
  EXPECT_THROW(permutation_tokens("permute_forward", plan), std::invalid_argument);
  EXPECT_THROW(check_router_logits("router_forward", {4, 3}, 4), std::invalid_argument);
  EXPECT_EQ(rows_and_cols({6, 2, 3}), (std::pair<int64_t, int64_t>{6, 6}));
}

TEST(MoeLaunchers, RejectBadSizesOnTheHost) {
  EXPECT_THROW(launch_router_forward(nullptr, 4, 3, 0, false, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(launch_router_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 3, 4, false, nullptr,
                                      nullptr),
               std::invalid_argument);
  EXPECT_THROW(launch_gather_rows(nullptr, nullptr, -2, 4, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(launch_gather_rows(nullptr, nullptr, 2, 4, nullptr, nullptr), std::invalid_argument);   // null buffers
  EXPECT_NO_THROW(launch_gather_rows(nullptr, nullptr, 0, 4, nullptr, nullptr));   // nothing to gather
  EXPECT_THROW(launch_fp32_to_bf16(nullptr, nullptr, -1, nullptr), std::invalid_argument);
  EXPECT_THROW(launch_fp32_to_bf16(nullptr, nullptr, 8, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace tandem::cuda
