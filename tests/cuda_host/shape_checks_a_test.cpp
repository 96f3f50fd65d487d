// Host-side checks of the part A kernels: the launchers' own size checks, which throw before any
// device work, so they run without a GPU (the shape rules both devices apply are tested in
// tests/cpu/shape_rules_test.cpp).
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

namespace tandem::cuda {
namespace {

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
