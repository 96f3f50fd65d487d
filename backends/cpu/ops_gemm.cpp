#include "backends/cpu/ops_gemm.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include <Eigen/Core>

#include "core/check.h"

#if defined(TANDEM_CPU_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace tandem::cpu {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstMap = Eigen::Map<const RowMajor, 0, Stride>;
using Map = Eigen::Map<RowMajor, 0, Stride>;

}  // namespace

void sgemm_eigen(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  ConstMap am(a, trans_a ? k : m, trans_a ? m : k, Stride(lda));
  ConstMap bm(b, trans_b ? n : k, trans_b ? k : n, Stride(ldb));
  Map cm(c, m, n, Stride(ldc));
  if (beta == 0.0f) {
    cm.setZero();
  } else if (beta != 1.0f) {
    cm *= beta;
  }
  if (trans_a && trans_b) {
    cm.noalias() += alpha * am.transpose() * bm.transpose();
  } else if (trans_a) {
    cm.noalias() += alpha * am.transpose() * bm;
  } else if (trans_b) {
    cm.noalias() += alpha * am * bm.transpose();
  } else {
    cm.noalias() += alpha * am * bm;
  }
}

namespace {

// Shapes of a weight of `layout` for a [k] -> [n] layer.
Shape weight_shape(WeightLayout layout, int64_t k, int64_t n) {
  return layout == WeightLayout::InOut ? Shape{k, n} : Shape{n, k};
}

int64_t total_rows(std::span<const int64_t> counts) {
  int64_t rows = 0;
  for (int64_t c : counts) {
    TANDEM_CHECK_MSG(c >= 0, "negative expert token count " << c);
    rows += c;
  }
  return rows;
}

// y [m, n] (= or +=) x [m, k] · W where W is [k, n] or [n, k] at `w`.
void linear(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k, WeightLayout layout,
            float beta) {
  const bool tw = layout == WeightLayout::OutIn;
  sgemm(false, tw, m, n, k, 1.0f, x, k, w, tw ? k : n, beta, y, n);
}

void linear_grad_input(const float* dy, const float* w, float* dx, int64_t m, int64_t n, int64_t k,
                       WeightLayout layout) {
  const bool tw = layout == WeightLayout::OutIn;
  // dx [m, k] = dy [m, n] · W^T: W^T is [n, k] (transpose of InOut [k, n]; OutIn [n, k] as is).
  sgemm(false, !tw, m, k, n, 1.0f, dy, n, w, tw ? k : n, 0.0f, dx, k);
}

void linear_grad_weight(const float* x, const float* dy, float* dw, int64_t m, int64_t n, int64_t k,
                        WeightLayout layout) {
  if (layout == WeightLayout::InOut) {
    sgemm(true, false, k, n, m, 1.0f, x, k, dy, n, 1.0f, dw, n);   // dW [k, n] += x^T · dy
  } else {
    sgemm(true, false, n, k, m, 1.0f, dy, n, x, k, 1.0f, dw, k);   // dW [n, k] += dy^T · x
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  TANDEM_CHECK(m >= 0 && n >= 0 && k >= 0);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    Map cm(c, m, n, Stride(ldc));
    if (beta == 0.0f) cm.setZero(); else cm *= beta;
    return;
  }
#if defined(TANDEM_CPU_HAVE_OPENBLAS)
  if (m == 1) {
    // One row (a decoding step): GEMV. GEMM would pack all of B on every call, which costs more
    // than the product itself. c [1, n] = alpha * a · op(B) + beta * c; a's k elements are lda
    // apart when trans_a. c is zeroed first for beta == 0, so it is never read then.
    if (beta == 0.0f) std::fill_n(c, n, 0.0f);
    const blasint inc_a = trans_a ? static_cast<blasint>(lda) : 1;
    if (trans_b) {   // B [n, k]: c = B a
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k), alpha, b,
                  static_cast<blasint>(ldb), a, inc_a, beta, c, 1);
    } else {         // B [k, n]: c = B^T a
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(k), static_cast<blasint>(n), alpha, b,
                  static_cast<blasint>(ldb), a, inc_a, beta, c, 1);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
#else
  sgemm_eigen(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

const char* gemm_backend_name() {
#if defined(TANDEM_CPU_HAVE_OPENBLAS)
  return "openblas";
#else
  return "eigen";
#endif
}

void set_gemm_threads(int threads) {
  TANDEM_CHECK(threads >= 1);
#if defined(TANDEM_CPU_HAVE_OPENBLAS)
  openblas_set_num_threads(threads);
#endif
}

void gemm_forward(ConstTensorView x, ConstTensorView w, ConstTensorView bias, WeightLayout layout, TensorView y) {
  TANDEM_CHECK(x.shape.size() == 2 && y.shape.size() == 2);
  const int64_t m = x.dim(0), k = x.dim(1), n = y.dim(1);
  check_shape(w, weight_shape(layout, k, n), "gemm weight");
  check_shape(y, {m, n}, "gemm output");
  check_optional_shape(bias, {n}, "gemm bias");
  if (!bias.empty()) {
    for (int64_t r = 0; r < m; ++r) std::copy(bias.data.begin(), bias.data.end(), y.data.begin() + r * n);
  }
  linear(x.ptr(), w.ptr(), y.ptr(), m, n, k, layout, bias.empty() ? 0.0f : 1.0f);
}

void gemm_grad_input(ConstTensorView dy, ConstTensorView w, WeightLayout layout, TensorView dx) {
  TANDEM_CHECK(dy.shape.size() == 2 && dx.shape.size() == 2);
  const int64_t m = dy.dim(0), n = dy.dim(1), k = dx.dim(1);
  check_shape(w, weight_shape(layout, k, n), "gemm weight");
  check_shape(dx, {m, k}, "gemm grad input");
  linear_grad_input(dy.ptr(), w.ptr(), dx.ptr(), m, n, k, layout);
}

void gemm_grad_weight(ConstTensorView x, ConstTensorView dy, WeightLayout layout, TensorView dw, TensorView dbias) {
  TANDEM_CHECK(x.shape.size() == 2 && dy.shape.size() == 2);
  const int64_t m = x.dim(0), k = x.dim(1), n = dy.dim(1);
  check_shape(dy, {m, n}, "gemm grad output");
  check_shape(dw, weight_shape(layout, k, n), "gemm grad weight");
  check_optional_shape(dbias, {n}, "gemm grad bias");
  linear_grad_weight(x.ptr(), dy.ptr(), dw.ptr(), m, n, k, layout);
  if (!dbias.empty()) {
    std::vector<double> sums(static_cast<size_t>(n), 0.0);   // column sums of dy in double
    for (int64_t r = 0; r < m; ++r) {
      const float* row = dy.ptr() + r * n;
      for (int64_t j = 0; j < n; ++j) sums[j] += row[j];
    }
    for (int64_t j = 0; j < n; ++j) dbias.data[j] += static_cast<float>(sums[j]);
  }
}

void grouped_gemm_forward(ConstTensorView x, ConstTensorView w, std::span<const int64_t> counts, WeightLayout layout,
                          TensorView y) {
  const int64_t experts = static_cast<int64_t>(counts.size()), rows = total_rows(counts);
  TANDEM_CHECK(x.shape.size() == 2 && y.shape.size() == 2 && w.shape.size() == 3);
  const int64_t k = x.dim(1), n = y.dim(1);
  check_shape(x, {rows, k}, "grouped gemm input");
  check_shape(y, {rows, n}, "grouped gemm output");
  Shape ws = weight_shape(layout, k, n);
  check_shape(w, {experts, ws[0], ws[1]}, "grouped gemm weight");
  int64_t offset = 0;
  for (int64_t e = 0; e < experts; ++e) {
    linear(x.ptr() + offset * k, w.ptr() + e * k * n, y.ptr() + offset * n, counts[e], n, k, layout, 0.0f);
    offset += counts[e];
  }
}

void grouped_gemm_grad_input(ConstTensorView dy, ConstTensorView w, std::span<const int64_t> counts,
                             WeightLayout layout, TensorView dx) {
  const int64_t experts = static_cast<int64_t>(counts.size()), rows = total_rows(counts);
  TANDEM_CHECK(dy.shape.size() == 2 && dx.shape.size() == 2 && w.shape.size() == 3);
  const int64_t n = dy.dim(1), k = dx.dim(1);
  check_shape(dy, {rows, n}, "grouped gemm grad output");
  check_shape(dx, {rows, k}, "grouped gemm grad input");
  Shape ws = weight_shape(layout, k, n);
  check_shape(w, {experts, ws[0], ws[1]}, "grouped gemm weight");
  int64_t offset = 0;
  for (int64_t e = 0; e < experts; ++e) {
    linear_grad_input(dy.ptr() + offset * n, w.ptr() + e * k * n, dx.ptr() + offset * k, counts[e], n, k, layout);
    offset += counts[e];
  }
}

void grouped_gemm_grad_weight(ConstTensorView x, ConstTensorView dy, std::span<const int64_t> counts,
                              WeightLayout layout, TensorView dw) {
  const int64_t experts = static_cast<int64_t>(counts.size()), rows = total_rows(counts);
  TANDEM_CHECK(x.shape.size() == 2 && dy.shape.size() == 2 && dw.shape.size() == 3);
  const int64_t k = x.dim(1), n = dy.dim(1);
  check_shape(x, {rows, k}, "grouped gemm input");
  check_shape(dy, {rows, n}, "grouped gemm grad output");
  Shape ws = weight_shape(layout, k, n);
  check_shape(dw, {experts, ws[0], ws[1]}, "grouped gemm grad weight");
  int64_t offset = 0;
  for (int64_t e = 0; e < experts; ++e) {
    linear_grad_weight(x.ptr() + offset * k, dy.ptr() + offset * n, dw.ptr() + e * k * n, counts[e], n, k, layout);
    offset += counts[e];
  }
}

}  // namespace tandem::cpu
