#pragma once
// Attention backward over one block of keys, exact when the keys are only part of what the
// queries attended to (context-parallel ring attention): the probabilities come from the full
// log-sum-exp, and the softmax correction D_i = sum_j P_ij dP_ij uses the full output,
// D_i = dO_i . O_i (flash attention's form). With a block holding every key it equals
// attention_backward. Shapes and masking as ops_attention.h.
#include "backends/cpu/ops_attention.h"

namespace tandem::cpu {

// q [s_q, b, hq, d], k/v [s_kv, b, hkv, d] (the block), out [s_q, b, hq, d] (full output of these
// queries), lse [b, hq, s_q] (full), d_out [s_q, b, hq, d] -> dq [s_q, b, hq, d] (this block's
// share), dk, dv [s_kv, b, hkv, d] (overwritten).
void attention_backward_block(ConstTensorView q, ConstTensorView k, ConstTensorView v, ConstTensorView out,
                              ConstTensorView lse, ConstTensorView d_out, const AttentionOptions& options,
                              TensorView dq, TensorView dk, TensorView dv);

}  // namespace tandem::cpu
