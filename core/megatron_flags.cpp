// Megatron-LM `pretrain_gpt.py` command lines -> Job fields.
// Every field of core/job_fields.cpp is reachable as "--" + key with dashes. This file adds
// Megatron's other spellings (--bf16, --disable-bias-linear, ...) and the flags that are accepted
// but do not change what tandem computes (logging, tokenizer files, fusions, ...).
#include <algorithm>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#include "core/megatron_flags_accepted.h"

namespace tandem {
namespace {

constexpr int kUntilNextFlag = -1;

// Flags accepted for compatibility with no effect on the run: {flag, nullptr, nullptr, arity}.
const std::vector<FlagAlias>& ignored_flags_table() {
  static const std::vector<FlagAlias> t = [] {
    std::vector<FlagAlias> v;
    const char* no_value[] = {
        "--use-mcore-models", "--use-legacy-models", "--no-masked-softmax-fusion",
        "--no-bias-gelu-fusion", "--no-bias-swiglu-fusion", "--no-bias-dropout-fusion", "--no-rope-fusion",
        "--no-gradient-accumulation-fusion",
        "--apply-query-key-layer-scaling", "--attention-softmax-in-fp32", "--accumulate-allreduce-grads-in-fp32",
        "--log-throughput", "--log-num-zeros-in-grad", "--log-params-norm", "--log-progress",
        "--log-world-size-to-tensorboard", "--log-loss-scale-to-tensorboard", "--log-batch-size-to-tensorboard",
        "--no-load-optim", "--no-load-rng", "--no-save-optim", "--no-save-rng", "--finetune",
        "--use-checkpoint-args", "--manual-gc", "--async-save", "--use-dist-ckpt", "--auto-detect-ckpt-format",
        "--moe-grouped-gemm", "--moe-permute-fusion", "--cross-entropy-loss-fusion", "--calculate-per-token-loss",
        "--qk-layernorm", "--reset-position-ids", "--reset-attention-mask", "--eod-mask-loss",
        "--no-create-attention-mask-in-dataloader", "--profile", "--use-pytorch-profiler",
        "--record-memory-history", "--check-for-nan-in-loss-and-grad", "--log-straggler",
        "--defer-embedding-wgrad-compute", "--align-grad-reduce",
        "--align-param-gather", "--use-contiguous-buffers-in-local-ddp", "--no-persist-layer-norm",
        "--empty-unused-memory-level", "--tp-comm-overlap-rs-dgrad", "--no-check-for-nan-in-loss-and-grad",
        "--moe-router-pre-softmax", "--distribute-saved-activations", "--use-cpu-initialization",
        "--bias-gelu-fusion", "--masked-softmax-fusion", "--bias-dropout-fusion", "--use-rotary-position-embeddings-fusion",
        "--no-position-embedding", "--wandb-log-model", "--enable-one-logger", "--no-one-logger",
        "--ckpt-fully-parallel-save", "--ckpt-fully-parallel-load", "--ckpt-assume-constant-structure",
        "--use-persistent-ckpt-worker", "--moe-use-legacy-grouped-gemm", "--moe-pad-expert-input-to-capacity",
        "--use-precision-aware-optimizer", "--exit-on-missing-checkpoint"};
    for (const char* f : no_value) v.push_back({f, nullptr, nullptr, 0});
    const char* one_value[] = {
        "--tensorboard-queue-size", "--wandb-project",
        "--wandb-exp-name", "--wandb-save-dir", "--wandb-entity", "--tokenizer-model", "--vocab-file",
        "--merge-file", "--data-cache-path", "--distributed-backend", "--distributed-timeout-minutes",
        "--rotary-percent", "--ckpt-format", "--exit-duration-in-mins",
        "--exit-interval", "--dataloader-type", "--num-workers", "--manual-gc-interval", "--timing-log-level",
        "--timing-log-option", "--transformer-impl", "--moe-router-load-balancing-type",
        "--moe-z-loss-coeff", "--moe-router-dtype", "--moe-input-jitter-eps",
        "--num-dataset-builder-threads", "--dist-ckpt-strictness",
        "--profile-step-start", "--profile-step-end", "--nccl-communicator-config-path", "--tp-comm-overlap-cfg",
        "--ddp-bucket-size", "--eval-interval-samples", "--lr-warmup-init", "--loss-scale", "--initial-loss-scale",
        "--min-loss-scale", "--loss-scale-window", "--hysteresis", "--fp8-margin", "--fp8-interval",
        "--fp8-amax-history-len", "--fp8-amax-compute-algo", "--fp8-recipe", "--save-retain-interval",
        "--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler", "--start-weight-decay",
        "--end-weight-decay", "--weight-decay-incr-style", "--seq-length-dec", "--decoder-seq-length",
        "--num-distributed-optimizer-instances", "--tokenizer-type",
        "--moe-per-layer-logging", "--qk-clip", "--pretrained-checkpoint", "--log-interval-samples",
        "--kv-lora-rank-dropout", "--optimizer", "--sgd-momentum", "--moe-aux-loss-coeff-decay"};
    for (const char* f : one_value) v.push_back({f, nullptr, nullptr, 1});
    // Data blends take a list of weight/prefix pairs; only the count of files matters here.
    v.push_back({"--train-data-path", nullptr, nullptr, kUntilNextFlag});
    v.push_back({"--valid-data-path", nullptr, nullptr, kUntilNextFlag});
    v.push_back({"--test-data-path", nullptr, nullptr, kUntilNextFlag});
    v.push_back({"--rampup-batch-size", nullptr, nullptr, 3});
    return v;
  }();
  return t;
}

}  // namespace

const std::vector<FlagAlias>& flag_aliases() {
  static const std::vector<FlagAlias> aliases = [] {
    std::vector<FlagAlias> a = {
        {"--bf16", "params_dtype", "bf16", 0},
        {"--fp16", "params_dtype", "fp16", 0},
        {"--fp32", "params_dtype", "fp32", 0},
        {"--disable-bias-linear", "add_bias_linear", "false", 0},
        {"--add-bias-linear", "add_bias_linear", "true", 0},
        {"--recompute-activations", "recompute_granularity", "selective", 0},
        {"--use-rotary-position-embeddings", "position_embedding_type", "rope", 0},
        {"--fp8", "fp8_format", "hybrid", 0},
        {"--use-flash-attn", "attention_backend", "flash", 0},
        {"--num-virtual-stages-per-pipeline-rank", "virtual_pipeline_model_parallel_size", nullptr, 0},
        {"--pipeline-schedule", "pipeline_schedule", nullptr, 0},
        {"--num-layers-in-first-pipeline-stage", "decoder_first_pipeline_num_layers", nullptr, 0},
        {"--num-layers-in-last-pipeline-stage", "decoder_last_pipeline_num_layers", nullptr, 0},
        {"--expert-tensor-parallel-size", "expert_tensor_parallel_size", nullptr, 0},
        {"--mtp-num-layers", "mtp_num_layers", nullptr, 0},
        {"--no-async-tensor-model-parallel-allreduce", "async_tensor_model_parallel_allreduce", "false", 0},
        {"--overlap-p2p-communication", "overlap_p2p_communication", "true", 0},
        // Spellings of Megatron-LM before 2022 (the 2021 example scripts use them).
        {"--checkpoint-activations", "recompute_granularity", "full", 0},
        {"--checkpoint-num-layers", "recompute_num_layers", nullptr, 0},
        {"--model-parallel-size", "tensor_model_parallel_size", nullptr, 0},
        {"--batch-size", "micro_batch_size", nullptr, 0},
    };
    for (const auto& f : ignored_flags_table()) a.push_back(f);
    for (const auto& f : accepted_megatron_flags()) a.push_back(f);
    return a;
  }();
  return aliases;
}

namespace {

bool is_flag(const std::string& word) {
  // "-1e-4" and "-5" are values, "--x" and "-x" are flags.
  if (word.size() < 2 || word[0] != '-') return false;
  return word[1] == '-' || std::isalpha(static_cast<unsigned char>(word[1]));
}

const FlagAlias* find_alias(const std::string& flag) {
  for (const auto& a : flag_aliases())
    if (flag == a.flag) return &a;
  return nullptr;
}

std::string flag_to_key(const std::string& flag) {
  std::string key;
  for (char c : flag.substr(2)) key += (c == '-') ? '_' : c;
  return key;
}

// Collects the values following flags[i] up to the next flag.
std::vector<std::string> take_values(const std::vector<std::string>& flags, size_t& i, int arity) {
  std::vector<std::string> out;
  while (i + 1 < flags.size() && (arity == kUntilNextFlag || static_cast<int>(out.size()) < arity)) {
    if (arity == kUntilNextFlag && is_flag(flags[i + 1])) break;
    out.push_back(flags[++i]);
  }
  return out;
}

// Applies one flag that maps to a field. Returns the number of extra words consumed.
void apply_field_flag(Job& job, const FieldSpec& field, const std::string& flag, const FlagAlias* alias,
                      const std::vector<std::string>& flags, size_t& i, const std::string& inline_value,
                      bool has_inline) {
  if (alias && alias->fixed_value) {
    if (has_inline) throw UserError(flag + " takes no value (got '" + inline_value + "')");
    field.set(job, flag, alias->fixed_value);
    return;
  }
  if (field.kind == FieldKind::Bool && !has_inline) {
    field.set(job, flag, "true");
    return;
  }
  std::string value = inline_value;
  if (!has_inline) {
    if (i + 1 >= flags.size() || is_flag(flags[i + 1])) throw UserError(flag + ": missing value");
    value = flags[++i];
  }
  if (std::string(field.key) == "data_path" || std::string(field.key) == "recompute_modules") {
    // Megatron accepts "--data-path [W1] P1 [W2 P2 ...]": keep the blend as written.
    for (const auto& more : take_values(flags, i, kUntilNextFlag)) value += " " + more;
  }
  field.set(job, flag, value);
}

}  // namespace

void apply_megatron_flags(Job& job, const std::vector<std::string>& flags) {
  for (size_t i = 0; i < flags.size(); ++i) {
    std::string flag = flags[i];
    if (!is_flag(flag) || flag.rfind("--", 0) != 0)
      throw UserError("Megatron flag expected, got '" + flag + "' (flags after -- must look like --name [value])");
    std::string inline_value;
    bool has_inline = false;
    if (auto eq = flag.find('='); eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline = true;
    }
    const FlagAlias* alias = find_alias(flag);
    if (alias && alias->key == nullptr) {  // accepted, no effect on the run
      if (!has_inline) take_values(flags, i, alias->ignored_arity);
      job.ignored_flags.push_back(flag);
      continue;
    }
    const FieldSpec* field = alias ? find_field(alias->key) : find_field(flag_to_key(flag));
    if (!field) throw UserError("unknown Megatron flag " + flag + " (tandem does not know what it does; "
                                "see `tandem info --flags` for the accepted ones)");
    apply_field_flag(job, *field, flag, alias, flags, i, inline_value, has_inline);
  }
}

}  // namespace tandem
