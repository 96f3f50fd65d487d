#pragma once
// AdamW update of one element, with PyTorch's torch.optim.AdamW / Megatron's (Apex/TE FusedAdam,
// adam_w_mode) semantics: decoupled weight decay and bias-corrected moments.
//
//   p <- p * (1 - lr * wd)
//   m <- beta1 m + (1 - beta1) g
//   v <- beta2 v + (1 - beta2) g^2
//   p <- p - lr * (m / bc1) / (sqrt(v / bc2) + eps),   bc1 = 1 - beta1^t, bc2 = 1 - beta2^t
// where t is the 1-based step count. The step constants are computed once per step on the host
// (adamw_step_constants); the per-element update is what every backend runs.
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

struct AdamWStep {
  float lr = 0;              // learning rate of this step
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0;    // decoupled: multiplies lr * p
  float bias_correction1 = 1;  // 1 - beta1^t
  float bias_correction2 = 1;  // 1 - beta2^t
};

// Constants for step t >= 1. Computed in double, stored as float (what a kernel receives).
inline AdamWStep adamw_step_constants(double lr, double beta1, double beta2, double eps, double weight_decay,
                                      int64_t step) {
  AdamWStep s;
  s.lr = static_cast<float>(lr);
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.eps = static_cast<float>(eps);
  s.weight_decay = static_cast<float>(weight_decay);
  s.bias_correction1 = static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(step)));
  s.bias_correction2 = static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(step)));
  return s;
}

// One element: parameter *p, moments *m and *v updated in place from gradient g.
TANDEM_HD inline void adamw_update(float* p, float* m, float* v, float g, const AdamWStep& s) {
  const float m_new = s.beta1 * *m + (1.0f - s.beta1) * g;
  const float v_new = s.beta2 * *v + (1.0f - s.beta2) * g * g;
  const float m_hat = m_new / s.bias_correction1;
  const float denom = sqrtf(v_new) / sqrtf(s.bias_correction2) + s.eps;
  const float decayed = *p * (1.0f - s.lr * s.weight_decay);
  *p = decayed - s.lr * m_hat / denom;
  *m = m_new;
  *v = v_new;
}

}  // namespace tandem::kmath
