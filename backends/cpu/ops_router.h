#pragma once
// MoE top-k router (Megatron's TopKRouter with the softmax or sigmoid score function), its auxiliary
// load-balancing loss (Switch/GShard, Megatron's switch_load_balancing_loss_func), expert
// capacity with token dropping, and the backward to the router logits. The router GEMM
// ([T, h] x [h, E] -> logits) is an ordinary gemm_* call before this kernel.
//
// Selection: the k experts with the largest logits (= largest softmax scores), ties to the lower
// expert index. Routing weights:
//   pre_softmax = false (Megatron's default): softmax over the k selected logits;
//   pre_softmax = true  (--moe-router-pre-softmax): softmax over all E logits, then the top k.
//   sigmoid (DeepSeek-V3): s = sigmoid(logits); choose by s + expert_bias (the bias steers the
//   choice only), weights s[chosen] / (sum of s[chosen] + 1e-20) when k > 1, else s[chosen].
// Group-limited routing (num_groups, group_topk > 0): the E experts form num_groups groups of
// consecutive experts; a group scores the sum of its top (k / group_topk) choosing scores; a token
// chooses among the experts of its group_topk best groups (ties to the lower index) only.
// scaling_factor > 0 multiplies the weights (--moe-router-topk-scaling-factor).
// Capacity (capacity_factor > 0): capacity = ceil(T * k / E * capacity_factor); an expert keeps
// the `capacity` routed tokens with the largest routing weight (ties: lower token index) and
// drops the rest (weight 0, kept = 0) — Megatron's "probs" drop policy without padding.
// capacity_factor <= 0: dropless.
// Aux loss: coeff * E / (k * T^2) * sum_e (sum_t scores[t, e]) * routed[e], with scores the
// softmax over all experts and routed[e] the number of tokens that selected e before dropping;
// with TP/CP, routed[] and T are the values summed over the TP x CP group (the caller's
// all-reduce of routed_per_expert) while scores stay local.
#include <cstdint>
#include <span>
#include <vector>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

struct RouterOptions {
  int64_t topk = 2;
  bool pre_softmax = false;
  double capacity_factor = 0.0;   // <= 0: dropless
  bool sigmoid = false;           // score function sigmoid (else softmax)
  std::span<const float> expert_bias;   // [E] added to the choosing scores (sigmoid only); empty: none
  int64_t num_groups = 0, group_topk = 0;   // group-limited routing; 0: not grouped
  double scaling_factor = 0.0;          // > 0: weights x factor
};

struct Routing {
  int64_t tokens = 0, experts = 0, topk = 0;
  int64_t capacity = 0;                      // per expert; 0 when dropless
  bool pre_softmax = false;                  // RouterOptions::pre_softmax the routing used
  bool sigmoid = false;                      // RouterOptions::sigmoid the routing used
  double scaling_factor = 0.0;               // RouterOptions::scaling_factor the routing used
  std::vector<int32_t> expert;               // [T, k] selected experts, by decreasing logit
  Tensor probs;                              // [T, k] routing weights, 0 where dropped
  std::vector<uint8_t> kept;                 // [T, k] 1 unless dropped by capacity
  Tensor scores;                             // [T, E] softmax over all experts (aux loss input); sigmoid: sigmoid
  std::vector<int64_t> routed_per_expert;    // [E] selections before dropping (aux loss counts)
  std::vector<int64_t> tokens_per_expert;    // [E] selections kept: the experts' input sizes
};

// logits [T, E] -> routing.
Routing router_forward(ConstTensorView logits, const RouterOptions& options);

// What the aux loss needs beyond the local routing. routed_per_expert [E] and total_tokens are
// the TP x CP sums (equal to the local values without TP/CP).
struct AuxLossInputs {
  double coeff = 0.0;                              // --moe-aux-loss-coeff
  std::span<const int64_t> routed_per_expert;      // [E]
  int64_t total_tokens = 0;
};

// The aux loss value of this rank's tokens (its scores); 0 when coeff == 0.
double router_aux_loss(const Routing& routing, const AuxLossInputs& aux);

// logits [T, E], routing, d_probs [T, k] (gradient of the routing weights, from unpermute), and
// d_aux the gradient of the aux loss (the main loss scale; 0 ignores the aux loss) ->
// d_logits [T, E].
void router_backward(ConstTensorView logits, const Routing& routing, ConstTensorView d_probs, const AuxLossInputs& aux,
                     double d_aux, TensorView d_logits);

}  // namespace tandem::cpu
