#pragma once
// Host-side shape rules of the CUDA kernels of part B (GEMMs, grouped GEMMs, attention, QKV,
// MoE): what CudaDevice checks before it launches, as plain functions of shapes so that tests
// run without a device. A violation throws std::invalid_argument naming the op, the field and
// the offending shape or value. Host C++ (C++20): the .cuh launchers stay free of exec types.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backends/cuda/ops_gemm.cuh"
#include "backends/executor/device.h"

namespace tandem::cuda {

// ---- shape rules of the linear layer and the grouped (expert) GEMM, checked on the host.
// A linear layer [k] -> [n] over m rows; W is [k, n] (InOut) or [n, k] (OutIn).
struct LinearDims {
  int64_t m = 0, n = 0, k = 0;
};

// Throws std::invalid_argument "<op>: <field> has shape [..], expected [..]".
void expect_shape(const char* op, const char* field, const exec::Shape& got, const exec::Shape& want);
exec::Shape linear_weight_shape(exec::WeightLayout layout, int64_t k, int64_t n);

// x [m, k], w, bias [n] (has_bias), y [m, n].
LinearDims check_gemm_forward(const exec::Shape& x, const exec::Shape& w, const exec::Shape* bias,
                              exec::WeightLayout layout, const exec::Shape& y);
// dy [m, n], w, dx [m, k].
LinearDims check_gemm_grad_input(const exec::Shape& dy, const exec::Shape& w, exec::WeightLayout layout,
                                 const exec::Shape& dx);
// x [m, k], dy [m, n], dw, dbias [n] (optional).
LinearDims check_gemm_grad_weight(const exec::Shape& x, const exec::Shape& dy, exec::WeightLayout layout,
                                  const exec::Shape& dw, const exec::Shape* dbias);

// Grouped: rows = sum(counts) (each >= 0), x [rows, k], w [E, k, n] (InOut), y [rows, n].
// Returns {rows, n, k}.
LinearDims check_grouped_forward(const exec::Shape& x, const exec::Shape& w, std::span<const int64_t> counts,
                                 const exec::Shape& y);
LinearDims check_grouped_grad_input(const exec::Shape& dy, const exec::Shape& w, std::span<const int64_t> counts,
                                    const exec::Shape& dx);
LinearDims check_grouped_grad_weight(const exec::Shape& x, const exec::Shape& dy, std::span<const int64_t> counts,
                                     const exec::Shape& dw);

// The row-major products of the linear layer (operands: pointers filled in by the caller).
LtGemm linear_forward_gemm(const LinearDims& d, exec::WeightLayout layout);       // y = x W
LtGemm linear_grad_input_gemm(const LinearDims& d, exec::WeightLayout layout);    // dx = dy W^T
LtGemm linear_grad_weight_gemm(const LinearDims& d, exec::WeightLayout layout);   // dW += x^T dy | dy^T x


// ---- attention: q [s_q, b, hq, d], k/v [s_kv, b, hkv, d], out like q, lse [b, hq, s_q].
struct AttentionShape {
  int64_t s_q = 0, s_kv = 0, b = 0, hq = 0, hkv = 0, d = 0;
};
// Also checks the position spans (empty or [s_q] / [s_kv]) and, with dropout, samples [b].
AttentionShape check_attention_inputs(const char* op, const exec::Shape& q, const exec::Shape& k,
                                      const exec::Shape& v, const exec::AttentionArgs& args);
void check_attention_outputs(const char* op, const AttentionShape& a, const exec::Shape& q, const exec::Shape& out,
                             const exec::Shape& lse);
// The scale the kernels use: args.softmax_scale, or 1 / sqrt(d) when it is 0.
float resolved_softmax_scale(const exec::AttentionArgs& args, int64_t d);
// Merge: out [s_q, b, hq, d], lse [b, hq, s_q], out_blk [s_blk, b, hq, d], lse_blk [b, hq, s_blk],
// 0 <= row0 <= s_q - s_blk.
void check_attention_merge(const exec::Shape& out, const exec::Shape& lse, const exec::Shape& out_blk,
                           const exec::Shape& lse_blk, int64_t row0);

// ---- fused QKV: mixed [rows, groups * (qpg + 2) * d], q [rows, groups * qpg * d], k/v [rows, groups * d].
int64_t check_qkv_shapes(const char* op, const exec::Shape& mixed, int64_t groups, int64_t qpg, int64_t d,
                         const exec::Shape& q, const exec::Shape& k, const exec::Shape& v);

// ---- MoE
// logits [T, E] with 1 <= topk <= E; returns {T, E}.
std::pair<int64_t, int64_t> check_router_logits(const char* op, const exec::Shape& logits, int64_t topk);
// Permuted row j's token source[j] / topk, checking 0 <= source[j] < tokens * topk.
std::vector<int64_t> permutation_tokens(const char* op, const exec::PermutationPlan& plan);
// Rows of a [rows, ...] tensor and the elements per row (numel / rows, 0 rows: 0).
std::pair<int64_t, int64_t> rows_and_cols(const exec::Shape& s);

}  // namespace tandem::cuda
