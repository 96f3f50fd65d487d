#pragma once
// Internal to models/: the sizes of a ModelConfig with Megatron's defaults filled in, so the
// accounting also works on a hand-built, unresolved config.
#include <cstdint>

#include "core/job.h"

namespace tandem::detail {

struct ModelDims {
  int64_t layers = 0;       // L
  int64_t h = 0;            // hidden size
  int64_t a = 0;            // attention heads
  int64_t g = 0;            // query groups (key/value heads)
  int64_t d = 0;            // head dim (kv_channels)
  int64_t f = 0;            // dense MLP hidden size
  int64_t s = 0;            // sequence length
  int64_t vocab = 0;        // padded vocabulary (vocab_size if padding not resolved)
  int64_t positions = 0;    // learned position table rows (0 unless learned absolute)
  bool gated = false;       // SwiGLU: fc1 is [h, 2f]
  bool bias = false;        // biases in every linear layer
  bool qkv_bias = false;    // bias in QKV only (or with bias)
  int64_t norm_params = 0;  // parameters of one normalization over h: 2h LayerNorm, h RMSNorm
  int norm_factor = 1;      // 2 for LayerNorm (weight + bias), 1 for RMSNorm
  // MoE
  int64_t experts = 0;      // E
  int64_t topk = 0;         // k
  int64_t f_moe = 0;        // expert MLP hidden size
  int64_t f_shared = 0;     // shared expert hidden size (0: none)
  // MLA
  bool mla = false;
  int64_t q_lora = 0, kv_lora = 0, d_nope = 0, d_rope = 0, d_v = 0;
};

inline ModelDims model_dims(const ModelConfig& m) {
  ModelDims x;
  x.layers = m.num_layers;
  x.h = m.hidden_size;
  x.a = m.num_attention_heads;
  x.g = m.num_query_groups > 0 ? m.num_query_groups : m.num_attention_heads;
  x.d = m.kv_channels > 0 ? m.kv_channels : (x.a > 0 ? x.h / x.a : 0);
  x.gated = m.swiglu;
  if (m.ffn_hidden_size > 0) x.f = m.ffn_hidden_size;
  else x.f = x.gated ? ((4 * x.h * 2 / 3) / 64) * 64 : 4 * x.h;   // Megatron's defaults
  x.s = m.seq_length;
  x.vocab = m.padded_vocab_size > 0 ? m.padded_vocab_size : m.vocab_size;
  x.positions = m.position_embedding == PositionEmbedding::LearnedAbsolute
                    ? (m.max_position_embeddings > 0 ? m.max_position_embeddings : m.seq_length)
                    : 0;
  x.bias = m.add_bias_linear;
  x.qkv_bias = m.add_bias_linear || m.add_qkv_bias;
  x.norm_factor = m.normalization == Normalization::LayerNorm ? 2 : 1;
  x.norm_params = x.norm_factor * x.h;
  x.experts = m.num_experts;
  x.topk = m.num_experts > 0 ? m.moe_router_topk : 0;
  x.f_moe = m.moe_ffn_hidden_size > 0 ? m.moe_ffn_hidden_size : x.f;
  x.f_shared = m.moe_shared_expert_intermediate_size;
  x.mla = m.multi_latent_attention;
  x.q_lora = m.q_lora_rank;
  x.kv_lora = m.kv_lora_rank;
  x.d_nope = m.qk_head_dim;
  x.d_rope = m.qk_pos_emb_head_dim;
  x.d_v = m.v_head_dim;
  return x;
}

// Matrices of an MLP of hidden size f: gated has fc1 [h, 2f] + fc2 [f, h], else [h, f] + [f, h].
inline int64_t mlp_matrix_columns(const ModelDims& x, int64_t f) { return (x.gated ? 3 : 2) * f; }

}  // namespace tandem::detail
