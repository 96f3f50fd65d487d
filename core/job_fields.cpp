#include "core/job_fields.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_enums.h"

namespace tandem {
namespace {

using json = nlohmann::json;
constexpr int64_t kBig = int64_t{1} << 24;        // 16.7M: sizes beyond this are typos
constexpr int64_t kHuge = int64_t{1} << 40;       // iteration counts and seeds

template <class Ref>
FieldSpec int_field(const char* key, JobSection s, Ref ref, int64_t lo, int64_t hi, const char* help) {
  return {key, s, FieldKind::Int,
          [=](Job& j, const std::string& name, const std::string& v) { ref(j) = parse_int(name, v, lo, hi); },
          [=](const Job& j) { return json(ref(const_cast<Job&>(j))); }, help};
}

template <class Ref>
FieldSpec real_field(const char* key, JobSection s, Ref ref, double lo, double hi, const char* help) {
  return {key, s, FieldKind::Real,
          [=](Job& j, const std::string& name, const std::string& v) { ref(j) = parse_real(name, v, lo, hi); },
          [=](const Job& j) { return json(ref(const_cast<Job&>(j))); }, help};
}

template <class Ref>
FieldSpec bool_field(const char* key, JobSection s, Ref ref, const char* help) {
  return {key, s, FieldKind::Bool,
          [=](Job& j, const std::string& name, const std::string& v) { ref(j) = parse_bool(name, v); },
          [=](const Job& j) { return json(ref(const_cast<Job&>(j))); }, help};
}

template <class Ref>
FieldSpec text_field(const char* key, JobSection s, Ref ref, const char* help) {
  return {key, s, FieldKind::Text,
          [=](Job& j, const std::string&, const std::string& v) { ref(j) = v; },
          [=](const Job& j) { return json(ref(const_cast<Job&>(j))); }, help};
}

template <class E, class Ref>
FieldSpec choice_field(const char* key, JobSection s, Ref ref, const char* help) {
  return {key, s, FieldKind::Choice,
          [=](Job& j, const std::string& name, const std::string& v) { ref(j) = parse_enum<E>(name, v); },
          [=](const Job& j) { return json(to_string(ref(const_cast<Job&>(j)))); }, help};
}

#define M(member) [](Job& j) -> auto& { return j.model.member; }
#define P(member) [](Job& j) -> auto& { return j.parallel.member; }
#define T(member) [](Job& j) -> auto& { return j.training.member; }
constexpr auto kM = JobSection::Model;
constexpr auto kP = JobSection::Parallel;
constexpr auto kT = JobSection::Training;

std::vector<FieldSpec> model_fields() {
  return {
      text_field("name", kM, M(name), "model name shown in tables"),
      int_field("num_layers", kM, M(num_layers), 1, 100000, "transformer layers L"),
      int_field("hidden_size", kM, M(hidden_size), 1, kBig, "hidden size h"),
      int_field("ffn_hidden_size", kM, M(ffn_hidden_size), 1, kBig, "MLP hidden size (default 4h; 8h/3 with SwiGLU)"),
      int_field("num_attention_heads", kM, M(num_attention_heads), 1, kBig, "attention heads a"),
      bool_field("group_query_attention", kM, M(group_query_attention), "grouped-query attention"),
      int_field("num_query_groups", kM, M(num_query_groups), 1, kBig, "key/value heads g with GQA"),
      int_field("kv_channels", kM, M(kv_channels), 1, kBig, "head dimension (default h/a)"),
      int_field("seq_length", kM, M(seq_length), 1, kBig, "sequence length s"),
      int_field("max_position_embeddings", kM, M(max_position_embeddings), 1, kBig, "position table size"),
      int_field("vocab_size", kM, M(vocab_size), 1, kBig, "tokenizer vocabulary V (before padding)"),
      int_field("make_vocab_size_divisible_by", kM, M(make_vocab_size_divisible_by), 1, 1 << 20, "vocab padding unit"),
      bool_field("swiglu", kM, M(swiglu), "SwiGLU MLP"),
      choice_field<Normalization>("normalization", kM, M(normalization), "LayerNorm or RMSNorm"),
      choice_field<PositionEmbedding>("position_embedding_type", kM, M(position_embedding), "learned_absolute, rope or none"),
      bool_field("untie_embeddings_and_output_weights", kM, M(untie_embeddings_and_output_weights), "separate output layer"),
      bool_field("add_bias_linear", kM, M(add_bias_linear), "biases in linear layers"),
      bool_field("add_qkv_bias", kM, M(add_qkv_bias), "bias in QKV only"),
      bool_field("multi_latent_attention", kM, M(multi_latent_attention), "DeepSeek multi-latent attention"),
      int_field("q_lora_rank", kM, M(q_lora_rank), 0, kBig, "MLA query compression rank (0: none)"),
      int_field("kv_lora_rank", kM, M(kv_lora_rank), 1, kBig, "MLA key/value compression rank"),
      int_field("qk_head_dim", kM, M(qk_head_dim), 1, kBig, "MLA q/k head dim (no RoPE part)"),
      int_field("qk_pos_emb_head_dim", kM, M(qk_pos_emb_head_dim), 0, kBig, "MLA RoPE head dim"),
      int_field("v_head_dim", kM, M(v_head_dim), 1, kBig, "MLA value head dim"),
      int_field("num_experts", kM, M(num_experts), 0, 1 << 20, "routed experts (0: dense)"),
      int_field("moe_router_topk", kM, M(moe_router_topk), 1, 1 << 20, "experts per token"),
      int_field("moe_ffn_hidden_size", kM, M(moe_ffn_hidden_size), 1, kBig, "expert MLP hidden size"),
      int_field("moe_shared_expert_intermediate_size", kM, M(moe_shared_expert_intermediate_size), 0, kBig, "shared expert size"),
      {"moe_layer_freq", kM, FieldKind::List,
       [](Job& j, const std::string& name, const std::string& v) { j.model.moe_layer_pattern = parse_moe_layer_freq(name, v); },
       [](const Job& j) { return json(j.model.moe_layer_pattern); }, "1 (every layer), N (every Nth) or a list like ([0]*3+[1]*58)"},
      real_field("moe_expert_capacity_factor", kM, M(moe_expert_capacity_factor), 0.0, 1e6, "capacity factor (0: dropless)"),
      choice_field<TokenDispatcher>("moe_token_dispatcher_type", kM, M(moe_token_dispatcher_type), "allgather, alltoall or flex"),
      real_field("moe_aux_loss_coeff", kM, M(moe_aux_loss_coeff), 0.0, 1e6, "load-balancing loss weight"),
      int_field("moe_router_num_groups", kM, M(moe_router_num_groups), 0, 1 << 20,
                "expert groups for group-limited (node-limited) routing (0: none)"),
      int_field("moe_router_group_topk", kM, M(moe_router_group_topk), 0, 1 << 20,
                "groups a token may route to (0: no group limit)"),
      choice_field<RouterScore>("moe_router_score_function", kM, M(moe_router_score_function), "softmax or sigmoid"),
      bool_field("moe_router_enable_expert_bias", kM, M(moe_router_enable_expert_bias),
                 "aux-loss-free balancing: a per-expert bias on the scores that choose experts"),
      real_field("moe_router_bias_update_rate", kM, M(moe_router_bias_update_rate), 0.0, 1e6,
                 "expert-bias step per iteration"),
      real_field("moe_router_topk_scaling_factor", kM, M(moe_router_topk_scaling_factor), 0.0, 1e6,
                 "routing-weight scale (0: none)"),
      int_field("mtp_num_layers", kM, M(mtp_num_layers), 0, 1000, "multi-token-prediction layers"),
      real_field("mtp_loss_scaling_factor", kM, M(mtp_loss_scaling_factor), 0.0, 1e6,
                 "weight of the multi-token-prediction loss"),
      real_field("rotary_base", kM, M(rotary_base), 1.0, 1e12, "RoPE base"),
      real_field("norm_epsilon", kM, M(norm_epsilon), 0.0, 1.0, "normalization epsilon"),
  };
}

std::vector<FieldSpec> parallel_fields() {
  return {
      int_field("tensor_model_parallel_size", kP, P(tensor_model_parallel_size), 1, 1 << 20, "TP"),
      int_field("pipeline_model_parallel_size", kP, P(pipeline_model_parallel_size), 1, 1 << 20, "PP"),
      int_field("context_parallel_size", kP, P(context_parallel_size), 1, 1 << 20, "CP"),
      int_field("expert_model_parallel_size", kP, P(expert_model_parallel_size), 1, 1 << 20, "EP"),
      int_field("expert_tensor_parallel_size", kP, P(expert_tensor_parallel_size), 1, 1 << 20, "ETP (default TP)"),
      int_field("virtual_pipeline_model_parallel_size", kP, P(virtual_pipeline_model_parallel_size), 1, 1 << 20, "model chunks per pipeline rank"),
      int_field("num_layers_per_virtual_pipeline_stage", kP, P(num_layers_per_virtual_pipeline_stage), 1, 100000, "layers per model chunk"),
      int_field("decoder_first_pipeline_num_layers", kP, P(decoder_first_pipeline_num_layers), 1, 100000, "layers on the first stage"),
      int_field("decoder_last_pipeline_num_layers", kP, P(decoder_last_pipeline_num_layers), 1, 100000, "layers on the last stage"),
      bool_field("account_for_embedding_in_pipeline_split", kP, P(account_for_embedding_in_pipeline_split),
                 "the embedding counts as a layer of the first virtual stage"),
      bool_field("account_for_loss_in_pipeline_split", kP, P(account_for_loss_in_pipeline_split),
                 "the loss counts as a layer of the last virtual stage"),
      bool_field("sequence_parallel", kP, P(sequence_parallel), "sequence parallelism with TP"),
      bool_field("use_distributed_optimizer", kP, P(use_distributed_optimizer), "shard optimizer state over DP"),
      bool_field("overlap_grad_reduce", kP, P(overlap_grad_reduce), "overlap DP gradient reduction with backward"),
      bool_field("overlap_param_gather", kP, P(overlap_param_gather), "overlap DP parameter all-gather with forward"),
      bool_field("tp_comm_overlap", kP, P(tp_comm_overlap), "overlap TP communication with GEMMs"),
      bool_field("async_tensor_model_parallel_allreduce", kP, P(async_tensor_model_parallel_allreduce),
                 "overlap the backward TP all-reduce/reduce-scatter of dX with the weight-gradient GEMM"),
      bool_field("overlap_p2p_communication", kP, P(overlap_p2p_communication),
                 "pipeline sends/receives overlap compute (off: the next compute waits for the send)"),
      bool_field("overlap_moe_expert_parallel_comm", kP, P(overlap_moe_expert_parallel_comm),
                 "steady-state forward and backward of two microbatches overlapped: one's EP all-to-all behind the "
                 "other's compute"),
      text_field("order", kP, P(order), "rank order, fastest first (default tp-cp-ep-dp-pp)"),
      text_field("pipeline_schedule", kP, P(pipeline_schedule), "tandem schedule name (default 1f1b / interleaved)"),
      choice_field<DcPlacement>("dc_placement", kP, P(dc_placement),
                                "tandem: dimension crossing datacenters: rank-order, pp, dp or ep"),
  };
}

// "--recompute-modules core_attn mlp" (words) or ["core_attn", "mlp"] (JSON): the modules, once each.
std::vector<RecomputeModule> parse_recompute_modules(const std::string& field, const std::string& text) {
  std::string words = text;
  for (char& c : words)
    if (c == '[' || c == ']' || c == '"' || c == ',') c = ' ';
  std::vector<RecomputeModule> out;
  std::istringstream in(words);
  for (std::string w; in >> w;) {
    const RecomputeModule m = parse_recompute_module(field, w);
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  }
  return out;
}

std::vector<FieldSpec> training_fields() {
  return {
      int_field("micro_batch_size", kT, T(micro_batch_size), 1, kBig, "sequences per microbatch"),
      int_field("global_batch_size", kT, T(global_batch_size), 1, kBig, "sequences per iteration"),
      int_field("train_iters", kT, T(train_iters), 0, kHuge, "iterations to train"),
      choice_field<DType>("params_dtype", kT, T(params_dtype), "fp32, fp16 or bf16"),
      choice_field<Fp8Format>("fp8_format", kT, T(fp8_format), "none, e4m3 or hybrid"),
      bool_field("grad_reduce_in_bf16", kT, T(grad_reduce_in_bf16), "bf16 gradient buffer and DP reduction (bf16 training)"),
      choice_field<AttentionBackend>("attention_backend", kT, T(attention_backend), "auto, flash, fused, unfused or local"),
      real_field("attention_dropout", kT, T(attention_dropout), 0.0, 1.0, "dropout on attention probabilities"),
      real_field("hidden_dropout", kT, T(hidden_dropout), 0.0, 1.0, "dropout after attention and MLP"),
      choice_field<RecomputeGranularity>("recompute_granularity", kT, T(recompute_granularity), "none, selective or full"),
      choice_field<RecomputeMethod>("recompute_method", kT, T(recompute_method), "uniform or block"),
      int_field("recompute_num_layers", kT, T(recompute_num_layers), 1, 100000, "layers per recompute unit"),
      {"recompute_modules", kT, FieldKind::List,
       [](Job& j, const std::string& name, const std::string& v) { j.training.recompute_modules = parse_recompute_modules(name, v); },
       [](const Job& j) {
         json out = json::array();
         for (RecomputeModule m : j.training.recompute_modules) out.push_back(to_string(m));
         return out;
       },
       "selective recompute: core_attn, moe_act, layernorm, mla_up_proj, mlp, moe, shared_experts"},
      real_field("lr", kT, T(lr), 0.0, 1e3, "peak learning rate"),
      real_field("min_lr", kT, T(min_lr), 0.0, 1e3, "final learning rate"),
      choice_field<LrDecayStyle>("lr_decay_style", kT, T(lr_decay_style), "constant, linear, cosine, inverse-square-root, WSD"),
      int_field("lr_warmup_iters", kT, T(lr_warmup_iters), 0, kHuge, "warmup iterations"),
      real_field("lr_warmup_fraction", kT, T(lr_warmup_fraction), 0.0, 1.0, "warmup as a fraction of decay iterations"),
      int_field("train_samples", kT, T(train_samples), 1, kHuge, "sequences to train (sets train_iters)"),
      int_field("lr_decay_iters", kT, T(lr_decay_iters), 1, kHuge, "decay iterations (default train_iters)"),
      real_field("weight_decay", kT, T(weight_decay), 0.0, 1e3, "AdamW weight decay"),
      real_field("clip_grad", kT, T(clip_grad), 0.0, 1e12, "global gradient-norm clip (0: off)"),
      real_field("adam_beta1", kT, T(adam_beta1), 0.0, 1.0, "Adam beta1"),
      real_field("adam_beta2", kT, T(adam_beta2), 0.0, 1.0, "Adam beta2"),
      real_field("adam_eps", kT, T(adam_eps), 0.0, 1.0, "Adam epsilon"),
      int_field("seed", kT, T(seed), 0, kHuge, "random seed"),
      real_field("init_method_std", kT, T(init_method_std), 0.0, 1e3, "weight init standard deviation"),
      bool_field("mock_data", kT, T(mock_data), "synthetic token stream"),
      text_field("data_path", kT, T(data_path), "indexed dataset prefix"),
      text_field("split", kT, T(split), "train,valid,test weights"),
      text_field("save", kT, T(save), "checkpoint directory to write"),
      text_field("load", kT, T(load), "checkpoint directory to resume from"),
      int_field("save_interval", kT, T(save_interval), 1, kHuge, "iterations between checkpoints"),
      int_field("log_interval", kT, T(log_interval), 1, kHuge, "iterations between log lines"),
      int_field("eval_interval", kT, T(eval_interval), 1, kHuge, "iterations between evaluations"),
      int_field("eval_iters", kT, T(eval_iters), 0, kHuge, "iterations per evaluation"),
      text_field("tensorboard_dir", kT, T(tensorboard_dir), "train: write TensorBoard event files here (rank 0)"),
      int_field("tensorboard_log_interval", kT, T(tensorboard_log_interval), 1, kHuge,
                "train: iterations between TensorBoard training scalars"),
      bool_field("log_timers_to_tensorboard", kT, T(log_timers_to_tensorboard),
                 "train: iteration time and throughput to TensorBoard"),
      bool_field("log_validation_ppl_to_tensorboard", kT, T(log_validation_ppl_to_tensorboard),
                 "train: validation perplexity to TensorBoard"),
      bool_field("log_memory_to_tensorboard", kT, T(log_memory_to_tensorboard),
                 "train: rank 0's device memory to TensorBoard"),
      choice_field<MoeRouting>("moe_routing", kT, T(moe_routing),
                               "tandem: simulated MoE routing, balanced, zipf or trace"),
      {"moe_routing_zipf_s", kT, FieldKind::Real,
       [](Job& j, const std::string& name, const std::string& v) {
         const double s = parse_real(name, v, 0.0, 100.0);
         if (s <= 0) throw_field_error(name, v, "the Zipf exponent must be > 0");
         j.training.moe_routing_zipf_s = s;
       },
       [](const Job& j) { return json(j.training.moe_routing_zipf_s); },
       "tandem: Zipf skew s > 0 of --moe-routing zipf (expert popularity ~ 1/rank^s)"},
      text_field("moe_routing_trace", kT, T(moe_routing_trace),
                 "tandem: routing trace of --moe-routing trace (written by train --record-routing)"),
      int_field("moe_routing_seed", kT, T(moe_routing_seed), 0, kHuge, "tandem: seed of --moe-routing zipf"),
  };
}
#undef M
#undef P
#undef T

}  // namespace

const std::vector<FieldSpec>& job_fields() {
  static const std::vector<FieldSpec> fields = [] {
    std::vector<FieldSpec> all = model_fields();
    for (auto& f : parallel_fields()) all.push_back(std::move(f));
    for (auto& f : training_fields()) all.push_back(std::move(f));
    return all;
  }();
  return fields;
}

const FieldSpec* find_field(std::string_view key) {
  for (const auto& f : job_fields())
    if (key == f.key) return &f;
  return nullptr;
}

const FieldSpec* find_field_in(JobSection section, std::string_view key) {
  const FieldSpec* f = find_field(key);
  return (f && f->section == section) ? f : nullptr;
}

std::string section_name(JobSection s) {
  switch (s) {
    case JobSection::Model: return "model";
    case JobSection::Parallel: return "parallel";
    case JobSection::Training: return "training";
  }
  return "?";
}

std::string key_to_flag(std::string_view key) {
  std::string flag = "--";
  for (char c : key) flag += (c == '_') ? '-' : c;
  return flag;
}

int64_t parse_int(const std::string& field, const std::string& text, int64_t min_value, int64_t max_value) {
  if (text.empty()) throw_field_error(field, "''", "expected an integer");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0') {
    // Accept integral reals written by JSON encoders ("8.0", "1e3").
    const double d = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || !std::isfinite(d) || d != std::floor(d))
      throw_field_error(field, text, "expected an integer");
    if (d < static_cast<double>(min_value) || d > static_cast<double>(max_value))
      throw_field_error(field, text, "must be between " + std::to_string(min_value) + " and " + std::to_string(max_value));
    return static_cast<int64_t>(d);
  }
  if (errno == ERANGE || v < min_value || v > max_value)
    throw_field_error(field, text, "must be between " + std::to_string(min_value) + " and " + std::to_string(max_value));
  return v;
}

double parse_real(const std::string& field, const std::string& text, double min_value, double max_value) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || *end != '\0') throw_field_error(field, "'" + text + "'", "expected a number");
  if (!std::isfinite(v) || errno == ERANGE) throw_field_error(field, text, "must be a finite number");
  if (v < min_value || v > max_value) {
    std::ostringstream os;
    os << "must be between " << min_value << " and " << max_value;
    throw_field_error(field, text, os.str());
  }
  return v;
}

bool parse_bool(const std::string& field, const std::string& text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  throw_field_error(field, "'" + text + "'", "expected true or false");
}

}  // namespace tandem
