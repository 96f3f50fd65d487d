#include "backends/cpu/ops_cross_entropy.h"

#include <cmath>
#include <vector>

#include "backends/kernel_math/kernel_math_common.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

struct CeDims {
  int64_t tokens, v_local;
};

CeDims check_logits(ConstTensorView logits, std::span<const int32_t> targets) {
  TANDEM_CHECK(logits.shape.size() == 2);
  CeDims d{logits.dim(0), logits.dim(1)};
  TANDEM_CHECK_MSG(static_cast<int64_t>(targets.size()) == d.tokens,
                   targets.size() << " targets for " << d.tokens << " logit rows");
  return d;
}

}  // namespace

void cross_entropy_local_max(ConstTensorView logits, TensorView max) {
  TANDEM_CHECK(logits.shape.size() == 2);
  const int64_t tokens = logits.dim(0), v = logits.dim(1);
  check_shape(max, {tokens}, "cross-entropy max");
  for (int64_t t = 0; t < tokens; ++t) {
    float m = -INFINITY;
    for (int64_t j = 0; j < v; ++j) m = kmath::max_f(m, logits.data[t * v + j]);
    max.data[t] = m;
  }
}

void cross_entropy_local_sums(ConstTensorView logits, std::span<const int32_t> targets, int64_t vocab_start,
                              ConstTensorView max, TensorView sum_exp, TensorView target_logit) {
  const CeDims d = check_logits(logits, targets);
  check_shape(max, {d.tokens}, "cross-entropy max");
  check_shape(sum_exp, {d.tokens}, "cross-entropy sum_exp");
  check_shape(target_logit, {d.tokens}, "cross-entropy target_logit");
  for (int64_t t = 0; t < d.tokens; ++t) {
    const float* row = logits.ptr() + t * d.v_local;
    const double m = max.data[t];
    double sum = 0;
    for (int64_t j = 0; j < d.v_local; ++j) sum += std::exp(row[j] - m);
    sum_exp.data[t] = static_cast<float>(sum);
    const int64_t local = targets[t] - vocab_start;
    target_logit.data[t] = (local >= 0 && local < d.v_local) ? static_cast<float>(row[local] - m) : 0.0f;
  }
}

void cross_entropy_loss(ConstTensorView sum_exp, ConstTensorView target_logit, TensorView loss) {
  TANDEM_CHECK(sum_exp.shape.size() == 1);
  check_shape(target_logit, sum_exp.shape, "cross-entropy target_logit");
  check_shape(loss, sum_exp.shape, "cross-entropy loss");
  for (int64_t t = 0; t < sum_exp.numel(); ++t) {
    loss.data[t] = static_cast<float>(std::log(static_cast<double>(sum_exp.data[t])) - target_logit.data[t]);
  }
}

void cross_entropy_backward(ConstTensorView logits, std::span<const int32_t> targets, int64_t vocab_start,
                            ConstTensorView max, ConstTensorView sum_exp, ConstTensorView d_loss, TensorView d_logits) {
  const CeDims d = check_logits(logits, targets);
  check_shape(max, {d.tokens}, "cross-entropy max");
  check_shape(sum_exp, {d.tokens}, "cross-entropy sum_exp");
  check_shape(d_loss, {d.tokens}, "cross-entropy grad loss");
  check_shape(d_logits, logits.shape, "cross-entropy grad logits");
  for (int64_t t = 0; t < d.tokens; ++t) {
    const float* row = logits.ptr() + t * d.v_local;
    float* grad = d_logits.ptr() + t * d.v_local;
    const double m = max.data[t], inv_sum = 1.0 / sum_exp.data[t], g = d_loss.data[t];
    const int64_t local = targets[t] - vocab_start;
    for (int64_t j = 0; j < d.v_local; ++j) {
      const double p = std::exp(row[j] - m) * inv_sum;
      grad[j] = static_cast<float>(g * (j == local ? p - 1.0 : p));
    }
  }
}

void cross_entropy_forward(ConstTensorView logits, std::span<const int32_t> targets, TensorView loss, TensorView max,
                           TensorView sum_exp) {
  const CeDims d = check_logits(logits, targets);
  std::vector<float> target_logit(static_cast<size_t>(d.tokens));
  TensorView tl = make_view(std::span<float>(target_logit), {d.tokens});
  cross_entropy_local_max(logits, max);
  cross_entropy_local_sums(logits, targets, 0, max, sum_exp, tl);
  cross_entropy_loss(sum_exp, tl, loss);
}

}  // namespace tandem::cpu
