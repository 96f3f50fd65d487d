// Host-side shape rules of part B's kernels (shape_checks_b.h).
#include "backends/cuda/shape_checks_b.h"

#include <sstream>
#include <stdexcept>

namespace tandem::cuda {
namespace {

std::string shape_text(const exec::Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

void expect_rank(const char* op, const char* field, const exec::Shape& s, size_t rank) {
  if (s.size() != rank)
    throw std::invalid_argument(std::string(op) + ": " + field + " has shape " + shape_text(s) + ", expected " +
                                std::to_string(rank) + " dimensions");
}

int64_t rows_of_counts(const char* op, std::span<const int64_t> counts) {
  int64_t rows = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] < 0)
      throw std::invalid_argument(std::string(op) + ": counts[" + std::to_string(e) + "] = " +
                                  std::to_string(counts[e]) + " is negative");
    rows += counts[e];
  }
  return rows;
}

exec::Shape expert_weight_shape(std::span<const int64_t> counts, int64_t k, int64_t n) {
  return {static_cast<int64_t>(counts.size()), k, n};
}

}  // namespace

void expect_shape(const char* op, const char* field, const exec::Shape& got, const exec::Shape& want) {
  if (got != want)
    throw std::invalid_argument(std::string(op) + ": " + field + " has shape " + shape_text(got) + ", expected " +
                                shape_text(want));
}

exec::Shape linear_weight_shape(exec::WeightLayout layout, int64_t k, int64_t n) {
  return layout == exec::WeightLayout::InOut ? exec::Shape{k, n} : exec::Shape{n, k};
}

LinearDims check_gemm_forward(const exec::Shape& x, const exec::Shape& w, const exec::Shape* bias,
                              exec::WeightLayout layout, const exec::Shape& y) {
  expect_rank("gemm_forward", "x", x, 2);
  expect_rank("gemm_forward", "y", y, 2);
  const LinearDims d{x[0], y[1], x[1]};
  expect_shape("gemm_forward", "w", w, linear_weight_shape(layout, d.k, d.n));
  expect_shape("gemm_forward", "y", y, {d.m, d.n});
  if (bias) expect_shape("gemm_forward", "bias", *bias, {d.n});
  return d;
}

LinearDims check_gemm_grad_input(const exec::Shape& dy, const exec::Shape& w, exec::WeightLayout layout,
                                 const exec::Shape& dx) {
  expect_rank("gemm_grad_input", "dy", dy, 2);
  expect_rank("gemm_grad_input", "dx", dx, 2);
  const LinearDims d{dy[0], dy[1], dx[1]};
  expect_shape("gemm_grad_input", "w", w, linear_weight_shape(layout, d.k, d.n));
  expect_shape("gemm_grad_input", "dx", dx, {d.m, d.k});
  return d;
}

LinearDims check_gemm_grad_weight(const exec::Shape& x, const exec::Shape& dy, exec::WeightLayout layout,
                                  const exec::Shape& dw, const exec::Shape* dbias) {
  expect_rank("gemm_grad_weight", "x", x, 2);
  expect_rank("gemm_grad_weight", "dy", dy, 2);
  const LinearDims d{x[0], dy[1], x[1]};
  expect_shape("gemm_grad_weight", "dy", dy, {d.m, d.n});
  expect_shape("gemm_grad_weight", "dw", dw, linear_weight_shape(layout, d.k, d.n));
  if (dbias) expect_shape("gemm_grad_weight", "dbias", *dbias, {d.n});
  return d;
}

LinearDims check_grouped_forward(const exec::Shape& x, const exec::Shape& w, std::span<const int64_t> counts,
                                 const exec::Shape& y) {
  const int64_t rows = rows_of_counts("grouped_gemm_forward", counts);
  expect_rank("grouped_gemm_forward", "x", x, 2);
  expect_rank("grouped_gemm_forward", "y", y, 2);
  const LinearDims d{rows, y[1], x[1]};
  expect_shape("grouped_gemm_forward", "x", x, {rows, d.k});
  expect_shape("grouped_gemm_forward", "y", y, {rows, d.n});
  expect_shape("grouped_gemm_forward", "w", w, expert_weight_shape(counts, d.k, d.n));
  return d;
}

LinearDims check_grouped_grad_input(const exec::Shape& dy, const exec::Shape& w, std::span<const int64_t> counts,
                                    const exec::Shape& dx) {
  const int64_t rows = rows_of_counts("grouped_gemm_grad_input", counts);
  expect_rank("grouped_gemm_grad_input", "dy", dy, 2);
  expect_rank("grouped_gemm_grad_input", "dx", dx, 2);
  const LinearDims d{rows, dy[1], dx[1]};
  expect_shape("grouped_gemm_grad_input", "dy", dy, {rows, d.n});
  expect_shape("grouped_gemm_grad_input", "dx", dx, {rows, d.k});
  expect_shape("grouped_gemm_grad_input", "w", w, expert_weight_shape(counts, d.k, d.n));
  return d;
}

LinearDims check_grouped_grad_weight(const exec::Shape& x, const exec::Shape& dy, std::span<const int64_t> counts,
                                     const exec::Shape& dw) {
  const int64_t rows = rows_of_counts("grouped_gemm_grad_weight", counts);
  expect_rank("grouped_gemm_grad_weight", "x", x, 2);
  expect_rank("grouped_gemm_grad_weight", "dy", dy, 2);
  const LinearDims d{rows, dy[1], x[1]};
  expect_shape("grouped_gemm_grad_weight", "x", x, {rows, d.k});
  expect_shape("grouped_gemm_grad_weight", "dy", dy, {rows, d.n});
  expect_shape("grouped_gemm_grad_weight", "dw", dw, expert_weight_shape(counts, d.k, d.n));
  return d;
}

LtGemm linear_forward_gemm(const LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // y [m, n] = x [m, k] . W ([k, n], or [n, k] transposed)
  g.m = d.m;
  g.n = d.n;
  g.k = d.k;
  g.trans_b = layout == exec::WeightLayout::OutIn;
  return g;
}

LtGemm linear_grad_input_gemm(const LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // dx [m, k] = dy [m, n] . W^T (W^T: InOut [k, n] transposed, OutIn [n, k] as is)
  g.m = d.m;
  g.n = d.k;
  g.k = d.n;
  g.trans_b = layout == exec::WeightLayout::InOut;
  return g;
}

LtGemm linear_grad_weight_gemm(const LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // InOut: dW [k, n] += x^T dy (a = x, b = dy); OutIn: dW [n, k] += dy^T x (a = dy, b = x)
  const bool in_out = layout == exec::WeightLayout::InOut;
  g.trans_a = true;
  g.m = in_out ? d.k : d.n;
  g.n = in_out ? d.n : d.k;
  g.k = d.m;
  g.beta = 1.0f;
  return g;
}

}  // namespace tandem::cuda
