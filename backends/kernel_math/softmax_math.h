#pragma once
// Numerically stable softmax of one row, its log-sum-exp, and its backward.
//
//   y_i = exp(s x_i - M) / sum_j exp(s x_j - M),  M = max_j s x_j,  lse = M + log sum_j exp(s x_j - M)
//   backward: dx_i = s * y_i (dy_i - sum_j y_j dy_j)
// Entries equal to -inf (masked) get probability 0. A row that is entirely -inf yields zeros and
// lse = -inf instead of NaN.
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

// Log-sum-exp of s * x over x [n].
template <typename Acc = float>
TANDEM_HD inline float logsumexp_row(const float* x, int64_t n, float s = 1.0f) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = max_f(mx, s * x[i]);
  if (mx == -INFINITY) return -INFINITY;
  Acc sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += exp(static_cast<Acc>(s * x[i] - mx));
  return static_cast<float>(static_cast<Acc>(mx) + log(sum));
}

// x [n] -> y [n] = softmax(s * x); returns the log-sum-exp. y may alias x.
template <typename Acc = float>
TANDEM_HD inline float softmax_row(const float* x, int64_t n, float* y, float s = 1.0f) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = max_f(mx, s * x[i]);
  if (mx == -INFINITY) {
    for (int64_t i = 0; i < n; ++i) y[i] = 0.0f;
    return -INFINITY;
  }
  Acc sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += exp(static_cast<Acc>(s * x[i] - mx));
  const Acc inv = Acc(1) / sum;
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(exp(static_cast<Acc>(s * x[i] - mx)) * inv);
  return static_cast<float>(static_cast<Acc>(mx) + log(sum));
}

// y [n] (softmax output), dy [n] -> dx [n] (overwritten; may alias dy).
template <typename Acc = float>
TANDEM_HD inline void softmax_row_backward(const float* y, const float* dy, int64_t n, float* dx, float s = 1.0f) {
  Acc dot = 0;
  for (int64_t i = 0; i < n; ++i) dot += static_cast<Acc>(y[i]) * dy[i];
  const float d = static_cast<float>(dot);
  for (int64_t i = 0; i < n; ++i) dx[i] = s * y[i] * (dy[i] - d);
}

}  // namespace tandem::kmath
