// Parameter counts of Megatron's GPT model family (models/accounting.h).
//
// One decoder layer, weights as [in, out] matrices (element counts):
//   pre-attention norm            h (RMSNorm) or 2h (LayerNorm)
//   attention, standard           QKV [h, a·d + 2·g·d] (+ bias), output [a·d, h] (+ bias h)
//   attention, MLA (DeepSeek)     q: [h, q_lora] + norm(q_lora) + [q_lora, a·(d_nope + d_rope)]
//                                    or [h, a·(d_nope + d_rope)] without query compression
//                                 kv: [h, kv_lora + d_rope] + norm(kv_lora) + [kv_lora, a·(d_nope + d_v)]
//                                 output [a·d_v, h]
//   pre-MLP norm                  h or 2h
//   MLP                           fc1 [h, f] or [h, 2f] (SwiGLU), fc2 [f, h] (+ biases f or 2f, h)
//   MoE                           router [h, E]; E experts, each an MLP of size f_moe; a shared
//                                 expert MLP of size f_shared when set
// Model: word embedding [V, h], learned positions [max_positions, h], final norm, untied output
// [V, h]; each MTP module adds norms of the embedding and of the hidden state, the projection
// [2h, h], one decoder layer and its final norm (embedding and output layer are shared).
// For a GPT layer this is 12h² + 13h, hence Narayanan eq. (2).
#include "core/check.h"
#include "models/accounting.h"
#include "models/model_dims.h"

namespace tandem {
namespace {

using detail::ModelDims;

struct Linear {
  int64_t weights = 0;
  int64_t bias = 0;
};

// Standard (MHA/GQA) attention: QKV is column-parallel (bias sharded), output row-parallel
// (its bias replicated on every TP rank).
void add_standard_attention(const ModelDims& x, LayerParameters& p) {
  const int64_t qkv_out = x.a * x.d + 2 * x.g * x.d;
  p.attention += x.h * qkv_out + (x.qkv_bias ? qkv_out : 0);
  p.attention += x.a * x.d * x.h + (x.bias ? x.h : 0);
  p.tp_replicated += x.bias ? x.h : 0;
}

// Multi-latent attention. The down projections (and their norms) are replicated over TP as in
// Megatron-Core; the up projections are column-parallel, the output projection row-parallel.
void add_mla_attention(const ModelDims& x, LayerParameters& p) {
  const int64_t q_head = x.d_nope + x.d_rope;
  auto linear = [&](int64_t in, int64_t out, bool replicated) {
    const int64_t n = in * out + (x.bias ? out : 0);
    p.attention += n;
    if (replicated) p.tp_replicated += n;
  };
  if (x.q_lora > 0) {
    linear(x.h, x.q_lora, true);
    p.norms += x.norm_factor * x.q_lora;
    linear(x.q_lora, x.a * q_head, false);
  } else {
    linear(x.h, x.a * q_head, false);
  }
  linear(x.h, x.kv_lora + x.d_rope, true);
  p.norms += x.norm_factor * x.kv_lora;
  linear(x.kv_lora, x.a * (x.d_nope + x.d_v), false);
  p.attention += x.a * x.d_v * x.h + (x.bias ? x.h : 0);
  p.tp_replicated += x.bias ? x.h : 0;
}

// An MLP of hidden size f: fc1 column-parallel, fc2 row-parallel (bias h replicated).
Linear mlp_parameters(const ModelDims& x, int64_t f) {
  Linear l;
  l.weights = x.h * detail::mlp_matrix_columns(x, f);
  l.bias = x.bias ? (x.gated ? 2 * f : f) + x.h : 0;
  return l;
}

}  // namespace

bool is_moe_layer(const ModelConfig& m, int64_t layer) {
  const auto& pattern = m.moe_layer_pattern;
  if (m.is_moe() && pattern.size() == 1 && pattern[0] < 0) return layer % -pattern[0] == 0;   // unresolved "every N"
  return m.layer_is_moe(layer);
}

LayerParameters layer_parameters(const ModelConfig& m, bool moe) {
  const ModelDims x = detail::model_dims(m);
  LayerParameters p;
  p.norms = 2 * x.norm_params;
  p.tp_replicated = 0;
  if (x.mla) add_mla_attention(x, p);
  else add_standard_attention(x, p);
  if (!moe) {
    const Linear l = mlp_parameters(x, x.f);
    p.mlp = l.weights + l.bias;
    p.tp_replicated += x.bias ? x.h : 0;
  } else {
    TANDEM_CHECK_MSG(x.experts > 0, "MoE layer requested for a dense model");
    p.router = x.experts * x.h;
    const Linear e = mlp_parameters(x, x.f_moe);
    p.experts = x.experts * (e.weights + e.bias);
    p.active_experts = x.topk * (e.weights + e.bias);
    if (x.f_shared > 0) {
      const Linear sh = mlp_parameters(x, x.f_shared);
      p.mlp = sh.weights + sh.bias;
      p.tp_replicated += x.bias ? x.h : 0;
    }
  }
  p.tp_replicated += p.norms + p.router;
  return p;
}

ParameterCount parameter_count(const ModelConfig& m) {
  const ModelDims x = detail::model_dims(m);
  TANDEM_CHECK_MSG(x.layers > 0 && x.h > 0 && x.a > 0 && x.vocab > 0,
                   "parameter_count needs num_layers, hidden_size, num_attention_heads and vocab_size");
  ParameterCount c;
  c.embedding = x.vocab * x.h + x.positions * x.h;
  c.output_layer = m.untie_embeddings_and_output_weights ? x.vocab * x.h : 0;
  c.final_norm = x.norm_params;
  c.dense_layer = layer_parameters(m, false);
  if (m.is_moe()) c.moe_layer = layer_parameters(m, true);
  int64_t skipped_experts = 0;   // routed-expert parameters a token does not use
  for (int64_t l = 0; l < x.layers; ++l) {
    const bool moe = is_moe_layer(m, l);
    const LayerParameters& lp = moe ? c.moe_layer : c.dense_layer;
    (moe ? c.num_moe_layers : c.num_dense_layers) += 1;
    c.decoder += lp.total();
    skipped_experts += lp.experts - lp.active_experts;
  }
  const int64_t main = c.embedding + c.output_layer + c.final_norm + c.decoder;
  c.active_without_mtp = main - skipped_experts;
  if (m.mtp_num_layers > 0) {
    const LayerParameters& lp = is_moe_layer(m, x.layers - 1) ? c.moe_layer : c.dense_layer;
    const int64_t per_module = 3 * x.norm_params + 2 * x.h * x.h + lp.total();
    c.mtp = m.mtp_num_layers * per_module;
    skipped_experts += m.mtp_num_layers * (lp.experts - lp.active_experts);
  }
  c.total = main + c.mtp;
  c.active_per_token = c.total - skipped_experts;
  return c;
}

}  // namespace tandem
