#include "backends/cpu/ops_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "backends/kernel_math/softmax_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstHeadMap = Eigen::Map<const Matrix, 0, Stride>;
using HeadMap = Eigen::Map<Matrix, 0, Stride>;

struct Dims {
  int64_t s_q, s_kv, b, hq, hkv, d;
  float scale;
};

Dims check_dims(ConstTensorView q, ConstTensorView k, ConstTensorView v, const AttentionOptions& o) {
  TANDEM_CHECK(q.shape.size() == 4 && k.shape.size() == 4);
  Dims dims{q.dim(0), k.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), o.softmax_scale};
  check_shape(k, {dims.s_kv, dims.b, dims.hkv, dims.d}, "attention k");
  check_shape(v, k.shape, "attention v");
  TANDEM_CHECK_MSG(dims.hkv > 0 && dims.hq % dims.hkv == 0, "attention heads " << dims.hq << " over kv heads " << dims.hkv);
  TANDEM_CHECK(o.q_positions.empty() || static_cast<int64_t>(o.q_positions.size()) == dims.s_q);
  TANDEM_CHECK(o.kv_positions.empty() || static_cast<int64_t>(o.kv_positions.size()) == dims.s_kv);
  if (dims.scale == 0.0f) dims.scale = 1.0f / std::sqrt(static_cast<float>(dims.d));
  return dims;
}

// Head h of batch b of a [s, b, heads, d] tensor as an [s, d] matrix.
ConstHeadMap head(ConstTensorView t, int64_t b, int64_t h) {
  const int64_t batch = t.dim(1), heads = t.dim(2), d = t.dim(3);
  return ConstHeadMap(t.ptr() + (b * heads + h) * d, t.dim(0), d, Stride(batch * heads * d));
}
HeadMap head(TensorView t, int64_t b, int64_t h) {
  const int64_t batch = t.dim(1), heads = t.dim(2), d = t.dim(3);
  return HeadMap(t.ptr() + (b * heads + h) * d, t.dim(0), d, Stride(batch * heads * d));
}

// scores [s_q, s_kv] = scale * Q K^T with invisible keys set to -inf.
void masked_scores(const ConstHeadMap& qh, const ConstHeadMap& kh, const Dims& dims, const AttentionOptions& o,
                   Matrix& scores) {
  scores.noalias() = dims.scale * (qh * kh.transpose());
  if (!o.causal) return;
  for (int64_t i = 0; i < dims.s_q; ++i) {
    const int64_t qp = o.q_positions.empty() ? i : o.q_positions[i];
    for (int64_t j = 0; j < dims.s_kv; ++j) {
      const int64_t kp = o.kv_positions.empty() ? j : o.kv_positions[j];
      if (kp > qp) scores(i, j) = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace

void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, const AttentionOptions& options,
                       TensorView out, TensorView lse) {
  const Dims dims = check_dims(q, k, v, options);
  check_shape(out, q.shape, "attention output");
  check_shape(lse, {dims.b, dims.hq, dims.s_q}, "attention lse");
  const int64_t qpg = dims.hq / dims.hkv;
  Matrix scores(dims.s_q, dims.s_kv);
  for (int64_t b = 0; b < dims.b; ++b) {
    for (int64_t h = 0; h < dims.hq; ++h) {
      masked_scores(head(q, b, h), head(k, b, h / qpg), dims, options, scores);
      float* lse_row = lse.ptr() + (b * dims.hq + h) * dims.s_q;
      for (int64_t i = 0; i < dims.s_q; ++i) {
        float* row = scores.data() + i * dims.s_kv;
        lse_row[i] = kmath::softmax_row<double>(row, dims.s_kv, row);
      }
      head(out, b, h).noalias() = scores * head(v, b, h / qpg);
    }
  }
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                        ConstTensorView lse, ConstTensorView d_out, const AttentionOptions& options, TensorView dq,
                        TensorView dk, TensorView dv) {
  const Dims dims = check_dims(q, k, v, options);
  check_shape(out, q.shape, "attention output");
  check_shape(lse, {dims.b, dims.hq, dims.s_q}, "attention lse");
  check_shape(d_out, q.shape, "attention grad output");
  check_shape(dq, q.shape, "attention dq");
  check_shape(dk, k.shape, "attention dk");
  check_shape(dv, v.shape, "attention dv");
  std::fill(dk.data.begin(), dk.data.end(), 0.0f);
  std::fill(dv.data.begin(), dv.data.end(), 0.0f);
  const int64_t qpg = dims.hq / dims.hkv;
  Matrix probs(dims.s_q, dims.s_kv), d_probs(dims.s_q, dims.s_kv);
  for (int64_t b = 0; b < dims.b; ++b) {
    for (int64_t h = 0; h < dims.hq; ++h) {
      const int64_t g = h / qpg;
      masked_scores(head(q, b, h), head(k, b, g), dims, options, probs);
      const float* lse_row = lse.ptr() + (b * dims.hq + h) * dims.s_q;
      for (int64_t i = 0; i < dims.s_q; ++i) {
        for (int64_t j = 0; j < dims.s_kv; ++j) {
          const float sc = probs(i, j);
          probs(i, j) = sc == -std::numeric_limits<float>::infinity()
                            ? 0.0f
                            : static_cast<float>(std::exp(static_cast<double>(sc) - lse_row[i]));
        }
      }
      const ConstHeadMap d_out_h = head(d_out, b, h);
      head(dv, b, g).noalias() += probs.transpose() * d_out_h;
      d_probs.noalias() = d_out_h * head(v, b, g).transpose();
      for (int64_t i = 0; i < dims.s_q; ++i) {
        float* row = d_probs.data() + i * dims.s_kv;
        kmath::softmax_row_backward<double>(probs.data() + i * dims.s_kv, row, dims.s_kv, row, dims.scale);
      }
      head(dq, b, h).noalias() = d_probs * head(k, b, g);
      head(dk, b, g).noalias() += d_probs.transpose() * head(q, b, h);
    }
  }
}

void split_qkv(ConstTensorView mixed, int64_t groups, int64_t qpg, int64_t d, TensorView q, TensorView k,
               TensorView v) {
  TANDEM_CHECK(mixed.shape.size() == 2);
  const int64_t rows = mixed.dim(0);
  check_shape(mixed, {rows, groups * (qpg + 2) * d}, "fused qkv");
  check_shape(q, {rows, groups * qpg * d}, "split q");
  check_shape(k, {rows, groups * d}, "split k");
  check_shape(v, {rows, groups * d}, "split v");
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = mixed.ptr() + (r * groups + g) * (qpg + 2) * d;
      std::copy_n(src, qpg * d, q.ptr() + (r * groups + g) * qpg * d);
      std::copy_n(src + qpg * d, d, k.ptr() + (r * groups + g) * d);
      std::copy_n(src + (qpg + 1) * d, d, v.ptr() + (r * groups + g) * d);
    }
  }
}

void merge_qkv(ConstTensorView q, ConstTensorView k, ConstTensorView v, int64_t groups, int64_t qpg, int64_t d,
               TensorView mixed) {
  TANDEM_CHECK(mixed.shape.size() == 2);
  const int64_t rows = mixed.dim(0);
  check_shape(mixed, {rows, groups * (qpg + 2) * d}, "fused qkv");
  check_shape(q, {rows, groups * qpg * d}, "split q");
  check_shape(k, {rows, groups * d}, "split k");
  check_shape(v, {rows, groups * d}, "split v");
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      float* dst = mixed.ptr() + (r * groups + g) * (qpg + 2) * d;
      std::copy_n(q.ptr() + (r * groups + g) * qpg * d, qpg * d, dst);
      std::copy_n(k.ptr() + (r * groups + g) * d, d, dst + qpg * d);
      std::copy_n(v.ptr() + (r * groups + g) * d, d, dst + (qpg + 1) * d);
    }
  }
}

}  // namespace tandem::cpu
