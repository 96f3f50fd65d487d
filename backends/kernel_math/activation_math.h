#pragma once
// Pointwise activations and their derivatives: GeLU (tanh approximation and exact erf form),
// SiLU and SwiGLU. All functions take and return float; x is the pre-activation input.
//
// GeLU, tanh form (Megatron's fused bias_gelu, torch gelu(approximate="tanh")):
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Megatron writes sqrt(2/pi) as 0.79788456; the full-precision constant differs by < 1e-8
// relative, far below fp32 resolution of the result.
// GeLU, exact form (torch gelu default, Megatron's F.gelu path):
//   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2)),  gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x phi(x)
// SwiGLU (Megatron's glu with F.silu, input split as [gate | up] along the last dimension):
//   swiglu(a, b) = silu(a) * b,   silu(a) = a * sigmoid(a)
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

inline constexpr float kGeluTanhCoeff = 0.044715f;

TANDEM_HD inline float gelu_tanh(float x) {
  const float u = kSqrt2OverPi * x * (1.0f + kGeluTanhCoeff * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

// d gelu_tanh / dx at x.
TANDEM_HD inline float gelu_tanh_grad(float x) {
  const float u = kSqrt2OverPi * x * (1.0f + kGeluTanhCoeff * x * x);
  const float t = tanhf(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCoeff * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

TANDEM_HD inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * kInvSqrt2)); }

// d gelu_erf / dx at x.
TANDEM_HD inline float gelu_erf_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
  const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

TANDEM_HD inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

TANDEM_HD inline float silu(float x) { return x * sigmoid(x); }

// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x).
TANDEM_HD inline float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

// out = silu(gate) * up.
TANDEM_HD inline float swiglu(float gate, float up) { return silu(gate) * up; }

// Given d out, the gradients of gate and up.
TANDEM_HD inline void swiglu_grad(float gate, float up, float d_out, float* d_gate, float* d_up) {
  *d_gate = d_out * up * silu_grad(gate);
  *d_up = d_out * silu(gate);
}

}  // namespace tandem::kmath
