#pragma once
// LayerNorm and RMSNorm of one row of n features, forward and backward.
//
//   LayerNorm: y = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps), var biased
//   RMSNorm:   y = x * rstd * gamma,                  rstd = 1 / sqrt(mean(x^2) + eps)
// Backward, with xhat = normalised x and g = dy * gamma:
//   LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   RMSNorm:   dx = rstd * (g - xhat * mean(g * xhat))
//   dgamma += dy * xhat, dbeta += dy (accumulated over rows by the caller's loop).
// Forward saves (mean, rstd) per row (RMSNorm: rstd only); backward reads them.
//
// Element-level pieces (`*_apply`, `*_grad_input`) are what a GPU kernel combines after its own
// block reductions; the row functions below are built from them and serve the CPU backend.
// `Acc` is the accumulation type of row sums: float on the GPU, double on the CPU reference.
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

TANDEM_HD inline float layernorm_apply(float x, float mean, float rstd, float gamma, float beta) {
  return (x - mean) * rstd * gamma + beta;
}

TANDEM_HD inline float layernorm_grad_input(float xhat, float g, float mean_g, float mean_g_xhat, float rstd) {
  return rstd * (g - mean_g - xhat * mean_g_xhat);
}

TANDEM_HD inline float rmsnorm_grad_input(float xhat, float g, float mean_g_xhat, float rstd) {
  return rstd * (g - xhat * mean_g_xhat);
}

// x [n], gamma [n], beta [n] or nullptr -> y [n]; writes *mean and *rstd of the row.
template <typename Acc = float>
TANDEM_HD inline void layernorm_row_forward(const float* x, const float* gamma, const float* beta, int64_t n,
                                            float eps, float* y, float* mean, float* rstd) {
  Acc sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const Acc mu = sum / static_cast<Acc>(n);
  Acc sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mu) * (x[i] - mu);
  const Acc var = sq / static_cast<Acc>(n);
  const float r = static_cast<float>(Acc(1) / sqrt(var + static_cast<Acc>(eps)));
  const float m = static_cast<float>(mu);
  for (int64_t i = 0; i < n; ++i) y[i] = layernorm_apply(x[i], m, r, gamma[i], beta ? beta[i] : 0.0f);
  *mean = m;
  *rstd = r;
}

// x [n], gamma [n], dy [n], saved mean/rstd -> dx [n] (overwritten); dgamma [n] and dbeta [n]
// (either may be nullptr) are accumulated into.
template <typename Acc = float>
TANDEM_HD inline void layernorm_row_backward(const float* x, const float* gamma, const float* dy, int64_t n,
                                             float mean, float rstd, float* dx, float* dgamma, float* dbeta) {
  Acc sum_g = 0, sum_g_xhat = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float xhat = (x[i] - mean) * rstd;
    const float g = dy[i] * gamma[i];
    sum_g += g;
    sum_g_xhat += static_cast<Acc>(g) * xhat;
  }
  const float mean_g = static_cast<float>(sum_g / static_cast<Acc>(n));
  const float mean_g_xhat = static_cast<float>(sum_g_xhat / static_cast<Acc>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float xhat = (x[i] - mean) * rstd;
    dx[i] = layernorm_grad_input(xhat, dy[i] * gamma[i], mean_g, mean_g_xhat, rstd);
    if (dgamma) dgamma[i] += dy[i] * xhat;
    if (dbeta) dbeta[i] += dy[i];
  }
}

// x [n], gamma [n] -> y [n]; writes *rstd of the row.
template <typename Acc = float>
TANDEM_HD inline void rmsnorm_row_forward(const float* x, const float* gamma, int64_t n, float eps, float* y,
                                          float* rstd) {
  Acc sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += static_cast<Acc>(x[i]) * x[i];
  const float r = static_cast<float>(Acc(1) / sqrt(sq / static_cast<Acc>(n) + static_cast<Acc>(eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * gamma[i];
  *rstd = r;
}

// x [n], gamma [n], dy [n], saved rstd -> dx [n] (overwritten); dgamma [n] accumulated (nullable).
template <typename Acc = float>
TANDEM_HD inline void rmsnorm_row_backward(const float* x, const float* gamma, const float* dy, int64_t n,
                                           float rstd, float* dx, float* dgamma) {
  Acc sum_g_xhat = 0;
  for (int64_t i = 0; i < n; ++i) sum_g_xhat += static_cast<Acc>(dy[i] * gamma[i]) * (x[i] * rstd);
  const float mean_g_xhat = static_cast<float>(sum_g_xhat / static_cast<Acc>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float xhat = x[i] * rstd;
    dx[i] = rmsnorm_grad_input(xhat, dy[i] * gamma[i], mean_g_xhat, rstd);
    if (dgamma) dgamma[i] += dy[i] * xhat;
  }
}

}  // namespace tandem::kmath
