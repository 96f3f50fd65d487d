// Host-side shape rules of part B's kernels (shape_checks_b.h).
#include "backends/cuda/shape_checks_b.h"

#include <cmath>
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


AttentionShape check_attention_inputs(const char* op, const exec::Shape& q, const exec::Shape& k,
                                      const exec::Shape& v, const exec::AttentionArgs& args) {
  expect_rank(op, "q", q, 4);
  expect_rank(op, "k", k, 4);
  const AttentionShape a{q[0], k[0], q[1], q[2], k[2], q[3]};
  expect_shape(op, "k", k, {a.s_kv, a.b, a.hkv, a.d});
  expect_shape(op, "v", v, k);
  if (a.hkv <= 0 || a.hq % a.hkv != 0)
    throw std::invalid_argument(std::string(op) + ": hq = " + std::to_string(a.hq) + " is not a multiple of hkv = " +
                                std::to_string(a.hkv));
  const auto count = [](size_t n) { return std::to_string(n); };
  if (!args.q_positions.empty() && static_cast<int64_t>(args.q_positions.size()) != a.s_q)
    throw std::invalid_argument(std::string(op) + ": q_positions has " + count(args.q_positions.size()) +
                                " entries, s_q = " + std::to_string(a.s_q));
  if (!args.kv_positions.empty() && static_cast<int64_t>(args.kv_positions.size()) != a.s_kv)
    throw std::invalid_argument(std::string(op) + ": kv_positions has " + count(args.kv_positions.size()) +
                                " entries, s_kv = " + std::to_string(a.s_kv));
  if (!(args.dropout >= 0.0f && args.dropout < 1.0f))
    throw std::invalid_argument(std::string(op) + ": dropout = " + std::to_string(args.dropout) + " is outside [0, 1)");
  if (args.dropout > 0.0f && static_cast<int64_t>(args.samples.size()) != a.b)
    throw std::invalid_argument(std::string(op) + ": samples has " + count(args.samples.size()) + " entries, b = " +
                                std::to_string(a.b));
  return a;
}

void check_attention_outputs(const char* op, const AttentionShape& a, const exec::Shape& q, const exec::Shape& out,
                             const exec::Shape& lse) {
  expect_shape(op, "out", out, q);
  expect_shape(op, "lse", lse, {a.b, a.hq, a.s_q});
}

float resolved_softmax_scale(const exec::AttentionArgs& args, int64_t d) {
  return args.softmax_scale != 0.0f ? args.softmax_scale : 1.0f / std::sqrt(static_cast<float>(d));
}

void check_attention_merge(const exec::Shape& out, const exec::Shape& lse, const exec::Shape& out_blk,
                           const exec::Shape& lse_blk, int64_t row0) {
  const char* op = "attention_merge";
  expect_rank(op, "out", out, 4);
  expect_rank(op, "out_blk", out_blk, 4);
  const int64_t s_q = out[0], b = out[1], hq = out[2], d = out[3], s_blk = out_blk[0];
  expect_shape(op, "out_blk", out_blk, {s_blk, b, hq, d});
  expect_shape(op, "lse", lse, {b, hq, s_q});
  expect_shape(op, "lse_blk", lse_blk, {b, hq, s_blk});
  if (row0 < 0 || row0 + s_blk > s_q)
    throw std::invalid_argument(std::string(op) + ": row0 = " + std::to_string(row0) + " with " +
                                std::to_string(s_blk) + " rows is outside s_q = " + std::to_string(s_q));
}

int64_t check_qkv_shapes(const char* op, const exec::Shape& mixed, int64_t groups, int64_t qpg, int64_t d,
                         const exec::Shape& q, const exec::Shape& k, const exec::Shape& v) {
  if (groups < 0 || qpg < 1 || d < 0)
    throw std::invalid_argument(std::string(op) + ": groups = " + std::to_string(groups) + ", qpg = " +
                                std::to_string(qpg) + ", d = " + std::to_string(d) + " (need qpg >= 1)");
  expect_rank(op, "mixed", mixed, 2);
  const int64_t rows = mixed[0];
  expect_shape(op, "mixed", mixed, {rows, groups * (qpg + 2) * d});
  expect_shape(op, "q", q, {rows, groups * qpg * d});
  expect_shape(op, "k", k, {rows, groups * d});
  expect_shape(op, "v", v, {rows, groups * d});
  return rows;
}

std::pair<int64_t, int64_t> check_router_logits(const char* op, const exec::Shape& logits, int64_t topk) {
  expect_rank(op, "logits", logits, 2);
  if (topk < 1 || topk > logits[1])
    throw std::invalid_argument(std::string(op) + ": topk = " + std::to_string(topk) + " of " +
                                std::to_string(logits[1]) + " experts");
  return {logits[0], logits[1]};
}

std::vector<int64_t> permutation_tokens(const char* op, const exec::PermutationPlan& plan) {
  if (plan.topk < 1 || plan.tokens < 0)
    throw std::invalid_argument(std::string(op) + ": plan with tokens = " + std::to_string(plan.tokens) +
                                ", topk = " + std::to_string(plan.topk));
  std::vector<int64_t> tok(plan.source.size());
  for (size_t j = 0; j < plan.source.size(); ++j) {
    const int64_t s = plan.source[j];
    if (s < 0 || s >= plan.tokens * plan.topk)
      throw std::invalid_argument(std::string(op) + ": source[" + std::to_string(j) + "] = " + std::to_string(s) +
                                  " is outside [0, " + std::to_string(plan.tokens * plan.topk) + ")");
    tok[j] = s / plan.topk;
  }
  return tok;
}

std::pair<int64_t, int64_t> rows_and_cols(const exec::Shape& s) {
  if (s.empty()) throw std::invalid_argument("rows of a tensor without dimensions");
  const int64_t rows = s[0], n = exec::numel_of(s);
  return {rows, rows > 0 ? n / rows : 0};
}

}  // namespace tandem::cuda
