// The shape rules both devices apply (backends/executor/shape_rules.h), as functions of shapes,
// and the CPU device applying them: a violation throws exec::ShapeError naming the op, the
// operand's shape and the rule, instead of aborting, and leaves the outputs untouched.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "backends/executor/shape_rules.h"

namespace tandem::exec {
namespace {

// Runs f, expects ShapeError (a std::invalid_argument) whose message contains every fragment.
template <typename F>
void expect_invalid(F f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ShapeError& e) {
    for (const char* frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
  }
}

TEST(ShapeRules, ElementwiseCountsAndRowVectors) {
  EXPECT_EQ(check_same_numel("add", "a", {3, 4}, "b", {12}), 12);
  expect_invalid([] { check_same_numel("axpy", "x", {3, 4}, "y", {3, 5}); }, {"axpy", "[3, 4]", "[3, 5]"});
  const RowsCols rc = check_row_vector("add_row_vector", {5, 2, 7}, {7});
  EXPECT_EQ(rc.rows, 10);
  EXPECT_EQ(rc.cols, 7);
  expect_invalid([] { check_row_vector("column_sums_accumulate", {5, 7}, {6}); }, {"column_sums_accumulate", "6"});
  expect_invalid([] { check_row_vector("add_row_vector", {5, 7}, {0}); }, {"add_row_vector", "[0]"});
}

TEST(ShapeRules, CopyColumnsStaysInsideTheSource) {
  const RowsCols rc = check_copy_columns({4, 10}, 3, {4, 7});
  EXPECT_EQ(rc.rows, 4);
  EXPECT_EQ(rc.cols, 10);
  expect_invalid([] { check_copy_columns({4, 10}, 4, {4, 7}); }, {"copy_columns", "begin = 4"});
  expect_invalid([] { check_copy_columns({4, 10}, -1, {4, 2}); }, {"begin = -1"});
  expect_invalid([] { check_copy_columns({4, 10}, 0, {3, 2}); }, {"rows"});
  expect_invalid([] { check_copy_columns({40}, 0, {40, 1}); }, {"src", "2 dimensions"});
}

TEST(ShapeRules, DropoutNeedsOneRowIdPerRowAndAProbability) {
  const RowsCols rc = check_dropout({6, 2, 5}, 0.1f, 6);
  EXPECT_EQ(rc.rows, 6);
  EXPECT_EQ(rc.cols, 10);
  expect_invalid([] { check_dropout({6, 5}, 0.1f, 5); }, {"dropout", "5 entries"});
  expect_invalid([] { check_dropout({6, 5}, 1.5f, 6); }, {"p = 1.5"});
  expect_invalid([] { check_dropout({6, 5}, -0.1f, 6); }, {"p = -0.1"});
  expect_invalid([] { check_dropout({}, 0.1f, 0); }, {"no dimensions"});
}

TEST(ShapeRules, EmbeddingOutputIsTokensByHidden) {
  const RowsCols rc = check_embedding("embedding_forward", 9, {50, 16}, {9, 16});
  EXPECT_EQ(rc.rows, 50);
  EXPECT_EQ(rc.cols, 16);
  expect_invalid([] { check_embedding("embedding_forward", 9, {50, 16}, {8, 16}); }, {"output", "[8, 16]", "[9, 16]"});
  expect_invalid([] { check_embedding("embedding_backward", 9, {50 * 16}, {9, 16}); }, {"embedding_backward", "table"});
}

TEST(ShapeRules, NormsFollowTheCpuRules) {
  const Shape beta{8}, mean{3};
  const RowsCols rc = check_norm_forward(NormKind::LayerNorm, {3, 8}, {8}, &beta, {3, 8}, &mean, {3});
  EXPECT_EQ(rc.rows, 3);
  EXPECT_EQ(rc.cols, 8);
  EXPECT_EQ(check_norm_forward(NormKind::RMSNorm, {3, 8}, {8}, nullptr, {3, 8}, nullptr, {3}).cols, 8);
  expect_invalid([&] { check_norm_forward(NormKind::LayerNorm, {3, 8}, {8}, &beta, {3, 8}, nullptr, {3}); },
                 {"layernorm_forward", "mean"});
  expect_invalid([&] { check_norm_forward(NormKind::RMSNorm, {3, 8}, {7}, nullptr, {3, 8}, nullptr, {3}); },
                 {"rmsnorm_forward", "gamma", "[7]"});
  expect_invalid([&] { check_norm_forward(NormKind::RMSNorm, {3, 0}, {0}, nullptr, {3, 0}, nullptr, {3}); },
                 {"no features"});
  const Shape dbeta{8}, bad_dbeta{9};
  EXPECT_EQ(check_norm_backward(NormKind::LayerNorm, {3, 8}, {8}, &mean, {3}, {3, 8}, {3, 8}, {8}, &dbeta).rows, 3);
  expect_invalid([&] { check_norm_backward(NormKind::LayerNorm, {3, 8}, {8}, &mean, {3}, {3, 8}, {3, 8}, {8}, &bad_dbeta); },
                 {"layernorm_backward", "dbeta"});
  expect_invalid([&] { check_norm_backward(NormKind::RMSNorm, {3, 8}, {8}, nullptr, {4}, {3, 8}, {3, 8}, {8}, nullptr); },
                 {"rmsnorm_backward", "rstd"});
}

TEST(ShapeRules, ActivationsGeluElementwiseSwigluHalvesTheColumns) {
  EXPECT_EQ(check_activation_forward(ActivationKind::GeluTanh, {3, 5}, {3, 5}).rows, 15);
  const RowsCols s = check_activation_forward(ActivationKind::SwiGlu, {3, 10}, {3, 5});
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.cols, 5);
  expect_invalid([] { check_activation_forward(ActivationKind::SwiGlu, {3, 9}, {3, 4}); }, {"swiglu_forward", "even"});
  expect_invalid([] { check_activation_forward(ActivationKind::GeluErf, {3, 5}, {5, 3}); }, {"gelu_forward", "y"});
  EXPECT_EQ(check_activation_backward(ActivationKind::SwiGlu, {3, 10}, {3, 5}, {3, 10}).cols, 5);
  expect_invalid([] { check_activation_backward(ActivationKind::SwiGlu, {3, 10}, {3, 5}, {3, 5}); },
                 {"swiglu_backward", "dx"});
}

TEST(ShapeRules, RopeNeedsFourDimensionsAnEvenHeadAndPositionsPerRow) {
  const RopeDims d = check_rope("rope_forward", {7, 2, 3, 10}, 7, 10000.0, {7, 2, 3, 10});
  EXPECT_EQ(d.s, 7);
  EXPECT_EQ(d.rows_per_pos, 6);
  EXPECT_EQ(d.d, 10);
  EXPECT_EQ(check_rope("rope_forward", {7, 2, 3, 10}, 0, 500.0, {7, 2, 3, 10}).s, 7);
  expect_invalid([] { check_rope("rope_forward", {7, 2, 3, 9}, 0, 1e4, {7, 2, 3, 9}); }, {"head_dim = 9"});
  expect_invalid([] { check_rope("rope_backward", {7, 2, 3, 10}, 6, 1e4, {7, 2, 3, 10}); }, {"rope_backward", "6 entries"});
  expect_invalid([] { check_rope("rope_forward", {7, 6, 10}, 0, 1e4, {7, 6, 10}); }, {"4 dimensions"});
  expect_invalid([] { check_rope("rope_forward", {7, 2, 3, 10}, 0, 0.0, {7, 2, 3, 10}); }, {"base"});
}

TEST(ShapeRules, CrossEntropyRowsAndTokenVectors) {
  const RowsCols rc = check_cross_entropy_partials({5, 33}, 5, {5}, {5}, {5});
  EXPECT_EQ(rc.rows, 5);
  EXPECT_EQ(rc.cols, 33);
  expect_invalid([] { check_cross_entropy_partials({5, 33}, 4, {5}, {5}, {5}); }, {"4 targets"});
  expect_invalid([] { check_cross_entropy_partials({5, 33}, 5, {5}, {4}, {5}); }, {"sum_exp"});
  const Shape a{5}, b{5}, c{6};
  EXPECT_EQ(check_token_vectors("cross_entropy_loss", {{"max", &a}, {"sum_exp", &b}}), 5);
  expect_invalid([&] { check_token_vectors("rescale_sum_exp", {{"sum_exp", &a}, {"global_max", &c}}); },
                 {"rescale_sum_exp", "global_max"});
  EXPECT_EQ(check_cross_entropy_backward({5, 33}, 5, {5}, {5}, {5}, {5, 33}).cols, 33);
  expect_invalid([] { check_cross_entropy_backward({5, 33}, 5, {5}, {5}, {5}, {5, 32}); }, {"d_logits"});
}

TEST(ShapeRules, AdamwBuffersMatchAndStepsCountFromOne) {
  EXPECT_EQ(check_adamw({4, 4}, {16}, {16}, {4, 4}, 1), 16);
  expect_invalid([] { check_adamw({16}, {16}, {15}, {16}, 3); }, {"adamw_step", "exp_avg"});
  expect_invalid([] { check_adamw({16}, {16}, {16}, {16}, 0); }, {"step = 0"});
}

// The launchers check their sizes on the host before touching the device.
TEST(ShapeRules, GemmMismatchesNameTheOpAndTheField) {
  try {
    check_gemm_forward({4, 8}, {8, 3}, nullptr, WeightLayout::OutIn, {4, 3});
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gemm_forward: w has shape [8, 3], expected [3, 8]"), std::string::npos)
        << e.what();
  }
  const Shape bias{4};
  EXPECT_THROW(check_gemm_forward({4, 8}, {8, 3}, &bias, WeightLayout::InOut, {4, 3}), std::invalid_argument);
  EXPECT_THROW(check_gemm_grad_input({4, 3}, {8, 3}, WeightLayout::InOut, {5, 8}), std::invalid_argument);
  EXPECT_THROW(check_gemm_grad_weight({4, 8}, {5, 3}, WeightLayout::InOut, {8, 3}, nullptr), std::invalid_argument);
  const LinearDims d = check_gemm_grad_weight({4, 8}, {4, 3}, WeightLayout::OutIn, {3, 8}, nullptr);
  EXPECT_EQ(d.m, 4);
  EXPECT_EQ(d.n, 3);
  EXPECT_EQ(d.k, 8);
}

TEST(ShapeRules, GroupedGemmRowsAreTheSumOfCountsAndNegativeCountsAreRejected) {
  const std::vector<int64_t> counts{3, 0, 2};
  const LinearDims d = check_grouped_forward({5, 4}, {3, 4, 6}, counts, {5, 6});
  EXPECT_EQ(d.m, 5);
  EXPECT_EQ(d.n, 6);
  EXPECT_EQ(d.k, 4);
  EXPECT_THROW(check_grouped_forward({6, 4}, {3, 4, 6}, counts, {6, 6}), std::invalid_argument);
  EXPECT_THROW(check_grouped_forward({5, 4}, {2, 4, 6}, counts, {5, 6}), std::invalid_argument);
  const std::vector<int64_t> negative{3, -1, 3};
  try {
    check_grouped_grad_weight({5, 4}, {5, 6}, negative, {3, 4, 6});
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("counts[1] = -1"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_grouped_grad_input({5, 6}, {3, 4, 6}, counts, {5, 4}));
}

}  // namespace
}  // namespace tandem::exec

namespace tandem::cpu {
namespace {

using exec::DeviceTensor;
using exec::ShapeError;

// Runs f, expects ShapeError whose message contains every fragment.
template <typename F>
void expect_shape_error(F f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ShapeError& e) {
    for (const char* frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
  }
}

TEST(CpuShapeRules, GemmWithMismatchedWeightThrowsNamingOpOperandAndShapes) {
  CpuDevice dev;
  const DeviceTensor x = dev.empty({4, 8}), w = dev.empty({6, 5}), y = dev.empty({4, 5});
  dev.fill(y, 7.0f);
  expect_shape_error([&] { dev.gemm_forward(x, w, {}, exec::WeightLayout::InOut, y); },
                     {"gemm_forward", "w", "[6, 5]", "expected [8, 5]"});
  for (float v : dev.to_host(y)) EXPECT_EQ(v, 7.0f);   // nothing computed
}

TEST(CpuShapeRules, ElementwiseAndCopyNeedEqualCounts) {
  CpuDevice dev;
  expect_shape_error([&] { dev.copy(dev.empty({3, 2}), dev.empty({5})); }, {"copy", "[3, 2]", "[5]", "element count"});
  expect_shape_error([&] { dev.add(dev.empty({4}), dev.empty({4}), dev.empty({3})); }, {"add", "out"});
  expect_shape_error([&] { dev.add_row_vector(dev.empty({3, 5}), dev.empty({4})); }, {"add_row_vector"});
}

TEST(CpuShapeRules, NormsAttentionAndMoeOpsFollowTheSameRules) {
  CpuDevice dev;
  expect_shape_error(
      [&] {
        dev.norm_forward(exec::NormKind::RMSNorm, dev.empty({4, 8}), dev.empty({7}), {}, 1e-5f, dev.empty({4, 8}), {},
                         dev.empty({4}));
      },
      {"rmsnorm_forward", "gamma", "[7]", "expected [8]"});
  expect_shape_error(
      [&] { dev.attention_merge(dev.empty({4, 1, 2, 8}), dev.empty({1, 2, 4}), dev.empty({2, 1, 2, 8}),
                                dev.empty({1, 2, 2}), 3); },
      {"attention_merge", "row0 = 3"});
  exec::PermutationPlan plan;
  plan.tokens = 2;
  plan.topk = 1;
  plan.source = {0, 5};
  expect_shape_error([&] { dev.permute_forward(dev.empty({2, 4}), plan, dev.empty({2, 4})); },
                     {"permute_forward", "source[1] = 5"});
  const std::vector<int64_t> index = {0, 3};
  expect_shape_error([&] { dev.gather_rows(dev.empty({3, 2}), index, dev.empty({2, 2})); },
                     {"gather_rows", "index[1] = 3"});
}

TEST(CpuShapeRules, ValidShapesStillCompute) {
  CpuDevice dev;
  const DeviceTensor a = dev.empty({2, 3}), b = dev.empty({6}), out = dev.empty({3, 2});
  dev.fill(a, 1.0f);
  dev.fill(b, 2.0f);
  dev.add(a, b, out);   // equal counts, any shapes (the rule for elementwise ops)
  for (float v : dev.to_host(out)) EXPECT_EQ(v, 3.0f);
}

}  // namespace
}  // namespace tandem::cpu
