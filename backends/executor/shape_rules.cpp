// The Device ops' shape rules (shape_rules.h), shared by the CPU and CUDA devices.
#include "backends/executor/shape_rules.h"

#include <sstream>

namespace tandem::exec {
namespace {

[[noreturn]] void fail(const char* op, const std::string& what) { throw ShapeError(std::string(op) + ": " + what); }

void expect(const char* op, const char* field, const Shape& got, const Shape& want) { expect_shape(op, field, got, want); }

void expect_rank(const char* op, const char* field, const Shape& s, size_t rank) {
  if (s.size() != rank)
    fail(op, std::string(field) + " has shape " + shape_text(s) + ", expected " + std::to_string(rank) + " dimensions");
  for (int64_t d : s)
    if (d < 0) fail(op, std::string(field) + " has shape " + shape_text(s) + " with a negative dimension");
}

int64_t rows_of_counts(const char* op, std::span<const int64_t> counts) {
  int64_t rows = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] < 0)
      fail(op, "counts[" + std::to_string(e) + "] = " + std::to_string(counts[e]) + " is negative");
    rows += counts[e];
  }
  return rows;
}

Shape expert_weight_shape(std::span<const int64_t> counts, int64_t k, int64_t n) {
  return {static_cast<int64_t>(counts.size()), k, n};
}

}  // namespace

std::string shape_text(const Shape& s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

void expect_shape(const char* op, const char* field, const Shape& got, const Shape& want) {
  if (got != want) fail(op, std::string(field) + " has shape " + shape_text(got) + ", expected " + shape_text(want));
}

int64_t check_same_numel(const char* op, const char* a_field, const Shape& a, const char* b_field,
                         const Shape& b) {
  const int64_t n = numel_of(a);
  if (n != numel_of(b))
    fail(op, std::string(a_field) + " " + shape_text(a) + " and " + b_field + " " + shape_text(b) +
                 " differ in element count");
  return n;
}

RowsCols check_row_vector(const char* op, const Shape& x, const Shape& vec) {
  const int64_t cols = numel_of(vec), n = numel_of(x);
  if (cols <= 0) fail(op, "vector has shape " + shape_text(vec) + ", expected at least one element");
  if (n % cols != 0) fail(op, "x " + shape_text(x) + " is not rows of the vector's " + std::to_string(cols) + " columns");
  return {n / cols, cols};
}

RowsCols check_copy_columns(const Shape& src, int64_t begin, const Shape& dst) {
  const char* op = "copy_columns";
  expect_rank(op, "src", src, 2);
  expect_rank(op, "dst", dst, 2);
  if (dst[0] != src[0]) fail(op, "dst " + shape_text(dst) + " and src " + shape_text(src) + " differ in rows");
  if (begin < 0 || begin + dst[1] > src[1])
    fail(op, "begin = " + std::to_string(begin) + " with width " + std::to_string(dst[1]) + " exceeds src columns " +
                 std::to_string(src[1]));
  return {src[0], src[1]};
}

RowsCols check_dropout(const Shape& x, float p, int64_t num_row_ids) {
  const char* op = "dropout";
  if (x.empty()) fail(op, "x has no dimensions");
  if (num_row_ids != x[0])
    fail(op, "row_ids has " + std::to_string(num_row_ids) + " entries for x " + shape_text(x));
  if (!(p >= 0.0f && p <= 1.0f)) fail(op, "p = " + std::to_string(p) + " is not in [0, 1]");
  const int64_t rows = x[0];
  return {rows, rows > 0 ? numel_of(x) / rows : 0};
}

RowsCols check_embedding(const char* op, int64_t tokens, const Shape& table, const Shape& out) {
  expect_rank(op, "table", table, 2);
  expect(op, "output", out, {tokens, table[1]});
  return {table[0], table[1]};
}

RowsCols check_norm_forward(NormKind kind, const Shape& x, const Shape& gamma,
                            const Shape* beta, const Shape& y, const Shape* mean,
                            const Shape& rstd) {
  const char* op = kind == NormKind::LayerNorm ? "layernorm_forward" : "rmsnorm_forward";
  expect_rank(op, "x", x, 2);
  const int64_t rows = x[0], h = x[1];
  if (rows > 0 && h == 0) fail(op, "x has shape " + shape_text(x) + " with no features");
  expect(op, "gamma", gamma, {h});
  if (kind == NormKind::LayerNorm && beta) expect(op, "beta", *beta, {h});
  expect(op, "y", y, x);
  if (kind == NormKind::LayerNorm) {
    if (!mean) fail(op, "mean is absent");
    expect(op, "mean", *mean, {rows});
  }
  expect(op, "rstd", rstd, {rows});
  return {rows, h};
}

RowsCols check_norm_backward(NormKind kind, const Shape& x, const Shape& gamma,
                             const Shape* mean, const Shape& rstd, const Shape& dy,
                             const Shape& dx, const Shape& dgamma, const Shape* dbeta) {
  const char* op = kind == NormKind::LayerNorm ? "layernorm_backward" : "rmsnorm_backward";
  expect_rank(op, "x", x, 2);
  const int64_t rows = x[0], h = x[1];
  if (rows > 0 && h == 0) fail(op, "x has shape " + shape_text(x) + " with no features");
  expect(op, "gamma", gamma, {h});
  if (kind == NormKind::LayerNorm) {
    if (!mean) fail(op, "mean is absent");
    expect(op, "mean", *mean, {rows});
  }
  expect(op, "rstd", rstd, {rows});
  expect(op, "dy", dy, x);
  expect(op, "dx", dx, x);
  expect(op, "dgamma", dgamma, {h});
  if (kind == NormKind::LayerNorm && dbeta) expect(op, "dbeta", *dbeta, {h});
  return {rows, h};
}

RowsCols check_activation_forward(ActivationKind kind, const Shape& x, const Shape& y) {
  if (kind != ActivationKind::SwiGlu) {
    expect("gelu_forward", "y", y, x);
    return {numel_of(x), 1};
  }
  const char* op = "swiglu_forward";
  expect_rank(op, "x", x, 2);
  if (x[1] % 2 != 0) fail(op, "x has shape " + shape_text(x) + ", expected an even number of columns [gate | up]");
  expect(op, "y", y, {x[0], x[1] / 2});
  return {x[0], x[1] / 2};
}

RowsCols check_activation_backward(ActivationKind kind, const Shape& x, const Shape& dy,
                                   const Shape& dx) {
  if (kind != ActivationKind::SwiGlu) {
    expect("gelu_backward", "dy", dy, x);
    expect("gelu_backward", "dx", dx, x);
    return {numel_of(x), 1};
  }
  const char* op = "swiglu_backward";
  expect_rank(op, "x", x, 2);
  if (x[1] % 2 != 0) fail(op, "x has shape " + shape_text(x) + ", expected an even number of columns [gate | up]");
  expect(op, "dy", dy, {x[0], x[1] / 2});
  expect(op, "dx", dx, x);
  return {x[0], x[1] / 2};
}

RopeDims check_rope(const char* op, const Shape& x, int64_t num_positions, double base, const Shape& y) {
  expect_rank(op, "x", x, 4);
  if (x[3] % 2 != 0) fail(op, "head_dim = " + std::to_string(x[3]) + " is odd");
  expect(op, "output", y, x);
  if (num_positions != 0 && num_positions != x[0])
    fail(op, "positions has " + std::to_string(num_positions) + " entries for " + std::to_string(x[0]) + " sequence rows");
  if (!(base > 0)) fail(op, "base = " + std::to_string(base) + " must be positive");
  return {x[0], x[1] * x[2], x[3]};
}

RowsCols check_cross_entropy_partials(const Shape& logits, int64_t num_targets, const Shape& max,
                                      const Shape& sum_exp, const Shape& target_logit) {
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

int64_t check_token_vectors(const char* op, std::initializer_list<std::pair<const char*, const Shape*>> fields) {
  if (fields.size() == 0) return 0;
  const auto& first = *fields.begin();
  const int64_t n = numel_of(*first.second);
  for (const auto& [field, shape] : fields)
    if (numel_of(*shape) != n)
      fail(op, std::string(field) + " " + shape_text(*shape) + " has not the " + std::to_string(n) + " elements of " +
                   first.first);
  return n;
}

RowsCols check_cross_entropy_backward(const Shape& logits, int64_t num_targets, const Shape& max,
                                      const Shape& sum_exp, const Shape& d_loss,
                                      const Shape& d_logits) {
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

int64_t check_adamw(const Shape& param, const Shape& grad, const Shape& exp_avg,
                    const Shape& exp_avg_sq, int64_t step) {
  const char* op = "adamw_step";
  const int64_t n = check_same_numel(op, "param", param, "grad", grad);
  check_same_numel(op, "param", param, "exp_avg", exp_avg);
  check_same_numel(op, "param", param, "exp_avg_sq", exp_avg_sq);
  if (step < 1) fail(op, "step = " + std::to_string(step) + " must be >= 1");
  return n;
}

Shape linear_weight_shape(WeightLayout layout, int64_t k, int64_t n) {
  return layout == WeightLayout::InOut ? Shape{k, n} : Shape{n, k};
}

LinearDims check_gemm_forward(const Shape& x, const Shape& w, const Shape* bias,
                              WeightLayout layout, const Shape& y) {
  expect_rank("gemm_forward", "x", x, 2);
  expect_rank("gemm_forward", "y", y, 2);
  const LinearDims d{x[0], y[1], x[1]};
  expect_shape("gemm_forward", "w", w, linear_weight_shape(layout, d.k, d.n));
  expect_shape("gemm_forward", "y", y, {d.m, d.n});
  if (bias) expect_shape("gemm_forward", "bias", *bias, {d.n});
  return d;
}

LinearDims check_gemm_grad_input(const Shape& dy, const Shape& w, WeightLayout layout,
                                 const Shape& dx) {
  expect_rank("gemm_grad_input", "dy", dy, 2);
  expect_rank("gemm_grad_input", "dx", dx, 2);
  const LinearDims d{dy[0], dy[1], dx[1]};
  expect_shape("gemm_grad_input", "w", w, linear_weight_shape(layout, d.k, d.n));
  expect_shape("gemm_grad_input", "dx", dx, {d.m, d.k});
  return d;
}

LinearDims check_gemm_grad_weight(const Shape& x, const Shape& dy, WeightLayout layout,
                                  const Shape& dw, const Shape* dbias) {
  expect_rank("gemm_grad_weight", "x", x, 2);
  expect_rank("gemm_grad_weight", "dy", dy, 2);
  const LinearDims d{x[0], dy[1], x[1]};
  expect_shape("gemm_grad_weight", "dy", dy, {d.m, d.n});
  expect_shape("gemm_grad_weight", "dw", dw, linear_weight_shape(layout, d.k, d.n));
  if (dbias) expect_shape("gemm_grad_weight", "dbias", *dbias, {d.n});
  return d;
}

namespace {

// A grouped (per-expert) GEMM: two row-stacked activations, [rows, k] and [rows, n] in the order
// given (`first_is_k`: which holds k), rows = sum of counts, and the expert weight [E, k, n].
LinearDims check_grouped(const char* op, std::span<const int64_t> counts, const char* first_name,
                         const Shape& first, bool first_is_k, const char* second_name, const Shape& second,
                         const char* w_name, const Shape& w) {
  const int64_t rows = rows_of_counts(op, counts);
  expect_rank(op, first_name, first, 2);
  expect_rank(op, second_name, second, 2);
  const Shape& k_side = first_is_k ? first : second;
  const Shape& n_side = first_is_k ? second : first;
  const LinearDims d{rows, n_side[1], k_side[1]};
  expect_shape(op, first_name, first, {rows, first_is_k ? d.k : d.n});
  expect_shape(op, second_name, second, {rows, first_is_k ? d.n : d.k});
  expect_shape(op, w_name, w, expert_weight_shape(counts, d.k, d.n));
  return d;
}

}  // namespace

LinearDims check_grouped_forward(const Shape& x, const Shape& w, std::span<const int64_t> counts,
                                 const Shape& y) {
  return check_grouped("grouped_gemm_forward", counts, "x", x, true, "y", y, "w", w);
}

LinearDims check_grouped_grad_input(const Shape& dy, const Shape& w, std::span<const int64_t> counts,
                                    const Shape& dx) {
  return check_grouped("grouped_gemm_grad_input", counts, "dy", dy, false, "dx", dx, "w", w);
}

LinearDims check_grouped_grad_weight(const Shape& x, const Shape& dy, std::span<const int64_t> counts,
                                     const Shape& dw) {
  return check_grouped("grouped_gemm_grad_weight", counts, "x", x, true, "dy", dy, "dw", dw);
}

AttentionShape check_attention_inputs(const char* op, const Shape& q, const Shape& k,
                                      const Shape& v, const AttentionArgs& args) {
  expect_rank(op, "q", q, 4);
  expect_rank(op, "k", k, 4);
  const AttentionShape a{q[0], k[0], q[1], q[2], k[2], q[3]};
  expect_shape(op, "k", k, {a.s_kv, a.b, a.hkv, a.d});
  expect_shape(op, "v", v, k);
  if (a.hkv <= 0 || a.hq % a.hkv != 0)
    throw ShapeError(std::string(op) + ": hq = " + std::to_string(a.hq) + " is not a multiple of hkv = " +
                                std::to_string(a.hkv));
  const auto count = [](size_t n) { return std::to_string(n); };
  if (!args.q_positions.empty() && static_cast<int64_t>(args.q_positions.size()) != a.s_q)
    throw ShapeError(std::string(op) + ": q_positions has " + count(args.q_positions.size()) +
                                " entries, s_q = " + std::to_string(a.s_q));
  if (!args.kv_positions.empty() && static_cast<int64_t>(args.kv_positions.size()) != a.s_kv)
    throw ShapeError(std::string(op) + ": kv_positions has " + count(args.kv_positions.size()) +
                                " entries, s_kv = " + std::to_string(a.s_kv));
  if (!(args.dropout >= 0.0f && args.dropout < 1.0f))
    throw ShapeError(std::string(op) + ": dropout = " + std::to_string(args.dropout) + " is outside [0, 1)");
  if (args.dropout > 0.0f && static_cast<int64_t>(args.samples.size()) != a.b)
    throw ShapeError(std::string(op) + ": samples has " + count(args.samples.size()) + " entries, b = " +
                                std::to_string(a.b));
  return a;
}

void check_attention_outputs(const char* op, const AttentionShape& a, const Shape& q, const Shape& out,
                             const Shape& lse) {
  expect_shape(op, "out", out, q);
  expect_shape(op, "lse", lse, {a.b, a.hq, a.s_q});
}

AttentionShape check_attention_backward(const char* op, const Shape& q, const Shape& k, const Shape& v,
                                        const Shape& out, const Shape& lse, const Shape& d_out,
                                        const AttentionArgs& args, const Shape& dq, const Shape& dk, const Shape& dv) {
  const AttentionShape a = check_attention_inputs(op, q, k, v, args);
  check_attention_outputs(op, a, q, out, lse);
  expect(op, "d_out", d_out, q);
  expect(op, "dq", dq, q);
  expect(op, "dk", dk, k);
  expect(op, "dv", dv, v);
  return a;
}

void check_attention_merge(const Shape& out, const Shape& lse, const Shape& out_blk,
                           const Shape& lse_blk, int64_t row0) {
  const char* op = "attention_merge";
  expect_rank(op, "out", out, 4);
  expect_rank(op, "out_blk", out_blk, 4);
  const int64_t s_q = out[0], b = out[1], hq = out[2], d = out[3], s_blk = out_blk[0];
  expect_shape(op, "out_blk", out_blk, {s_blk, b, hq, d});
  expect_shape(op, "lse", lse, {b, hq, s_q});
  expect_shape(op, "lse_blk", lse_blk, {b, hq, s_blk});
  if (row0 < 0 || row0 + s_blk > s_q)
    throw ShapeError(std::string(op) + ": row0 = " + std::to_string(row0) + " with " +
                                std::to_string(s_blk) + " rows is outside s_q = " + std::to_string(s_q));
}

int64_t check_qkv_shapes(const char* op, const Shape& mixed, int64_t groups, int64_t qpg, int64_t d,
                         const Shape& q, const Shape& k, const Shape& v) {
  if (groups < 0 || qpg < 1 || d < 0)
    throw ShapeError(std::string(op) + ": groups = " + std::to_string(groups) + ", qpg = " +
                                std::to_string(qpg) + ", d = " + std::to_string(d) + " (need qpg >= 1)");
  expect_rank(op, "mixed", mixed, 2);
  const int64_t rows = mixed[0];
  expect_shape(op, "mixed", mixed, {rows, groups * (qpg + 2) * d});
  expect_shape(op, "q", q, {rows, groups * qpg * d});
  expect_shape(op, "k", k, {rows, groups * d});
  expect_shape(op, "v", v, {rows, groups * d});
  return rows;
}

std::pair<int64_t, int64_t> check_router_logits(const char* op, const Shape& logits, int64_t topk) {
  expect_rank(op, "logits", logits, 2);
  if (topk < 1 || topk > logits[1])
    throw ShapeError(std::string(op) + ": topk = " + std::to_string(topk) + " of " +
                                std::to_string(logits[1]) + " experts");
  return {logits[0], logits[1]};
}

void check_router_backward(const RoutingResult& routing, const Shape& logits, const Shape& d_probs,
                           const Shape& d_logits) {
  const char* op = "router_backward";
  const int64_t t_n = routing.tokens, e_n = routing.experts, k = routing.topk;
  expect(op, "logits", logits, {t_n, e_n});
  expect(op, "d_probs", d_probs, {t_n, k});
  expect(op, "d_logits", d_logits, {t_n, e_n});
  expect(op, "scores", routing.scores.shape, {t_n, e_n});
  if (static_cast<int64_t>(routing.expert.size()) != t_n * k || routing.kept.size() != routing.expert.size())
    fail(op, "routing holds " + std::to_string(routing.expert.size()) + " selections for " + std::to_string(t_n) +
                 " x " + std::to_string(k));
}

void check_aux_inputs(const char* op, std::span<const int64_t> routed, int64_t experts, int64_t total_tokens) {
  if (static_cast<int64_t>(routed.size()) != experts || total_tokens <= 0)
    fail(op, "routed_per_expert has " + std::to_string(routed.size()) + " entries for " + std::to_string(experts) +
                 " experts, total_tokens = " + std::to_string(total_tokens));
}

std::vector<int64_t> permutation_tokens(const char* op, const PermutationPlan& plan) {
  if (plan.topk < 1 || plan.tokens < 0)
    throw ShapeError(std::string(op) + ": plan with tokens = " + std::to_string(plan.tokens) +
                                ", topk = " + std::to_string(plan.topk));
  std::vector<int64_t> tok(plan.source.size());
  for (size_t j = 0; j < plan.source.size(); ++j) {
    const int64_t s = plan.source[j];
    if (s < 0 || s >= plan.tokens * plan.topk)
      throw ShapeError(std::string(op) + ": source[" + std::to_string(j) + "] = " + std::to_string(s) +
                                  " is outside [0, " + std::to_string(plan.tokens * plan.topk) + ")");
    tok[j] = s / plan.topk;
  }
  return tok;
}

std::pair<int64_t, int64_t> rows_and_cols(const Shape& s) {
  if (s.empty()) throw ShapeError("rows_and_cols: the tensor has no dimensions, expected [rows, ...]");
  const int64_t rows = s[0], n = numel_of(s);
  return {rows, rows > 0 ? n / rows : 0};
}

namespace {

// A permutation op's [rows, hidden] operand named `field`: its hidden size, with the tokens.
PermuteDims permute_dims(const char* op, const PermutationPlan& plan, const char* field, const Shape& rows_by_hidden) {
  if (rows_by_hidden.size() != 2)
    fail(op, std::string(field) + " has shape " + shape_text(rows_by_hidden) + ", expected [rows, hidden]");
  return PermuteDims{static_cast<int64_t>(plan.source.size()), rows_by_hidden[1], permutation_tokens(op, plan)};
}

void check_index(const char* op, std::span<const int64_t> index, int64_t rows) {
  for (size_t j = 0; j < index.size(); ++j)
    if (index[j] < 0 || index[j] >= rows)
      fail(op, "index[" + std::to_string(j) + "] = " + std::to_string(index[j]) + " is outside [0, " +
                   std::to_string(rows) + ")");
}

}  // namespace

PermuteDims check_permute_forward(const PermutationPlan& plan, const Shape& tokens, const Shape& out) {
  const char* op = "permute_forward";
  PermuteDims d = permute_dims(op, plan, "tokens", tokens);
  expect(op, "tokens", tokens, {plan.tokens, d.hidden});
  expect(op, "out", out, {d.rows, d.hidden});
  return d;
}

PermuteDims check_permute_backward(const PermutationPlan& plan, const Shape& d_out, const Shape& d_tokens) {
  const char* op = "permute_backward";
  PermuteDims d = permute_dims(op, plan, "d_out", d_out);
  expect(op, "d_out", d_out, {d.rows, d.hidden});
  expect(op, "d_tokens", d_tokens, {plan.tokens, d.hidden});
  return d;
}

PermuteDims check_unpermute_forward(const PermutationPlan& plan, const Shape& expert_out, const Shape& probs,
                                    const Shape& y) {
  const char* op = "unpermute_forward";
  PermuteDims d = permute_dims(op, plan, "expert_out", expert_out);
  expect(op, "expert_out", expert_out, {d.rows, d.hidden});
  expect(op, "probs", probs, {plan.tokens, plan.topk});
  expect(op, "y", y, {plan.tokens, d.hidden});
  return d;
}

PermuteDims check_unpermute_backward(const PermutationPlan& plan, const Shape& expert_out, const Shape& probs,
                                     const Shape& d_y, const Shape& d_expert_out, const Shape& d_probs) {
  const char* op = "unpermute_backward";
  PermuteDims d = permute_dims(op, plan, "expert_out", expert_out);
  expect(op, "expert_out", expert_out, {d.rows, d.hidden});
  expect(op, "probs", probs, {plan.tokens, plan.topk});
  expect(op, "d_y", d_y, {plan.tokens, d.hidden});
  expect(op, "d_expert_out", d_expert_out, {d.rows, d.hidden});
  expect(op, "d_probs", d_probs, {plan.tokens, plan.topk});
  return d;
}

RowsCols check_gather_rows(const Shape& in, std::span<const int64_t> index, const Shape& out) {
  const char* op = "gather_rows";
  const auto [rows, cols] = rows_and_cols(in);
  const auto n = static_cast<int64_t>(index.size());
  if (numel_of(out) != n * cols)
    fail(op, "out " + shape_text(out) + " has " + std::to_string(numel_of(out)) + " elements, expected " +
                 std::to_string(n) + " x " + std::to_string(cols));
  check_index(op, index, rows);
  return {rows, cols};
}

RowsCols check_scatter_add_rows(const Shape& in, std::span<const int64_t> index, const Shape& out) {
  const char* op = "scatter_add_rows";
  const auto [rows, cols] = rows_and_cols(out);
  const auto n = static_cast<int64_t>(index.size());
  if (numel_of(in) != n * cols)
    fail(op, "input " + shape_text(in) + " has " + std::to_string(numel_of(in)) + " elements, expected " +
                 std::to_string(n) + " x " + std::to_string(cols));
  check_index(op, index, rows);
  return {rows, cols};
}

}  // namespace tandem::exec
