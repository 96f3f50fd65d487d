// Shape rules of the part A kernels (shape_checks_a.h), the CPU device's rules as exceptions.
#include "backends/cuda/shape_checks_a.h"

#include <sstream>
#include <stdexcept>
#include <string>

namespace tandem::cuda {
namespace {

std::string shape_text(const exec::Shape& s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

[[noreturn]] void fail(const char* op, const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); }

void expect(const char* op, const char* field, const exec::Shape& got, const exec::Shape& want) {
  if (got != want) fail(op, std::string(field) + " has shape " + shape_text(got) + ", expected " + shape_text(want));
}

void expect_rank(const char* op, const char* field, const exec::Shape& s, size_t rank) {
  if (s.size() != rank)
    fail(op, std::string(field) + " has shape " + shape_text(s) + ", expected " + std::to_string(rank) + " dimensions");
  for (int64_t d : s)
    if (d < 0) fail(op, std::string(field) + " has shape " + shape_text(s) + " with a negative dimension");
}

}  // namespace

int64_t check_same_numel(const char* op, const char* a_field, const exec::Shape& a, const char* b_field,
                         const exec::Shape& b) {
  const int64_t n = exec::numel_of(a);
  if (n != exec::numel_of(b))
    fail(op, std::string(a_field) + " " + shape_text(a) + " and " + b_field + " " + shape_text(b) +
                 " differ in element count");
  return n;
}

RowsCols check_row_vector(const char* op, const exec::Shape& x, const exec::Shape& vec) {
  const int64_t cols = exec::numel_of(vec), n = exec::numel_of(x);
  if (cols <= 0) fail(op, "vector has shape " + shape_text(vec) + ", expected at least one element");
  if (n % cols != 0) fail(op, "x " + shape_text(x) + " is not rows of the vector's " + std::to_string(cols) + " columns");
  return {n / cols, cols};
}

RowsCols check_copy_columns(const exec::Shape& src, int64_t begin, const exec::Shape& dst) {
  const char* op = "copy_columns";
  expect_rank(op, "src", src, 2);
  expect_rank(op, "dst", dst, 2);
  if (dst[0] != src[0]) fail(op, "dst " + shape_text(dst) + " and src " + shape_text(src) + " differ in rows");
  if (begin < 0 || begin + dst[1] > src[1])
    fail(op, "begin = " + std::to_string(begin) + " with width " + std::to_string(dst[1]) + " exceeds src columns " +
                 std::to_string(src[1]));
  return {src[0], src[1]};
}

RowsCols check_dropout(const exec::Shape& x, float p, int64_t num_row_ids) {
  const char* op = "dropout";
  if (x.empty()) fail(op, "x has no dimensions");
  if (num_row_ids != x[0])
    fail(op, "row_ids has " + std::to_string(num_row_ids) + " entries for x " + shape_text(x));
  if (!(p >= 0.0f && p <= 1.0f)) fail(op, "p = " + std::to_string(p) + " is not in [0, 1]");
  const int64_t rows = x[0];
  return {rows, rows > 0 ? exec::numel_of(x) / rows : 0};
}

RowsCols check_embedding(const char* op, int64_t tokens, const exec::Shape& table, const exec::Shape& out) {
  expect_rank(op, "table", table, 2);
  expect(op, "output", out, {tokens, table[1]});
  return {table[0], table[1]};
}

RowsCols check_norm_forward(exec::NormKind kind, const exec::Shape& x, const exec::Shape& gamma,
                            const exec::Shape* beta, const exec::Shape& y, const exec::Shape* mean,
                            const exec::Shape& rstd) {
  const char* op = kind == exec::NormKind::LayerNorm ? "layernorm_forward" : "rmsnorm_forward";
  expect_rank(op, "x", x, 2);
  const int64_t rows = x[0], h = x[1];
  if (rows > 0 && h == 0) fail(op, "x has shape " + shape_text(x) + " with no features");
  expect(op, "gamma", gamma, {h});
  if (kind == exec::NormKind::LayerNorm && beta) expect(op, "beta", *beta, {h});
  expect(op, "y", y, x);
  if (kind == exec::NormKind::LayerNorm) {
    if (!mean) fail(op, "mean is absent");
    expect(op, "mean", *mean, {rows});
  }
  expect(op, "rstd", rstd, {rows});
  return {rows, h};
}

RowsCols check_norm_backward(exec::NormKind kind, const exec::Shape& x, const exec::Shape& gamma,
                             const exec::Shape* mean, const exec::Shape& rstd, const exec::Shape& dy,
                             const exec::Shape& dx, const exec::Shape& dgamma, const exec::Shape* dbeta) {
  const char* op = kind == exec::NormKind::LayerNorm ? "layernorm_backward" : "rmsnorm_backward";
  expect_rank(op, "x", x, 2);
  const int64_t rows = x[0], h = x[1];
  if (rows > 0 && h == 0) fail(op, "x has shape " + shape_text(x) + " with no features");
  expect(op, "gamma", gamma, {h});
  if (kind == exec::NormKind::LayerNorm) {
    if (!mean) fail(op, "mean is absent");
    expect(op, "mean", *mean, {rows});
  }
  expect(op, "rstd", rstd, {rows});
  expect(op, "dy", dy, x);
  expect(op, "dx", dx, x);
  expect(op, "dgamma", dgamma, {h});
  if (kind == exec::NormKind::LayerNorm && dbeta) expect(op, "dbeta", *dbeta, {h});
  return {rows, h};
}

RowsCols check_activation_forward(exec::ActivationKind kind, const exec::Shape& x, const exec::Shape& y) {
  if (kind != exec::ActivationKind::SwiGlu) {
    expect("gelu_forward", "y", y, x);
    return {exec::numel_of(x), 1};
  }
  const char* op = "swiglu_forward";
  expect_rank(op, "x", x, 2);
  if (x[1] % 2 != 0) fail(op, "x has shape " + shape_text(x) + ", expected an even number of columns [gate | up]");
  expect(op, "y", y, {x[0], x[1] / 2});
  return {x[0], x[1] / 2};
}

RowsCols check_activation_backward(exec::ActivationKind kind, const exec::Shape& x, const exec::Shape& dy,
                                   const exec::Shape& dx) {
  if (kind != exec::ActivationKind::SwiGlu) {
    expect("gelu_backward", "dy", dy, x);
    expect("gelu_backward", "dx", dx, x);
    return {exec::numel_of(x), 1};
  }
  const char* op = "swiglu_backward";
  expect_rank(op, "x", x, 2);
  if (x[1] % 2 != 0) fail(op, "x has shape " + shape_text(x) + ", expected an even number of columns [gate | up]");
  expect(op, "dy", dy, {x[0], x[1] / 2});
  expect(op, "dx", dx, x);
  return {x[0], x[1] / 2};
}

RopeDims check_rope(const char* op, const exec::Shape& x, int64_t num_positions, double base, const exec::Shape& y) {
  expect_rank(op, "x", x, 4);
  if (x[3] % 2 != 0) fail(op, "head_dim = " + std::to_string(x[3]) + " is odd");
  expect(op, "output", y, x);
  if (num_positions != 0 && num_positions != x[0])
    fail(op, "positions has " + std::to_string(num_positions) + " entries for " + std::to_string(x[0]) + " sequence rows");
  if (!(base > 0)) fail(op, "base = " + std::to_string(base) + " must be positive");
  return {x[0], x[1] * x[2], x[3]};
}

RowsCols check_cross_entropy_partials(const exec::Shape& logits, int64_t num_targets, const exec::Shape& max,
                                      const exec::Shape& sum_exp, const exec::Shape& target_logit) {
  const char* op = "cross_entropy_partials";
  expect_rank(op, "logits", logits, 2);
  const int64_t tokens = logits[0];
  if (num_targets != tokens)
    fail(op, std::to_string(num_targets) + " targets for logits " + shape_text(logits));
  expect(op, "max", max, {tokens});
  expect(op, "sum_exp", sum_exp, {tokens});
  expect(op, "target_logit", target_logit, {tokens});
  return {tokens, logits[1]};
}

int64_t check_token_vectors(const char* op, std::initializer_list<std::pair<const char*, const exec::Shape*>> fields) {
  if (fields.size() == 0) return 0;
  const auto& first = *fields.begin();
  const int64_t n = exec::numel_of(*first.second);
  for (const auto& [field, shape] : fields)
    if (exec::numel_of(*shape) != n)
      fail(op, std::string(field) + " " + shape_text(*shape) + " has not the " + std::to_string(n) + " elements of " +
                   first.first);
  return n;
}

RowsCols check_cross_entropy_backward(const exec::Shape& logits, int64_t num_targets, const exec::Shape& max,
                                      const exec::Shape& sum_exp, const exec::Shape& d_loss,
                                      const exec::Shape& d_logits) {
  const char* op = "cross_entropy_backward";
  expect_rank(op, "logits", logits, 2);
  const int64_t tokens = logits[0];
  if (num_targets != tokens)
    fail(op, std::to_string(num_targets) + " targets for logits " + shape_text(logits));
  expect(op, "max", max, {tokens});
  expect(op, "sum_exp", sum_exp, {tokens});
  expect(op, "d_loss", d_loss, {tokens});
  expect(op, "d_logits", d_logits, logits);
  return {tokens, logits[1]};
}

int64_t check_adamw(const exec::Shape& param, const exec::Shape& grad, const exec::Shape& exp_avg,
                    const exec::Shape& exp_avg_sq, int64_t step) {
  const char* op = "adamw_step";
  const int64_t n = check_same_numel(op, "param", param, "grad", grad);
  check_same_numel(op, "param", param, "exp_avg", exp_avg);
  check_same_numel(op, "param", param, "exp_avg_sq", exp_avg_sq);
  if (step < 1) fail(op, "step = " + std::to_string(step) + " must be >= 1");
  return n;
}

}  // namespace tandem::cuda
