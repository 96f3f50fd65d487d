#include "backends/cpu/ops_attention_ring.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "backends/kernel_math/dropout_math.h"
#include "backends/kernel_math/softmax_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstHeadMap = Eigen::Map<const Matrix, 0, Stride>;
using HeadMap = Eigen::Map<Matrix, 0, Stride>;

ConstHeadMap head(ConstTensorView t, int64_t b, int64_t h) {
  const int64_t batch = t.dim(1), heads = t.dim(2), d = t.dim(3);
  return ConstHeadMap(t.ptr() + (b * heads + h) * d, t.dim(0), d, Stride(batch * heads * d));
}
HeadMap head(TensorView t, int64_t b, int64_t h) {
  const int64_t batch = t.dim(1), heads = t.dim(2), d = t.dim(3);
  return HeadMap(t.ptr() + (b * heads + h) * d, t.dim(0), d, Stride(batch * heads * d));
}

int64_t position(std::span<const int32_t> positions, int64_t i) { return positions.empty() ? i : positions[i]; }

}  // namespace

float attention_dropout_scale(const AttentionDropout& dr, int64_t sample, int64_t head, int64_t q_pos, int64_t kv_pos) {
  return kmath::dropout_factor(kmath::attention_dropout_keep(dr.key, sample, head, q_pos, kv_pos, dr.p), dr.p);
}

void attention_forward_dropout(ConstTensorView q, ConstTensorView k, ConstTensorView v, const AttentionOptions& o,
                               const AttentionDropout& dr, TensorView out, TensorView lse) {
  TANDEM_CHECK(q.shape.size() == 4 && k.shape.size() == 4);
  const int64_t s_q = q.dim(0), s_kv = k.dim(0), nb = q.dim(1), hq = q.dim(2), hkv = k.dim(2), d = q.dim(3);
  check_shape(v, k.shape, "attention v");
  check_shape(out, q.shape, "attention output");
  check_shape(lse, {nb, hq, s_q}, "attention lse");
  TANDEM_CHECK(hkv > 0 && hq % hkv == 0 && static_cast<int64_t>(dr.samples.size()) == nb);
  const float scale = o.softmax_scale != 0.0f ? o.softmax_scale : 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t qpg = hq / hkv;
  Matrix p(s_q, s_kv);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      p.noalias() = scale * (head(q, b, h) * head(k, b, h / qpg).transpose());
      float* lse_row = lse.ptr() + (b * hq + h) * s_q;
      for (int64_t i = 0; i < s_q; ++i) {
        const int64_t qp = position(o.q_positions, i);
        float* row = p.data() + i * s_kv;
        for (int64_t j = 0; j < s_kv; ++j)
          if (o.causal && position(o.kv_positions, j) > qp) row[j] = -std::numeric_limits<float>::infinity();
        lse_row[i] = kmath::softmax_row<double>(row, s_kv, row);
        for (int64_t j = 0; j < s_kv; ++j)
          row[j] *= attention_dropout_scale(dr, dr.samples[b], dr.head_offset + h, qp, position(o.kv_positions, j));
      }
      head(out, b, h).noalias() = p * head(v, b, h / qpg);
    }
  }
}

void attention_backward_block(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                              ConstTensorView lse, ConstTensorView d_out, const AttentionOptions& o, TensorView dq,
                              TensorView dk, TensorView dv, const AttentionDropout& dr) {
  TANDEM_CHECK(q.shape.size() == 4 && k.shape.size() == 4);
  const int64_t s_q = q.dim(0), s_kv = k.dim(0), nb = q.dim(1), hq = q.dim(2), hkv = k.dim(2), d = q.dim(3);
  check_shape(v, k.shape, "attention v");
  check_shape(out, q.shape, "attention output");
  check_shape(d_out, q.shape, "attention grad output");
  check_shape(lse, {nb, hq, s_q}, "attention lse");
  check_shape(dq, q.shape, "attention dq");
  check_shape(dk, k.shape, "attention dk");
  check_shape(dv, v.shape, "attention dv");
  TANDEM_CHECK(hkv > 0 && hq % hkv == 0);
  TANDEM_CHECK(o.q_positions.empty() || static_cast<int64_t>(o.q_positions.size()) == s_q);
  TANDEM_CHECK(o.kv_positions.empty() || static_cast<int64_t>(o.kv_positions.size()) == s_kv);
  const float scale = o.softmax_scale != 0.0f ? o.softmax_scale : 1.0f / std::sqrt(static_cast<float>(d));
  std::fill(dk.data.begin(), dk.data.end(), 0.0f);
  std::fill(dv.data.begin(), dv.data.end(), 0.0f);
  const int64_t qpg = hq / hkv;
  const bool drop = dr.p > 0.0f;
  TANDEM_CHECK(!drop || static_cast<int64_t>(dr.samples.size()) == nb);
  Matrix p(s_q, s_kv), dp(s_q, s_kv), pd;   // pd: the dropped-out probabilities
  std::vector<double> delta(static_cast<size_t>(s_q));
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t g = h / qpg;
      const ConstHeadMap qh = head(q, b, h), kh = head(k, b, g), vh = head(v, b, g), oh = head(out, b, h);
      const ConstHeadMap doh = head(d_out, b, h);
      p.noalias() = scale * (qh * kh.transpose());
      const float* lse_row = lse.ptr() + (b * hq + h) * s_q;
      for (int64_t i = 0; i < s_q; ++i) {
        const int64_t qp = o.q_positions.empty() ? i : o.q_positions[i];
        double dd = 0;
        for (int64_t e = 0; e < d; ++e) dd += static_cast<double>(doh(i, e)) * oh(i, e);
        delta[static_cast<size_t>(i)] = dd;
        for (int64_t j = 0; j < s_kv; ++j) {
          const int64_t kp = o.kv_positions.empty() ? j : o.kv_positions[j];
          const bool masked = o.causal && kp > qp;
          p(i, j) = masked ? 0.0f : static_cast<float>(std::exp(static_cast<double>(p(i, j)) - lse_row[i]));
        }
      }
      dp.noalias() = doh * vh.transpose();
      if (drop) {
        pd = p;
        for (int64_t i = 0; i < s_q; ++i)
          for (int64_t j = 0; j < s_kv; ++j) {
            const float m = attention_dropout_scale(dr, dr.samples[b], dr.head_offset + h, position(o.q_positions, i),
                                                    position(o.kv_positions, j));
            pd(i, j) *= m;
            dp(i, j) *= m;
          }
        head(dv, b, g).noalias() += pd.transpose() * doh;
      } else {
        head(dv, b, g).noalias() += p.transpose() * doh;
      }
      for (int64_t i = 0; i < s_q; ++i)
        for (int64_t j = 0; j < s_kv; ++j)
          dp(i, j) = static_cast<float>(scale * p(i, j) * (static_cast<double>(dp(i, j)) - delta[static_cast<size_t>(i)]));
      head(dq, b, h).noalias() = dp * kh;
      head(dk, b, g).noalias() += dp.transpose() * qh;
    }
  }
}

}  // namespace tandem::cpu
