#pragma once
// The two model families tandem exchanges with Hugging Face, and their config.json.
//
//   Llama: RMSNorm, RoPE (rotate-half, as HF's LlamaRotaryEmbedding), SwiGLU, GQA, no biases,
//          tied or untied embeddings                              -> LlamaForCausalLM
//   Gpt2:  LayerNorm, learned absolute positions, GeLU (tanh: HF "gelu_new"), biases, MHA,
//          tied (or untied) embeddings                            -> GPT2LMHeadModel
// Anything else (MoE, MLA, QKV-only biases, RMSNorm with learned positions...) has no HF class
// here and is refused with a message naming the feature.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/job.h"

namespace tandem::interop {

enum class HfFamily { Llama, Gpt2 };

struct HfArch {
  HfFamily family = HfFamily::Llama;
  int64_t layers = 0, hidden = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;   // a, g, d (Gpt2: g = a, d = h / a)
  int64_t ffn = 0;                                  // f: SwiGLU's gate/up width, or GPT-2's n_inner
  int64_t vocab = 0;                                // rows of the embedding (tandem's padded vocabulary)
  int64_t positions = 0;                            // max_position_embeddings / n_positions
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;                      // Llama only
  bool tied = true;
  double hidden_dropout = 0.0, attention_dropout = 0.0;
};

const char* hf_class_name(HfFamily f);   // "LlamaForCausalLM", "GPT2LMHeadModel"

// The architecture of a job's model whose embedding has `vocab_rows` rows; UserError (naming the
// feature and `source`) when the model is in neither family.
HfArch arch_from_job(const Job& job, int64_t vocab_rows, const std::string& source);

// config.json as Hugging Face's configuration class for the family writes it; `torch_dtype`
// is "float32" or "bfloat16".
nlohmann::json config_json(const HfArch& arch, const std::string& torch_dtype);

// Reads config.json (`path` names it in errors: field, value, why).
HfArch arch_from_config(const nlohmann::json& config, const std::string& path);

// Megatron flags describing the model (for load_job), with a one-rank layout.
std::vector<std::string> megatron_flags(const HfArch& arch);

}  // namespace tandem::interop
