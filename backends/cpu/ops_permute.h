#pragma once
// MoE token permutation: gather each token's hidden state once per kept expert selection into
// an expert-major buffer (dispatch side), and the weighted scatter back (combine side).
//
// Order (Megatron's permute): rows grouped by expert 0..E-1; inside an expert, by increasing
// token index (a stable order). The plan records, for permuted row j, the selection
// source[j] = t * k + slot it came from, so the routing weight probs[t, slot] applies to it.
//   permute:    out [N, h],  out[j] = tokens[source[j] / k]
//   unpermute:  y [T, h],    y[t] = sum over rows j of token t of probs[source[j]] * expert_out[j]
// (tokens whose selections were all dropped get y[t] = 0). N = sum(tokens_per_expert).
#include <cstdint>
#include <span>
#include <vector>

#include "backends/cpu/ops_router.h"
#include "backends/cpu/tensor.h"

namespace tandem::cpu {

struct PermutePlan {
  int64_t tokens = 0, topk = 0;
  std::vector<int64_t> source;              // [N] selection index t * k + slot of permuted row j
  std::vector<int64_t> tokens_per_expert;   // [E] rows per expert, in expert order
};

// From the routing's kept selections.
PermutePlan make_permute_plan(const Routing& routing);

// expert [T, k] selected experts, kept [T, k] (empty: all kept), E experts.
PermutePlan make_permute_plan(std::span<const int32_t> expert, std::span<const uint8_t> kept, int64_t tokens,
                              int64_t topk, int64_t experts);

// tokens [T, h] -> out [N, h].
void permute_forward(ConstTensorView tokens, const PermutePlan& plan, TensorView out);

// d_out [N, h] -> d_tokens [T, h] (sum over a token's rows).
void permute_backward(ConstTensorView d_out, const PermutePlan& plan, TensorView d_tokens);

// expert_out [N, h], probs [T, k] -> y [T, h].
void unpermute_forward(ConstTensorView expert_out, const PermutePlan& plan, ConstTensorView probs, TensorView y);

// expert_out [N, h], probs [T, k], d_y [T, h] -> d_expert_out [N, h], d_probs [T, k]
// (0 for selections without a row).
void unpermute_backward(ConstTensorView expert_out, const PermutePlan& plan, ConstTensorView probs,
                        ConstTensorView d_y, TensorView d_expert_out, TensorView d_probs);

// Megatron's sort_chunks_by_idxs: input [sum(sizes), h] cut into chunks of `sizes` rows; output
// holds the chunks in the order `order` (a permutation of chunk indices) -> out [sum(sizes), h].
// Used after the expert-parallel all-to-all to regroup received rows by local expert.
void sort_chunks_forward(ConstTensorView input, std::span<const int64_t> sizes, std::span<const int64_t> order,
                         TensorView out);

// Gradient of sort_chunks_forward: d_out [sum, h] -> d_input [sum, h].
void sort_chunks_backward(ConstTensorView d_out, std::span<const int64_t> sizes, std::span<const int64_t> order,
                          TensorView d_input);

}  // namespace tandem::cpu
