#pragma once
// The shape rules of the Device ops (device.h), written once: the CPU device and the CUDA device
// check every op's operands with these functions before they compute, so both accept the same
// shapes and refuse the others the same way. A violation throws ShapeError, whose message names
// the op, the operand and its shape, and the rule it breaks ("<op>: <field> has shape [..],
// expected [..]"). Functions take shapes (not tensors), so tests need no device; they return
// the dimensions the kernels use. Optional operands are passed as nullptr shapes. Host C++.
#include <cstdint>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backends/executor/device.h"

namespace tandem::exec {

// A Device op handed operands whose shapes break its rule. Thrown by both devices.
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// "[2, 3]".
std::string shape_text(const Shape& shape);
// Throws ShapeError "<op>: <field> has shape [..], expected [..]" unless got == want.
void expect_shape(const char* op, const char* field, const Shape& got, const Shape& want);

struct RowsCols {
  int64_t rows = 0, cols = 0;
};

// ---- elementwise, reductions, dropout, embedding, norms, activations, RoPE, cross-entropy, AdamW

// Equal element counts (copy, add, axpy); returns the count.
int64_t check_same_numel(const char* op, const char* a_field, const Shape& a, const char* b_field, const Shape& b);
// x [rows, c] viewed through a vector [c] (add_row_vector, column_sums_accumulate): c > 0 and
// numel(x) a multiple of c.
RowsCols check_row_vector(const char* op, const Shape& x, const Shape& vec);
// src [R, C] -> dst [R, w], 0 <= begin, begin + w <= C. Returns {R, C}; w is dst[1].
RowsCols check_copy_columns(const Shape& src, int64_t begin, const Shape& dst);
// x [rows, ...] with row_ids [rows], p in [0, 1]; returns {rows, numel / rows}.
RowsCols check_dropout(const Shape& x, float p, int64_t num_row_ids);
// table [v_local, h], out [tokens, h]; returns {v_local, h}.
RowsCols check_embedding(const char* op, int64_t tokens, const Shape& table, const Shape& out);

// x [rows, h], gamma [h], beta [h] (LayerNorm, optional), y [rows, h], mean [rows] (LayerNorm),
// rstd [rows]; returns {rows, h}.
RowsCols check_norm_forward(NormKind kind, const Shape& x, const Shape& gamma, const Shape* beta, const Shape& y,
                            const Shape* mean, const Shape& rstd);
// x, dy, dx [rows, h], gamma, dgamma [h], dbeta [h] (optional), mean (LayerNorm), rstd [rows].
RowsCols check_norm_backward(NormKind kind, const Shape& x, const Shape& gamma, const Shape* mean, const Shape& rstd,
                             const Shape& dy, const Shape& dx, const Shape& dgamma, const Shape* dbeta);

// GeLU: y shaped like x, returns {numel, 1}. SwiGLU: x [rows, 2f], y [rows, f], returns {rows, f}.
RowsCols check_activation_forward(ActivationKind kind, const Shape& x, const Shape& y);
// GeLU: dy, dx shaped like x. SwiGLU: x [rows, 2f], dy [rows, f], dx [rows, 2f].
RowsCols check_activation_backward(ActivationKind kind, const Shape& x, const Shape& dy, const Shape& dx);

struct RopeDims {
  int64_t s = 0, rows_per_pos = 0, d = 0;   // x [s, b, heads, d], rows_per_pos = b * heads
};
// x [s, b, heads, d] with d even, y shaped like x, positions empty or [s]; base > 0.
RopeDims check_rope(const char* op, const Shape& x, int64_t num_positions, double base, const Shape& y);

// logits [T, V], targets [T], max / sum_exp / target_logit [T]; returns {T, V}.
RowsCols check_cross_entropy_partials(const Shape& logits, int64_t num_targets, const Shape& max,
                                      const Shape& sum_exp, const Shape& target_logit);
// Per-token vectors of one op: all with the numel of the first; returns it.
int64_t check_token_vectors(const char* op, std::initializer_list<std::pair<const char*, const Shape*>> fields);
// logits, d_logits [T, V], targets [T], max / sum_exp / d_loss [T]; returns {T, V}.
RowsCols check_cross_entropy_backward(const Shape& logits, int64_t num_targets, const Shape& max,
                                      const Shape& sum_exp, const Shape& d_loss, const Shape& d_logits);
// param, grad, exp_avg, exp_avg_sq of equal numel, step >= 1; returns the numel.
int64_t check_adamw(const Shape& param, const Shape& grad, const Shape& exp_avg, const Shape& exp_avg_sq,
                    int64_t step);

// ---- the linear layer and the grouped (expert) GEMM
// A linear layer [k] -> [n] over m rows; W is [k, n] (InOut) or [n, k] (OutIn).
struct LinearDims {
  int64_t m = 0, n = 0, k = 0;
};
Shape linear_weight_shape(WeightLayout layout, int64_t k, int64_t n);

// x [m, k], w, bias [n] (optional), y [m, n].
LinearDims check_gemm_forward(const Shape& x, const Shape& w, const Shape* bias, WeightLayout layout, const Shape& y);
// dy [m, n], w, dx [m, k].
LinearDims check_gemm_grad_input(const Shape& dy, const Shape& w, WeightLayout layout, const Shape& dx);
// x [m, k], dy [m, n], dw, dbias [n] (optional).
LinearDims check_gemm_grad_weight(const Shape& x, const Shape& dy, WeightLayout layout, const Shape& dw,
                                  const Shape* dbias);

// Grouped: rows = sum(counts) (each >= 0), x [rows, k], w [E, k, n] (InOut), y [rows, n].
// Returns {rows, n, k}.
LinearDims check_grouped_forward(const Shape& x, const Shape& w, std::span<const int64_t> counts, const Shape& y);
LinearDims check_grouped_grad_input(const Shape& dy, const Shape& w, std::span<const int64_t> counts, const Shape& dx);
LinearDims check_grouped_grad_weight(const Shape& x, const Shape& dy, std::span<const int64_t> counts,
                                     const Shape& dw);

// ---- attention: q [s_q, b, hq, d], k/v [s_kv, b, hkv, d], out like q, lse [b, hq, s_q].
struct AttentionShape {
  int64_t s_q = 0, s_kv = 0, b = 0, hq = 0, hkv = 0, d = 0;
};
// Also checks the position spans (empty or [s_q] / [s_kv]) and, with dropout, samples [b].
AttentionShape check_attention_inputs(const char* op, const Shape& q, const Shape& k, const Shape& v,
                                      const AttentionArgs& args);
void check_attention_outputs(const char* op, const AttentionShape& a, const Shape& q, const Shape& out,
                             const Shape& lse);
// Backward (full or block): the forward's rules, d_out and dq like q, dk like k, dv like v.
AttentionShape check_attention_backward(const char* op, const Shape& q, const Shape& k, const Shape& v,
                                        const Shape& out, const Shape& lse, const Shape& d_out,
                                        const AttentionArgs& args, const Shape& dq, const Shape& dk, const Shape& dv);
// Merge: out [s_q, b, hq, d], lse [b, hq, s_q], out_blk [s_blk, b, hq, d], lse_blk [b, hq, s_blk],
// 0 <= row0 <= s_q - s_blk.
void check_attention_merge(const Shape& out, const Shape& lse, const Shape& out_blk, const Shape& lse_blk,
                           int64_t row0);

// ---- fused QKV: mixed [rows, groups * (qpg + 2) * d], q [rows, groups * qpg * d], k/v [rows, groups * d].
int64_t check_qkv_shapes(const char* op, const Shape& mixed, int64_t groups, int64_t qpg, int64_t d, const Shape& q,
                         const Shape& k, const Shape& v);

// ---- MoE
// logits [T, E] with 1 <= topk <= E; returns {T, E}.
std::pair<int64_t, int64_t> check_router_logits(const char* op, const Shape& logits, int64_t topk);
// logits, d_logits, routing.scores [T, E], d_probs [T, k], routing's selections T x k.
void check_router_backward(const RoutingResult& routing, const Shape& logits, const Shape& d_probs,
                           const Shape& d_logits);
// The auxiliary loss' inputs: routed_per_expert [E], total_tokens > 0.
void check_aux_inputs(const char* op, std::span<const int64_t> routed, int64_t experts, int64_t total_tokens);
// Permuted row j's token source[j] / topk, checking 0 <= source[j] < tokens * topk.
std::vector<int64_t> permutation_tokens(const char* op, const PermutationPlan& plan);

// The permutation ops: n = plan.source.size() permuted rows of h columns, token[j] the token of
// permuted row j (permutation_tokens).
struct PermuteDims {
  int64_t rows = 0, hidden = 0;
  std::vector<int64_t> token;
};
// tokens [plan.tokens, h] -> out [n, h].
PermuteDims check_permute_forward(const PermutationPlan& plan, const Shape& tokens, const Shape& out);
// d_out [n, h] -> d_tokens [plan.tokens, h].
PermuteDims check_permute_backward(const PermutationPlan& plan, const Shape& d_out, const Shape& d_tokens);
// expert_out [n, h], probs [plan.tokens, topk] -> y [plan.tokens, h].
PermuteDims check_unpermute_forward(const PermutationPlan& plan, const Shape& expert_out, const Shape& probs,
                                    const Shape& y);
// The forward's operands, d_y like y, d_expert_out like expert_out, d_probs like probs.
PermuteDims check_unpermute_backward(const PermutationPlan& plan, const Shape& expert_out, const Shape& probs,
                                     const Shape& d_y, const Shape& d_expert_out, const Shape& d_probs);
// Rows of a [rows, ...] tensor and the elements per row (numel / rows, 0 rows: 0).
std::pair<int64_t, int64_t> rows_and_cols(const Shape& s);
// gather_rows: in [rows, cols...], index[j] in [0, rows), out of index.size() x cols elements.
// Returns {rows, cols} of `in`.
RowsCols check_gather_rows(const Shape& in, std::span<const int64_t> index, const Shape& out);
// scatter_add_rows: out [rows, cols...], index[j] in [0, rows), in of index.size() x cols
// elements. Returns {rows, cols} of `out`.
RowsCols check_scatter_add_rows(const Shape& in, std::span<const int64_t> index, const Shape& out);

}  // namespace tandem::exec
