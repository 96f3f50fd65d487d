// Model families and config.json (hf_arch.h).
#include "interop/hf_arch.h"

#include <cstdio>

#include "core/check.h"
#include "models/model_dims.h"

namespace tandem::interop {
namespace {

using nlohmann::json;

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A positive integer field of config.json.
int64_t int_field(const json& c, const std::string& key, const std::string& path) {
  if (!c.contains(key)) throw UserError(path + ": field " + key + " is missing");
  const json& v = c[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0)
    throw UserError(path + ": " + key + " = " + v.dump() + ": expected a positive integer");
  return v.get<int64_t>();
}

double real_field(const json& c, const std::string& key, double fallback, const std::string& path) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_number() || c[key].get<double>() < 0)
    throw UserError(path + ": " + key + " = " + c[key].dump() + ": expected a non-negative number");
  return c[key].get<double>();
}

bool bool_field(const json& c, const std::string& key, bool fallback, const std::string& path) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  if (!c[key].is_boolean()) throw UserError(path + ": " + key + " = " + c[key].dump() + ": expected true or false");
  return c[key].get<bool>();
}

// A string-valued field that must be one of `allowed` (absent: the first).
void expect_string(const json& c, const std::string& key, const std::vector<std::string>& allowed,
                   const std::string& path) {
  if (!c.contains(key) || c[key].is_null()) return;
  for (const std::string& a : allowed)
    if (c[key] == a) return;
  std::string list;
  for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
  throw UserError(path + ": " + key + " = " + c[key].dump() + ": tandem supports " + list);
}

void refuse(bool bad, const std::string& source, const std::string& what) {
  if (bad)
    throw UserError(source + ": " + what + ": not representable as LlamaForCausalLM or GPT2LMHeadModel");
}

}  // namespace

const char* hf_class_name(HfFamily f) { return f == HfFamily::Llama ? "LlamaForCausalLM" : "GPT2LMHeadModel"; }

HfArch arch_from_job(const Job& job, int64_t vocab_rows, const std::string& source) {
  const ModelConfig& m = job.model;
  const detail::ModelDims x = detail::model_dims(m);
  refuse(m.num_experts > 0, source, "mixture of experts (num_experts = " + std::to_string(m.num_experts) + ")");
  refuse(m.multi_latent_attention, source, "multi-latent attention");
  refuse(m.mtp_num_layers > 0, source, "multi-token prediction layers");
  refuse(!m.add_bias_linear && m.add_qkv_bias, source, "biases in QKV only (add_qkv_bias)");
  HfArch a;
  a.layers = x.layers;
  a.hidden = x.h;
  a.heads = x.a;
  a.kv_heads = x.g;
  a.head_dim = x.d;
  a.ffn = x.f;
  a.vocab = vocab_rows;
  a.norm_eps = m.norm_epsilon;
  a.rope_theta = m.rotary_base;
  a.tied = !m.untie_embeddings_and_output_weights;
  a.hidden_dropout = job.training.hidden_dropout;
  a.attention_dropout = job.training.attention_dropout;
  a.positions = m.max_position_embeddings > 0 ? m.max_position_embeddings : m.seq_length;
  if (m.normalization == Normalization::RMSNorm) {
    a.family = HfFamily::Llama;
    refuse(m.position_embedding != PositionEmbedding::Rope, source, "RMSNorm without rotary position embeddings");
    refuse(!m.swiglu, source, "RMSNorm without SwiGLU");
    refuse(m.add_bias_linear, source, "RMSNorm with linear biases");
  } else {
    a.family = HfFamily::Gpt2;
    refuse(m.position_embedding != PositionEmbedding::LearnedAbsolute, source,
           "LayerNorm without learned absolute positions");
    refuse(m.swiglu, source, "LayerNorm with SwiGLU");
    refuse(!m.add_bias_linear, source, "LayerNorm without linear biases (GPT-2 has them)");
    refuse(a.kv_heads != a.heads, source, "LayerNorm with grouped-query attention");
    refuse(a.head_dim * a.heads != a.hidden, source, "kv_channels x heads != hidden_size");
  }
  return a;
}

json config_json(const HfArch& a, const std::string& torch_dtype) {
  if (a.family == HfFamily::Llama)
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"attention_bias", false},
            {"attention_dropout", a.attention_dropout}, {"head_dim", a.head_dim}, {"hidden_act", "silu"},
            {"hidden_size", a.hidden}, {"intermediate_size", a.ffn}, {"max_position_embeddings", a.positions},
            {"mlp_bias", false}, {"num_attention_heads", a.heads}, {"num_hidden_layers", a.layers},
            {"num_key_value_heads", a.kv_heads}, {"pretraining_tp", 1}, {"rms_norm_eps", a.norm_eps},
            {"rope_scaling", nullptr}, {"rope_theta", a.rope_theta}, {"tie_word_embeddings", a.tied},
            {"torch_dtype", torch_dtype}, {"use_cache", true}, {"vocab_size", a.vocab}};
  return {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"activation_function", "gelu_new"},
          {"attn_pdrop", a.attention_dropout}, {"embd_pdrop", a.hidden_dropout},
          {"layer_norm_epsilon", a.norm_eps}, {"n_ctx", a.positions}, {"n_embd", a.hidden}, {"n_head", a.heads},
          {"n_inner", a.ffn}, {"n_layer", a.layers}, {"n_positions", a.positions}, {"resid_pdrop", a.hidden_dropout},
          {"scale_attn_weights", true}, {"tie_word_embeddings", a.tied}, {"torch_dtype", torch_dtype},
          {"use_cache", true}, {"vocab_size", a.vocab}};
}

HfArch arch_from_config(const json& c, const std::string& path) {
  if (!c.is_object()) throw UserError(path + ": not a JSON object");
  const std::string type = c.contains("model_type") && c["model_type"].is_string() ? c["model_type"].get<std::string>() : "";
  HfArch a;
  if (type == "llama") {
    a.family = HfFamily::Llama;
    a.layers = int_field(c, "num_hidden_layers", path);
    a.hidden = int_field(c, "hidden_size", path);
    a.heads = int_field(c, "num_attention_heads", path);
    a.kv_heads = c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null()
                     ? int_field(c, "num_key_value_heads", path) : a.heads;
    a.head_dim = c.contains("head_dim") && !c["head_dim"].is_null() ? int_field(c, "head_dim", path) : a.hidden / a.heads;
    a.ffn = int_field(c, "intermediate_size", path);
    a.positions = int_field(c, "max_position_embeddings", path);
    a.norm_eps = real_field(c, "rms_norm_eps", 1e-6, path);
    a.rope_theta = real_field(c, "rope_theta", 10000.0, path);
    a.attention_dropout = real_field(c, "attention_dropout", 0.0, path);
    a.tied = bool_field(c, "tie_word_embeddings", false, path);
    expect_string(c, "hidden_act", {"silu"}, path);
    if (c.contains("rope_scaling") && !c["rope_scaling"].is_null())
      throw UserError(path + ": rope_scaling = " + c["rope_scaling"].dump() + ": tandem supports plain RoPE (null)");
    if (bool_field(c, "attention_bias", false, path)) throw UserError(path + ": attention_bias = true: tandem's LLaMA has no biases");
    if (bool_field(c, "mlp_bias", false, path)) throw UserError(path + ": mlp_bias = true: tandem's LLaMA has no biases");
    if (a.heads % a.kv_heads != 0)
      throw UserError(path + ": num_key_value_heads = " + std::to_string(a.kv_heads) + " must divide num_attention_heads = " +
                      std::to_string(a.heads));
  } else if (type == "gpt2") {
    a.family = HfFamily::Gpt2;
    a.layers = int_field(c, "n_layer", path);
    a.hidden = int_field(c, "n_embd", path);
    a.heads = a.kv_heads = int_field(c, "n_head", path);
    if (a.hidden % a.heads != 0)
      throw UserError(path + ": n_head = " + std::to_string(a.heads) + " must divide n_embd = " + std::to_string(a.hidden));
    a.head_dim = a.hidden / a.heads;
    a.ffn = c.contains("n_inner") && !c["n_inner"].is_null() ? int_field(c, "n_inner", path) : 4 * a.hidden;
    a.positions = int_field(c, "n_positions", path);
    a.norm_eps = real_field(c, "layer_norm_epsilon", 1e-5, path);
    a.hidden_dropout = real_field(c, "resid_pdrop", 0.1, path);
    a.attention_dropout = real_field(c, "attn_pdrop", 0.1, path);
    a.tied = bool_field(c, "tie_word_embeddings", true, path);
    expect_string(c, "activation_function", {"gelu_new", "gelu_pytorch_tanh"}, path);
    if (!bool_field(c, "scale_attn_weights", true, path))
      throw UserError(path + ": scale_attn_weights = false: tandem scales attention by 1/sqrt(head_dim)");
    for (const char* k : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
      if (bool_field(c, k, false, path)) throw UserError(path + ": " + std::string(k) + " = true is not supported");
  } else {
    throw UserError(path + ": model_type = " + (c.contains("model_type") ? c["model_type"].dump() : "(missing)") +
                    ": tandem imports \"llama\" (LlamaForCausalLM) and \"gpt2\" (GPT2LMHeadModel)");
  }
  a.vocab = int_field(c, "vocab_size", path);
  return a;
}

std::vector<std::string> megatron_flags(const HfArch& a) {
  std::vector<std::string> f = {
      "--num-layers", std::to_string(a.layers), "--hidden-size", std::to_string(a.hidden),
      "--num-attention-heads", std::to_string(a.heads), "--kv-channels", std::to_string(a.head_dim),
      "--ffn-hidden-size", std::to_string(a.ffn), "--seq-length", std::to_string(a.positions),
      "--max-position-embeddings", std::to_string(a.positions), "--vocab-size", std::to_string(a.vocab),
      "--make-vocab-size-divisible-by", "1", "--norm-epsilon", num(a.norm_eps),
      "--hidden-dropout", num(a.hidden_dropout), "--attention-dropout", num(a.attention_dropout),
      "--micro-batch-size", "1", "--global-batch-size", "1"};
  if (a.family == HfFamily::Llama) {
    for (const char* s : {"--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
                          "--disable-bias-linear"})
      f.emplace_back(s);
    f.insert(f.end(), {"--rotary-base", num(a.rope_theta)});
    if (a.kv_heads != a.heads) f.insert(f.end(), {"--group-query-attention", "--num-query-groups", std::to_string(a.kv_heads)});
  }
  if (!a.tied) f.emplace_back("--untie-embeddings-and-output-weights");
  return f;
}

}  // namespace tandem::interop
