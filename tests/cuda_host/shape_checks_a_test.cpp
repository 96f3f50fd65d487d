// Host-side checks of the part A kernels: the shape rules both devices apply
// (backends/executor/shape_rules.h) and the launchers' own size checks, which throw before any
// device work, so both run without a GPU.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/ops_activation.cuh"
#include "backends/cuda/ops_cross_entropy.cuh"
#include "backends/cuda/ops_elementwise.cuh"
#include "backends/cuda/ops_embedding.cuh"
#include "backends/cuda/ops_norm.cuh"
#include "backends/cuda/ops_optimizer.cuh"
#include "backends/cuda/ops_reduce.cuh"
#include "backends/cuda/ops_rope.cuh"
#include "backends/executor/shape_rules.h"

namespace tandem::cuda {
namespace {

using namespace tandem::exec;   // the shared shape rules (backends/executor/shape_rules.h)

using exec::ActivationKind;
using exec::NormKind;
using exec::Shape;

// Runs f, expects std::invalid_argument whose message contains every fragment.
template <typename F>
void expect_invalid(F f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    for (const char* frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
  }
}

TEST(ShapeChecksA, ElementwiseCountsAndRowVectors) {
  EXPECT_EQ(check_same_numel("add", "a", {3, 4}, "b", {12}), 12);
  expect_invalid([] { check_same_numel("axpy", "x", {3, 4}, "y", {3, 5}); }, {"axpy", "[3, 4]", "[3, 5]"});
  const RowsCols rc = check_row_vector("add_row_vector", {5, 2, 7}, {7});
  EXPECT_EQ(rc.rows, 10);
  EXPECT_EQ(rc.cols, 7);
  expect_invalid([] { check_row_vector("column_sums_accumulate", {5, 7}, {6}); }, {"column_sums_accumulate", "6"});
  expect_invalid([] { check_row_vector("add_row_vector", {5, 7}, {0}); }, {"add_row_vector", "[0]"});
}

TEST(ShapeChecksA, CopyColumnsStaysInsideTheSource) {
  const RowsCols rc = check_copy_columns({4, 10}, 3, {4, 7});
  EXPECT_EQ(rc.rows, 4);
  EXPECT_EQ(rc.cols, 10);
  expect_invalid([] { check_copy_columns({4, 10}, 4, {4, 7}); }, {"copy_columns", "begin = 4"});
  expect_invalid([] { check_copy_columns({4, 10}, -1, {4, 2}); }, {"begin = -1"});
  expect_invalid([] { check_copy_columns({4, 10}, 0, {3, 2}); }, {"rows"});
  expect_invalid([] { check_copy_columns({40}, 0, {40, 1}); }, {"src", "2 dimensions"});
}

TEST(ShapeChecksA, DropoutNeedsOneRowIdPerRowAndAProbability) {
  const RowsCols rc = check_dropout({6, 2, 5}, 0.1f, 6);
  EXPECT_EQ(rc.rows, 6);
  EXPECT_EQ(rc.cols, 10);
  expect_invalid([] { check_dropout({6, 5}, 0.1f, 5); }, {"dropout", "5 entries"});
  expect_invalid([] { check_dropout({6, 5}, 1.5f, 6); }, {"p = 1.5"});
  expect_invalid([] { check_dropout({6, 5}, -0.1f, 6); }, {"p = -0.1"});
  expect_invalid([] { check_dropout({}, 0.1f, 0); }, {"no dimensions"});
}

TEST(ShapeChecksA, EmbeddingOutputIsTokensByHidden) {
  const RowsCols rc = check_embedding("embedding_forward", 9, {50, 16}, {9, 16});
  EXPECT_EQ(rc.rows, 50);
  EXPECT_EQ(rc.cols, 16);
  expect_invalid([] { check_embedding("embedding_forward", 9, {50, 16}, {8, 16}); }, {"output", "[8, 16]", "[9, 16]"});
  expect_invalid([] { check_embedding("embedding_backward", 9, {50 * 16}, {9, 16}); }, {"embedding_backward", "table"});
}

TEST(ShapeChecksA, NormsFollowTheCpuRules) {
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

TEST(ShapeChecksA, ActivationsGeluElementwiseSwigluHalvesTheColumns) {
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

TEST(ShapeChecksA, RopeNeedsFourDimensionsAnEvenHeadAndPositionsPerRow) {
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

TEST(ShapeChecksA, CrossEntropyRowsAndTokenVectors) {
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

TEST(ShapeChecksA, AdamwBuffersMatchAndStepsCountFromOne) {
  EXPECT_EQ(check_adamw({4, 4}, {16}, {16}, {4, 4}, 1), 16);
  expect_invalid([] { check_adamw({16}, {16}, {15}, {16}, 3); }, {"adamw_step", "exp_avg"});
  expect_invalid([] { check_adamw({16}, {16}, {16}, {16}, 0); }, {"step = 0"});
}

// The launchers check their sizes on the host before touching the device.
TEST(LauncherChecksA, BadSizesThrowBeforeAnyLaunch) {
  float* none = nullptr;
  expect_invalid([&] { launch_fill(none, -1, 0.0f, nullptr); }, {"fill", "n = -1"});
  expect_invalid([&] { launch_add(none, none, none, 4, nullptr); }, {"add", "null"});
  expect_invalid([&] { launch_add_row_vector(none, none, 3, 0, nullptr); }, {"add_row_vector", "cols = 0"});
  expect_invalid([&] { launch_copy_columns(none, 2, 5, 3, none, 4, nullptr); }, {"copy_columns", "outside"});
  expect_invalid([&] { launch_dropout(none, nullptr, 2, 3, 2.0f, 1, nullptr); }, {"dropout", "p = 2"});
  expect_invalid([&] { launch_embedding_forward(nullptr, -2, none, 4, 4, 0, none, nullptr); },
                 {"embedding_forward", "tokens = -2"});
  expect_invalid([&] { launch_layernorm_forward(none, none, none, 3, 0, 1e-5f, none, none, none, nullptr); },
                 {"layernorm_forward", "h = 0"});
  expect_invalid([&] { launch_norm_backward_input(none, none, none, none, none, -1, 4, none, nullptr); },
                 {"norm_backward", "rows = -1"});
  expect_invalid([&] { launch_gelu_forward(GeluForm::Tanh, none, 5, none, nullptr); }, {"gelu_forward", "null"});
  expect_invalid([&] { launch_swiglu_backward(none, none, 2, -4, none, nullptr); }, {"swiglu_backward", "f = -4"});
  expect_invalid([&] { launch_rope(none, 2, 2, 8, 3, nullptr, 1e4, false, none, nullptr, 0, nullptr); },
                 {"rope", "rot_dim = 3"});
  expect_invalid([&] { launch_rope(none, 2, 2, 8, 10, nullptr, 1e4, false, none, nullptr, 0, nullptr); },
                 {"rope", "rot_dim = 10"});
  expect_invalid([&] { launch_cross_entropy_partials(none, 3, 10, nullptr, 0, none, none, none, nullptr); },
                 {"cross_entropy_partials", "null"});
  expect_invalid([&] { launch_cross_entropy_loss(none, none, none, none, -5, nullptr); },
                 {"cross_entropy_loss", "tokens = -5"});
  kmath::AdamWStep step;
  step.bias_correction1 = 0.0f;
  expect_invalid([&] { launch_adamw(none, none, none, none, 0, step, 1.0f, nullptr, nullptr); }, {"adamw", "bias"});
  double* result = nullptr;
  expect_invalid([&] { launch_sum(none, 10, result, nullptr, 0, nullptr); }, {"sum", "result"});
  double fake = 0;
  expect_invalid([&] { launch_sum_of_squares(none, 10, &fake, nullptr, 0, nullptr); }, {"sum_of_squares", "x is null"});
  float data = 0;
  expect_invalid([&] { launch_sum_of_squares(&data, 1000, &fake, nullptr, 0, nullptr); },
                 {"sum_of_squares", "scratch_bytes = 0"});
  expect_invalid([&] { launch_column_sums(ColumnTerm::X, ColumnTermInputs{&data}, 100, 3, &data, nullptr, 8, nullptr); },
                 {"column_sums", "scratch_bytes = 8"});
}

// Zero-sized work launches nothing (and so needs no device).
TEST(LauncherChecksA, EmptyWorkIsANoOp) {
  float* none = nullptr;
  EXPECT_NO_THROW(launch_fill(none, 0, 1.0f, nullptr));
  EXPECT_NO_THROW(launch_axpy(2.0f, none, none, 0, nullptr));
  EXPECT_NO_THROW(launch_copy(none, none, 0, nullptr));
  EXPECT_NO_THROW(launch_gelu_backward(GeluForm::Erf, none, none, 0, none, nullptr));
  EXPECT_NO_THROW(launch_layernorm_forward(none, none, none, 0, 16, 1e-5f, none, none, none, nullptr));
  EXPECT_NO_THROW(launch_column_sums(ColumnTerm::X, ColumnTermInputs{}, 0, 16, none, nullptr, 0, nullptr));
  EXPECT_NO_THROW(launch_cross_entropy_backward(none, 0, 100, nullptr, 0, none, none, none, none, nullptr));
  EXPECT_NO_THROW(launch_adamw(none, none, none, none, 0, kmath::AdamWStep{}, 1.0f, nullptr, nullptr));
}

}  // namespace
}  // namespace tandem::cuda
