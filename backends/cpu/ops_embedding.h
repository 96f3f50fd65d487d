#pragma once
// Embedding lookup, vocabulary-parallel as Megatron's VocabParallelEmbedding: this rank holds
// rows [vocab_start, vocab_start + V_local) of the table; a token id outside that range yields a
// zero row (the caller all-reduces over TP). Learned position embeddings use the same kernels
// with position ids and vocab_start = 0.
#include <cstdint>
#include <span>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

// ids [tokens], table [V_local, h] -> out [tokens, h].
void embedding_forward(std::span<const int32_t> ids, ConstTensorView table, int64_t vocab_start, TensorView out);

// ids [tokens], d_out [tokens, h] -> d_table [V_local, h] accumulated (scatter-add; ids outside
// this rank's range contribute nothing).
void embedding_backward(std::span<const int32_t> ids, ConstTensorView d_out, int64_t vocab_start, TensorView d_table);

}  // namespace tandem::cpu
