#pragma once
// Helpers for the CPU kernel tests: seeded random inputs (fresh each run; the seed is printed on
// failure and TANDEM_TEST_SEED=<seed> replays it), NaN-poisoned outputs, and a central-difference
// gradient check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/tensor.h"

namespace tandem::cpu::testing {

inline uint64_t test_seed() {
  if (const char* env = std::getenv("TANDEM_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

class KernelTest : public ::testing::Test {
 public:
  void SetUp() override {
    seed_ = test_seed();
    rng_.seed(seed_);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "[ seed     ] TANDEM_TEST_SEED=" << seed_ << " replays this test\n";
  }

  // Helpers are public so that free functions running a test case can use them.
  Tensor random(Shape shape, float lo = -1.0f, float hi = 1.0f) {
    Tensor t(std::move(shape));
    std::uniform_real_distribution<float> dist(lo, hi);
    for (float& v : t.data) v = dist(rng_);
    return t;
  }

  std::vector<int32_t> random_ids(int64_t n, int32_t lo, int32_t hi) {   // in [lo, hi]
    std::uniform_int_distribution<int32_t> dist(lo, hi);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& v : ids) v = dist(rng_);
    return ids;
  }

  // Every value NaN: a kernel that forgets to write an output element leaves a NaN behind.
  static Tensor poisoned(Shape shape) { return Tensor(std::move(shape), std::numeric_limits<float>::quiet_NaN()); }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

inline bool all_finite(const Tensor& t) {
  for (float v : t.data) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// sum_i out[i] * weight[i] in double: the scalar whose gradient the checks compare.
inline double weighted_sum(const Tensor& out, const Tensor& weight) {
  EXPECT_EQ(out.numel(), weight.numel());
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(out.data[i]) * weight.data[i];
  return s;
}

// Compares `analytic` = d loss / d input with central differences of loss() at every element of
// `input` (perturbed in place, restored after). loss() may return NaN to say "a discrete decision
// (top-k, capacity) changed here": such elements are skipped, at most a fifth of them.
// Criterion: max |fd - analytic| <= tol * max(max |analytic|, 1e-2).
inline void check_gradient(Tensor& input, const Tensor& analytic, const std::function<double()>& loss,
                           const std::string& what, float h = 1e-2f, double tol = 1e-3) {
  ASSERT_EQ(input.shape, analytic.shape) << what;
  double max_err = 0, max_ref = 0;
  int64_t worst = -1, skipped = 0;
  for (int64_t i = 0; i < input.numel(); ++i) {
    const float x = input.data[i];
    input.data[i] = x + h;
    const double step_up = static_cast<double>(input.data[i]) - x;
    const double lp = loss();
    input.data[i] = x - h;
    const double step_down = x - static_cast<double>(input.data[i]);
    const double lm = loss();
    input.data[i] = x;
    if (std::isnan(lp) || std::isnan(lm)) {
      ++skipped;
      continue;
    }
    const double fd = (lp - lm) / (step_up + step_down);
    const double err = std::fabs(fd - analytic.data[i]);
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(analytic.data[i])));
    if (err > max_err) {
      max_err = err;
      worst = i;
    }
  }
  if (std::getenv("TANDEM_TEST_VERBOSE")) {
    std::cerr << "[ gradient ] " << what << ": max error " << max_err << " / max |analytic| " << max_ref << " = "
              << max_err / std::max(max_ref, 1e-2) << ", skipped " << skipped << "\n";
  }
  EXPECT_LE(skipped * 5, input.numel()) << what << ": too many elements where a discrete decision changed";
  EXPECT_LE(max_err, tol * std::max(max_ref, 1e-2))
      << what << ": finite-difference mismatch at element " << worst << " (analytic "
      << (worst >= 0 ? analytic.data[worst] : 0.0f) << "), max |analytic| " << max_ref;
}

}  // namespace tandem::cpu::testing
