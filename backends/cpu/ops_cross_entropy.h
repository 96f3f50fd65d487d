#pragma once
// Vocabulary-parallel softmax cross-entropy (Megatron's _VocabParallelCrossEntropy): each TP rank
// holds the logits of vocabulary rows [vocab_start, vocab_start + V_local). The forward is split
// into local phases; the caller all-reduces over the TP group between them:
//
//   1. cross_entropy_local_max     -> max [T] of the shard          caller: all-reduce MAX
//   2. cross_entropy_local_sums    -> sum_exp [T], target_logit [T]  caller: all-reduce SUM (both)
//   3. cross_entropy_loss          -> loss [T] = log(sum_exp) - target_logit
//
// target_logit is logit[target] - max on the rank that holds the target, 0 elsewhere. The
// backward is local given the reduced max and sum_exp:
//   d_logits [T, V_local] = d_loss[t] * (softmax - onehot(target))
// Without TP (one rank), cross_entropy_forward runs the three phases in a row.
#include <cstdint>
#include <span>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

// logits [T, V_local] -> max [T].
void cross_entropy_local_max(ConstTensorView logits, TensorView max);

// logits [T, V_local], targets [T] (global vocabulary ids), global max [T] ->
// sum_exp [T] = sum_v exp(logit - max) over the shard, target_logit [T].
void cross_entropy_local_sums(ConstTensorView logits, std::span<const int32_t> targets, int64_t vocab_start,
                              ConstTensorView max, TensorView sum_exp, TensorView target_logit);

// global sum_exp [T], global target_logit [T] -> loss [T].
void cross_entropy_loss(ConstTensorView sum_exp, ConstTensorView target_logit, TensorView loss);

// logits [T, V_local], targets [T], global max [T], global sum_exp [T], d_loss [T] ->
// d_logits [T, V_local].
void cross_entropy_backward(ConstTensorView logits, std::span<const int32_t> targets, int64_t vocab_start,
                            ConstTensorView max, ConstTensorView sum_exp, ConstTensorView d_loss, TensorView d_logits);

// Single-rank convenience: logits [T, V], targets [T] -> loss [T], max [T], sum_exp [T] (the
// latter two are what cross_entropy_backward needs).
void cross_entropy_forward(ConstTensorView logits, std::span<const int32_t> targets, TensorView loss, TensorView max,
                           TensorView sum_exp);

}  // namespace tandem::cpu
