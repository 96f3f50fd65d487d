#pragma once
// Host-side shape rules of the CUDA kernels of part A (elementwise, reductions, dropout,
// embedding, norms, activations, RoPE, cross-entropy, AdamW): what CudaDevice checks before it
// launches, as plain functions of shapes so that tests run without a device. The rules are the
// CPU device's (backends/cpu); a violation throws std::invalid_argument naming the op, the field
// and the offending shape or value. Optional tensors are passed as nullptr shapes. Host C++.
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "backends/executor/device.h"

namespace tandem::cuda {

struct RowsCols {
  int64_t rows = 0, cols = 0;
};

// Equal element counts (copy, add, axpy); returns the count.
int64_t check_same_numel(const char* op, const char* a_field, const exec::Shape& a, const char* b_field,
                         const exec::Shape& b);
// x [rows, c] viewed through a vector [c] (add_row_vector, column_sums_accumulate): c > 0 and
// numel(x) a multiple of c.
RowsCols check_row_vector(const char* op, const exec::Shape& x, const exec::Shape& vec);
// src [R, C] -> dst [R, w], 0 <= begin, begin + w <= C. Returns {R, C}; w is dst[1].
RowsCols check_copy_columns(const exec::Shape& src, int64_t begin, const exec::Shape& dst);
// x [rows, ...] with row_ids [rows], p in [0, 1]; returns {rows, numel / rows}.
RowsCols check_dropout(const exec::Shape& x, float p, int64_t num_row_ids);
// table [v_local, h], out [tokens, h]; returns {v_local, h}.
RowsCols check_embedding(const char* op, int64_t tokens, const exec::Shape& table, const exec::Shape& out);

// x [rows, h], gamma [h], beta [h] (LayerNorm, optional), y [rows, h], mean [rows] (LayerNorm),
// rstd [rows]; returns {rows, h}.
RowsCols check_norm_forward(exec::NormKind kind, const exec::Shape& x, const exec::Shape& gamma,
                            const exec::Shape* beta, const exec::Shape& y, const exec::Shape* mean,
                            const exec::Shape& rstd);
// x, dy, dx [rows, h], gamma, dgamma [h], dbeta [h] (optional), mean (LayerNorm), rstd [rows].
RowsCols check_norm_backward(exec::NormKind kind, const exec::Shape& x, const exec::Shape& gamma,
                             const exec::Shape* mean, const exec::Shape& rstd, const exec::Shape& dy,
                             const exec::Shape& dx, const exec::Shape& dgamma, const exec::Shape* dbeta);

// GeLU: y shaped like x, returns {numel, 1}. SwiGLU: x [rows, 2f], y [rows, f], returns {rows, f}.
RowsCols check_activation_forward(exec::ActivationKind kind, const exec::Shape& x, const exec::Shape& y);
// GeLU: dy, dx shaped like x. SwiGLU: x [rows, 2f], dy [rows, f], dx [rows, 2f].
RowsCols check_activation_backward(exec::ActivationKind kind, const exec::Shape& x, const exec::Shape& dy,
                                   const exec::Shape& dx);

struct RopeDims {
  int64_t s = 0, rows_per_pos = 0, d = 0;   // x [s, b, heads, d], rows_per_pos = b * heads
};
// x [s, b, heads, d] with d even, y shaped like x, positions empty or [s]; base > 0.
RopeDims check_rope(const char* op, const exec::Shape& x, int64_t num_positions, double base, const exec::Shape& y);

// logits [T, V], targets [T], max / sum_exp / target_logit [T]; returns {T, V}.
RowsCols check_cross_entropy_partials(const exec::Shape& logits, int64_t num_targets, const exec::Shape& max,
                                      const exec::Shape& sum_exp, const exec::Shape& target_logit);
// Per-token vectors of one op: all with the numel of the first; returns it.
int64_t check_token_vectors(const char* op, std::initializer_list<std::pair<const char*, const exec::Shape*>> fields);
// logits, d_logits [T, V], targets [T], max / sum_exp / d_loss [T]; returns {T, V}.
RowsCols check_cross_entropy_backward(const exec::Shape& logits, int64_t num_targets, const exec::Shape& max,
                                      const exec::Shape& sum_exp, const exec::Shape& d_loss,
                                      const exec::Shape& d_logits);
// param, grad, exp_avg, exp_avg_sq of equal numel, step >= 1; returns the numel.
int64_t check_adamw(const exec::Shape& param, const exec::Shape& grad, const exec::Shape& exp_avg,
                    const exec::Shape& exp_avg_sq, int64_t step);

}  // namespace tandem::cuda
