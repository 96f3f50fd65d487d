#pragma once
// Causal self-attention core with grouped-query attention (GQA), forward and backward, plus the
// split/merge of Megatron's fused QKV projection output.
//
// Layout (sequence-first, as Megatron): q [s_q, b, hq, d], k and v [s_kv, b, hkv, d],
// out [s_q, b, hq, d]. hq is a multiple of hkv; query head h reads kv head h / (hq / hkv)
// (Megatron's repeat_interleave of the query groups). Scores are scaled by softmax_scale
// (default 1/sqrt(d)); key j is visible to query i iff kv_positions[j] <= q_positions[i]
// (causal), so context-parallel shards pass their global positions.
//
// The forward saves the per-row log-sum-exp lse [b, hq, s_q] of the scaled, masked scores; the
// backward recomputes the probabilities from q, k and lse (O(s_q * s_kv) memory for one head at a
// time, as the score matrix of one head is materialised).
#include <cstdint>
#include <span>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

struct AttentionOptions {
  float softmax_scale = 0.0f;              // 0: 1 / sqrt(head_dim)
  bool causal = true;
  std::span<const int32_t> q_positions;    // [s_q]; empty = 0..s_q-1
  std::span<const int32_t> kv_positions;   // [s_kv]; empty = 0..s_kv-1
};

// q [s_q, b, hq, d], k [s_kv, b, hkv, d], v [s_kv, b, hkv, d] -> out [s_q, b, hq, d], lse [b, hq, s_q].
void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, const AttentionOptions& options,
                       TensorView out, TensorView lse);

// q, k, v, out, lse as in/after the forward, d_out [s_q, b, hq, d] ->
// dq [s_q, b, hq, d], dk [s_kv, b, hkv, d], dv [s_kv, b, hkv, d] (all overwritten).
void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                        ConstTensorView lse, ConstTensorView d_out, const AttentionOptions& options, TensorView dq,
                        TensorView dk, TensorView dv);

// Megatron's fused QKV output: per row, `groups` blocks of [qpg query heads | 1 key | 1 value],
// each head `d` wide. mixed [rows, groups * (qpg + 2) * d] -> q [rows, groups * qpg * d],
// k [rows, groups * d], v [rows, groups * d].
void split_qkv(ConstTensorView mixed, int64_t groups, int64_t qpg, int64_t d, TensorView q, TensorView k,
               TensorView v);

// Inverse of split_qkv (used for the gradient): q, k, v -> mixed [rows, groups * (qpg + 2) * d].
void merge_qkv(ConstTensorView q, ConstTensorView k, ConstTensorView v, int64_t groups, int64_t qpg, int64_t d,
               TensorView mixed);

}  // namespace tandem::cpu
