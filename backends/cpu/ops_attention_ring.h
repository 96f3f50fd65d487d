#pragma once
// Attention kernels beyond ops_attention.h:
//   - attention_backward_block: the backward over one block of keys, exact when the keys are only
//     part of what the queries attended to (context-parallel ring attention): the probabilities
//     come from the full log-sum-exp and the softmax correction D_i = sum_j P_ij dP_ij uses the
//     full output, D_i = dO_i . O_i (flash attention's form). With every key in the block it is
//     the ordinary backward.
//   - attention dropout on the probabilities (Megatron's attention_dropout), forward and
//     backward, with a keep mask hashed from (key, global sample, global head, query position,
//     key position): independent of how sequence, heads or batch are split over ranks.
// Shapes and causal masking as ops_attention.h.
#include <cstdint>
#include <span>

#include "backends/cpu/ops_attention.h"

namespace tandem::cpu {

struct AttentionDropout {
  float p = 0.0f;                    // 0: no dropout
  uint64_t key = 0;                  // per (seed, iteration, layer)
  int64_t head_offset = 0;           // global index of this rank's first query head
  std::span<const int64_t> samples;  // [b] global sample index of each batch element
};

// 1 / (1 - p) where the probability (sample, head, q_pos, kv_pos) is kept, else 0.
float attention_dropout_scale(const AttentionDropout& dropout, int64_t sample, int64_t head, int64_t q_pos,
                              int64_t kv_pos);

// As attention_forward, the probabilities dropped out before they weight V (lse is the
// softmax's, before dropout).
void attention_forward_dropout(ConstTensorView q, ConstTensorView k, ConstTensorView v, const AttentionOptions& options,
                               const AttentionDropout& dropout, TensorView out, TensorView lse);

// q [s_q, b, hq, d], k/v [s_kv, b, hkv, d] (the block), out [s_q, b, hq, d] (full output of these
// queries), lse [b, hq, s_q] (full), d_out [s_q, b, hq, d] -> dq [s_q, b, hq, d] (this block's
// share), dk, dv [s_kv, b, hkv, d] (overwritten). dropout.p = 0: no dropout.
void attention_backward_block(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                              ConstTensorView lse, ConstTensorView d_out, const AttentionOptions& options,
                              TensorView dq, TensorView dk, TensorView dv, const AttentionDropout& dropout = {});

}  // namespace tandem::cpu
