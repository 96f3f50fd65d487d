#include "backends/cpu/ops_optimizer.h"

#include "backends/kernel_math/bf16_math.h"
#include "core/check.h"

namespace tandem::cpu {

void adamw_step(std::span<float> params, std::span<const float> grads, std::span<float> exp_avg,
                std::span<float> exp_avg_sq, const kmath::AdamWStep& step, float grad_scale) {
  const size_t n = params.size();
  TANDEM_CHECK_MSG(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n,
                   "adamw buffers: params " << n << ", grads " << grads.size() << ", exp_avg " << exp_avg.size()
                                            << ", exp_avg_sq " << exp_avg_sq.size());
  for (size_t i = 0; i < n; ++i) {
    kmath::adamw_update(&params[i], &exp_avg[i], &exp_avg_sq[i], grads[i] * grad_scale, step);
  }
}

double sum_of_squares(std::span<const float> x) {
  double sum = 0;
  for (float v : x) sum += static_cast<double>(v) * v;
  return sum;
}

float clip_coefficient(double global_norm, double max_norm) {
  const double coeff = max_norm / (global_norm + 1.0e-6);
  return coeff < 1.0 ? static_cast<float>(coeff) : 1.0f;
}

void scale_in_place(std::span<float> x, float factor) {
  for (float& v : x) v *= factor;
}

void round_to_bf16_in_place(std::span<float> x) {
  for (float& v : x) v = kmath::round_to_bf16(v);
}

}  // namespace tandem::cpu
