// Megatron-LM's derivations (arguments.py, transformer_config.py) and layout validation.
// After resolve_job() every derived field is filled and the job is a consistent description.
#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#include "core/parallel_grid.h"
#include "core/schedule.h"

namespace tandem {
namespace {

std::string flag(const char* key) { return key_to_flag(key); }

void require_divides(const char* what_key, int64_t divisor, const char* of_key, int64_t value) {
  if (divisor <= 0 || value % divisor != 0)
    throw UserError(flag(of_key) + " = " + std::to_string(value) + " must be divisible by " + flag(what_key) +
                    " = " + std::to_string(divisor));
}

void resolve_attention(ModelConfig& m, const ParallelConfig& p, std::vector<std::string>& notes) {
  if (m.num_layers <= 0) throw UserError("--num-layers is required (a positive integer)");
  if (m.hidden_size <= 0) throw UserError("--hidden-size is required (a positive integer)");
  if (m.num_attention_heads <= 0) throw UserError("--num-attention-heads is required (a positive integer)");
  if (m.seq_length <= 0) throw UserError("--seq-length is required (a positive integer)");
  if (!m.group_query_attention && m.num_query_groups > 0 && m.num_query_groups != m.num_attention_heads) {
    m.group_query_attention = true;
    notes.push_back("--num-query-groups given without --group-query-attention: GQA enabled");
  }
  if (!m.group_query_attention) m.num_query_groups = m.num_attention_heads;
  if (m.num_query_groups <= 0) m.num_query_groups = 1;  // Megatron's default with GQA
  if (m.num_query_groups > m.num_attention_heads)
    throw UserError(flag("num_query_groups") + " = " + std::to_string(m.num_query_groups) +
                    " exceeds --num-attention-heads = " + std::to_string(m.num_attention_heads));
  require_divides("num_query_groups", m.num_query_groups, "num_attention_heads", m.num_attention_heads);
  if (m.kv_channels == 0) {
    require_divides("num_attention_heads", m.num_attention_heads, "hidden_size", m.hidden_size);
    m.kv_channels = m.hidden_size / m.num_attention_heads;
  }
  require_divides("tensor_model_parallel_size", p.tensor_model_parallel_size, "num_attention_heads",
                  m.num_attention_heads);
  if (!m.multi_latent_attention)
    require_divides("tensor_model_parallel_size", p.tensor_model_parallel_size, "num_query_groups", m.num_query_groups);
  if (m.max_position_embeddings == 0) m.max_position_embeddings = m.seq_length;
  if (m.position_embedding == PositionEmbedding::LearnedAbsolute && m.seq_length > m.max_position_embeddings)
    throw UserError("--seq-length = " + std::to_string(m.seq_length) + " exceeds --max-position-embeddings = " +
                    std::to_string(m.max_position_embeddings) + " (learned absolute positions)");
  if (p.context_parallel_size > 1 && m.seq_length % (2 * p.context_parallel_size) != 0)
    throw UserError("--seq-length = " + std::to_string(m.seq_length) + " must be divisible by 2 x " +
                    "--context-parallel-size = " + std::to_string(2 * p.context_parallel_size) +
                    " (causal load balancing splits the sequence into 2·CP chunks)");
}

void resolve_mlp_and_vocab(ModelConfig& m, const ParallelConfig& p, std::vector<std::string>& notes) {
  if (m.ffn_hidden_size == 0) {
    m.ffn_hidden_size = m.swiglu ? ((4 * m.hidden_size * 2 / 3) / 64) * 64 : 4 * m.hidden_size;
    if (m.ffn_hidden_size == 0) m.ffn_hidden_size = 4 * m.hidden_size;
  }
  if (m.vocab_size == 0) {
    m.vocab_size = 50257;
    notes.push_back("--vocab-size not given: using the GPT-2 BPE tokenizer's 50257");
  }
  const int64_t multiple = m.make_vocab_size_divisible_by * p.tensor_model_parallel_size;
  m.padded_vocab_size = (m.vocab_size + multiple - 1) / multiple * multiple;
}

// Megatron-Core's conditions for --overlap-moe-expert-parallel-comm (TransformerConfig checks).
void check_ep_overlap(const Job& job) {
  const ParallelConfig& p = job.parallel;
  const char* flag = "--overlap-moe-expert-parallel-comm";
  if (!job.model.is_moe() || p.expert_model_parallel_size < 2)
    throw UserError(std::string(flag) + " needs expert parallelism (an MoE model and --expert-model-parallel-size > 1; "
                    "it is " + std::to_string(p.expert_model_parallel_size) + ")");
  if (job.model.moe_token_dispatcher_type != TokenDispatcher::AllToAll &&
      job.model.moe_token_dispatcher_type != TokenDispatcher::Flex)
    throw UserError(std::string(flag) + " needs --moe-token-dispatcher-type alltoall or flex (it is " +
                    to_string(job.model.moe_token_dispatcher_type) + ")");
  if (p.pipeline_model_parallel_size > 1 &&
      (p.virtual_pipeline_model_parallel_size < 2 || p.pipeline_schedule != "interleaved"))
    throw UserError(std::string(flag) + " with --pipeline-model-parallel-size = " +
                    std::to_string(p.pipeline_model_parallel_size) + " needs Megatron-Core's interleaved schedule "
                    "(--num-virtual-stages-per-pipeline-rank > 1; the schedule is " + p.pipeline_schedule + ")");
  if (job.training.recompute_granularity == RecomputeGranularity::Full)
    throw UserError(std::string(flag) + " does not support --recompute-granularity full");
}

void resolve_moe(ModelConfig& m, const ParallelConfig& p) {
  if (!m.is_moe()) {
    m.moe_layer_pattern.clear();
    if (p.expert_model_parallel_size > 1)
      throw UserError("--expert-model-parallel-size = " + std::to_string(p.expert_model_parallel_size) +
                      " needs an MoE model (--num-experts is 0)");
    return;
  }
  if (m.moe_ffn_hidden_size == 0) m.moe_ffn_hidden_size = m.ffn_hidden_size;
  if (m.moe_router_topk > m.num_experts)
    throw UserError("--moe-router-topk = " + std::to_string(m.moe_router_topk) + " exceeds --num-experts = " +
                    std::to_string(m.num_experts));
  require_divides("expert_model_parallel_size", p.expert_model_parallel_size, "num_experts", m.num_experts);
  if (m.moe_layer_pattern.size() == 1 && m.moe_layer_pattern[0] < 0) {
    const int every = -m.moe_layer_pattern[0];
    m.moe_layer_pattern.assign(static_cast<size_t>(m.num_layers), 0);
    for (int64_t l = 0; l < m.num_layers; ++l) m.moe_layer_pattern[static_cast<size_t>(l)] = (l % every == 0) ? 1 : 0;
  } else if (m.moe_layer_pattern.empty()) {
    m.moe_layer_pattern.assign(static_cast<size_t>(m.num_layers), 1);
  } else if (static_cast<int64_t>(m.moe_layer_pattern.size()) != m.num_layers) {
    throw UserError("--moe-layer-freq lists " + std::to_string(m.moe_layer_pattern.size()) +
                    " layers but --num-layers = " + std::to_string(m.num_layers));
  }
}

// Multi-latent attention (DeepSeek-V2 §2.1, Megatron-Core's MLATransformerConfig). Per head, queries
// and keys are [qk_head_dim channels without RoPE | qk_pos_emb_head_dim decoupled RoPE channels],
// values v_head_dim; keys and values come from a kv_lora_rank latent of the hidden state, queries
// from a q_lora_rank latent (0: straight from the hidden state). Sizes >= 1 (>= 0 for the RoPE part
// and q_lora_rank) are enforced when parsed; here, what cannot form the layer together.
void resolve_mla(const ModelConfig& m) {
  if (!m.multi_latent_attention) return;
  const std::string rope = std::to_string(m.qk_pos_emb_head_dim);
  if (m.qk_pos_emb_head_dim % 2 != 0)
    throw UserError(flag("qk_pos_emb_head_dim") + " = " + rope +
                    ": RoPE rotates pairs of channels, so the decoupled RoPE head dimension must be even");
  if (m.qk_pos_emb_head_dim == 0 && m.position_embedding == PositionEmbedding::Rope)
    throw UserError(flag("qk_pos_emb_head_dim") + " = 0 with --multi-latent-attention and --position-embedding-type "
                    "rope: MLA carries positions only in the decoupled RoPE channels (the compressed keys cannot be "
                    "rotated); give a positive even size or --position-embedding-type none");
  const std::string h = std::to_string(m.hidden_size);
  if (m.q_lora_rank > m.hidden_size)
    throw UserError(flag("q_lora_rank") + " = " + std::to_string(m.q_lora_rank) + " exceeds --hidden-size = " + h +
                    ": the query latent compresses the hidden state, so its rank cannot exceed it (0: no query "
                    "compression)");
  if (m.kv_lora_rank > m.hidden_size)
    throw UserError(flag("kv_lora_rank") + " = " + std::to_string(m.kv_lora_rank) + " exceeds --hidden-size = " + h +
                    ": the key/value latent compresses the hidden state, so its rank cannot exceed it");
}

// Group-limited routing, as Megatron-Core's TransformerConfig validates it (groups divide the
// experts, group_topk <= groups, groups given when group_topk is) plus what its
// group_limited_topk needs to return topk experts: topk <= group_topk x experts per group.
void resolve_router_groups(const ModelConfig& m, std::vector<std::string>& notes) {
  const int64_t groups = m.moe_router_num_groups, group_topk = m.moe_router_group_topk;
  if (groups == 0 && group_topk == 0) return;
  const std::string g = std::to_string(groups), gk = std::to_string(group_topk);
  if (!m.is_moe())
    throw UserError(flag(groups ? "moe_router_num_groups" : "moe_router_group_topk") + " = " + (groups ? g : gk) +
                    " needs an MoE model (--num-experts is 0)");
  if (groups == 0)
    throw UserError("--moe-router-group-topk = " + gk + " needs --moe-router-num-groups (group-limited routing "
                    "picks the best groups of experts first)");
  require_divides("moe_router_num_groups", groups, "num_experts", m.num_experts);
  if (group_topk == 0) {
    notes.push_back("--moe-router-num-groups " + g + " without --moe-router-group-topk: routing is not group-limited "
                    "(as in Megatron)");
    return;
  }
  if (group_topk > groups)
    throw UserError("--moe-router-group-topk = " + gk + " exceeds --moe-router-num-groups = " + g);
  const int64_t reachable = group_topk * (m.num_experts / groups);
  if (m.moe_router_topk > reachable)
    throw UserError("--moe-router-topk = " + std::to_string(m.moe_router_topk) + " cannot be reached: " +
                    "--moe-router-group-topk = " + gk + " groups of " + std::to_string(m.num_experts / groups) +
                    " experts (--num-experts " + std::to_string(m.num_experts) + " / --moe-router-num-groups " + g +
                    ") hold only " + std::to_string(reachable));
}

// DeepSeek-V3's router options (Megatron-Core's TransformerConfig): the expert bias of
// aux-loss-free balancing is defined for sigmoid scores only.
void resolve_router_scores(const ModelConfig& m) {
  if (m.moe_router_enable_expert_bias && m.moe_router_score_function != RouterScore::Sigmoid)
    throw UserError("--moe-router-enable-expert-bias needs --moe-router-score-function sigmoid (got " +
                    to_string(m.moe_router_score_function) + "), as in Megatron-Core");
  if (!m.is_moe() && (m.moe_router_enable_expert_bias || m.moe_router_score_function != RouterScore::Softmax))
    throw UserError(std::string(m.moe_router_enable_expert_bias ? "--moe-router-enable-expert-bias"
                                                                : "--moe-router-score-function sigmoid") +
                    " needs an MoE model (--num-experts is 0)");
}

// Multi-token prediction (DeepSeek-V3 §2.2): D modules on the last pipeline stage, module k
// predicting the token k + 1 places ahead. Megatron requires RoPE or no position embedding.
void resolve_mtp(const ModelConfig& m) {
  if (m.mtp_num_layers == 0) return;
  const std::string d = std::to_string(m.mtp_num_layers);
  if (m.position_embedding == PositionEmbedding::LearnedAbsolute)
    throw UserError("--mtp-num-layers = " + d + " needs --position-embedding-type rope or none (got learned_absolute; "
                    "as in Megatron)");
  if (m.mtp_num_layers >= m.seq_length)
    throw UserError("--mtp-num-layers = " + d + " must be smaller than --seq-length = " + std::to_string(m.seq_length) +
                    ": the module of depth k predicts the token k + 1 places ahead");
}

// Where group-limited routing's groups sit on the nodes of an expert-parallel group (DeepSeek-V3's
// node-limited routing: 8 groups = 8 nodes, each token to at most 4). Not an error either way:
// Megatron does not relate groups to nodes, and DeepSeek-V2 used one group per device.
void note_router_groups_on_nodes(Job& job) {
  const ModelConfig& m = job.model;
  if (m.moe_router_group_topk == 0 || job.cluster.gpus_per_node <= 0) return;
  std::vector<int64_t> nodes;
  for (int64_t r : ParallelGrid::from_job(job).group_at(ParallelGroup::Ep, 0))
    if (std::find(nodes.begin(), nodes.end(), r / job.cluster.gpus_per_node) == nodes.end())
      nodes.push_back(r / job.cluster.gpus_per_node);
  const int64_t n = static_cast<int64_t>(nodes.size()), groups = m.moe_router_num_groups;
  if (n <= 1 || m.moe_router_group_topk >= groups) return;
  const std::string head = "--moe-router-num-groups " + std::to_string(groups) + " over the " + std::to_string(n) +
                           " nodes of an expert-parallel group: ";
  const std::string sim = " (the simulated routing does not apply the group limit)";
  if (groups % n == 0)
    job.notes.push_back(head + "each group lies within one node, so a token reaches at most " +
                        std::to_string(std::min(m.moe_router_group_topk, n)) + " nodes" + sim);
  else
    job.notes.push_back(head + "groups straddle nodes, so --moe-router-group-topk does not bound the nodes a token "
                        "reaches" + sim);
}

// Megatron's account_for_embedding/loss_in_pipeline_split: (layers + embedding + loss) over PP x VP.
void resolve_accounted_split(const ModelConfig& m, ParallelConfig& p) {
  if (p.decoder_first_pipeline_num_layers || p.decoder_last_pipeline_num_layers)
    throw UserError("--account-for-embedding/loss-in-pipeline-split cannot be combined with "
                    "--decoder-first/last-pipeline-num-layers");
  if (p.num_layers_per_virtual_pipeline_stage > 0)
    throw UserError("--account-for-embedding/loss-in-pipeline-split: give the chunks with "
                    "--num-virtual-stages-per-pipeline-rank, not --num-layers-per-virtual-pipeline-stage");
  const int64_t v = std::max<int64_t>(1, p.virtual_pipeline_model_parallel_size);
  if (v > 1 && p.pipeline_model_parallel_size == 1)
    throw UserError("--num-virtual-stages-per-pipeline-rank needs --pipeline-model-parallel-size > 1");
  accounted_split_layers(static_cast<int>(m.num_layers), static_cast<int>(p.pipeline_model_parallel_size * v),
                         p.account_for_embedding_in_pipeline_split, p.account_for_loss_in_pipeline_split);
}

void resolve_layer_split(const ModelConfig& m, ParallelConfig& p) {
  const int64_t pp = p.pipeline_model_parallel_size;
  const int64_t first = p.decoder_first_pipeline_num_layers, last = p.decoder_last_pipeline_num_layers;
  if (pp == 1 && (first || last)) throw UserError("--decoder-first/last-pipeline-num-layers need --pipeline-model-parallel-size > 1");
  int64_t middle_stages = pp - (first ? 1 : 0) - (last ? 1 : 0);
  int64_t middle_layers = m.num_layers - first - last;
  if (middle_layers < 0 || (middle_stages == 0 && middle_layers != 0) ||
      (middle_stages > 0 && middle_layers % middle_stages != 0))
    throw UserError("--num-layers = " + std::to_string(m.num_layers) + " cannot be split over --pipeline-model-parallel-size = " +
                    std::to_string(pp) +
                    (first ? " with --decoder-first-pipeline-num-layers = " + std::to_string(first) : "") +
                    (last ? " with --decoder-last-pipeline-num-layers = " + std::to_string(last) : "") +
                    " (the layers of the even stages must divide evenly" +
                    (m.mtp_num_layers > 0 ? "; the --mtp-num-layers module is not one of --num-layers: it sits on the "
                                            "last stage beside that stage's decoder layers)" : ")"));
  const int64_t per_stage = middle_stages > 0 ? middle_layers / middle_stages : 0;
  if (p.num_layers_per_virtual_pipeline_stage > 0) {
    if (first || last) throw UserError("--num-layers-per-virtual-pipeline-stage cannot be combined with uneven first/last stages; use --num-virtual-stages-per-pipeline-rank");
    if (pp == 1) throw UserError("--num-layers-per-virtual-pipeline-stage needs --pipeline-model-parallel-size > 1");
    require_divides("num_layers_per_virtual_pipeline_stage", p.num_layers_per_virtual_pipeline_stage,
                    "num_layers (per pipeline stage)", per_stage);
    const int64_t v = per_stage / p.num_layers_per_virtual_pipeline_stage;
    if (p.virtual_pipeline_model_parallel_size > 1 && p.virtual_pipeline_model_parallel_size != v)
      throw UserError("--num-virtual-stages-per-pipeline-rank = " + std::to_string(p.virtual_pipeline_model_parallel_size) +
                      " disagrees with --num-layers-per-virtual-pipeline-stage (gives " + std::to_string(v) + ")");
    p.virtual_pipeline_model_parallel_size = v;
  } else if (p.virtual_pipeline_model_parallel_size > 1) {
    if (pp == 1) throw UserError("--num-virtual-stages-per-pipeline-rank needs --pipeline-model-parallel-size > 1");
    if (!first && !last) require_divides("virtual_pipeline_model_parallel_size", p.virtual_pipeline_model_parallel_size,
                                         "num_layers (per pipeline stage)", per_stage);
    p.num_layers_per_virtual_pipeline_stage = per_stage / p.virtual_pipeline_model_parallel_size;
  }
}

void finish_pipeline(ParallelConfig& p, std::vector<std::string>& notes) {
  if (p.pipeline_schedule.empty()) p.pipeline_schedule = p.virtual_pipeline_model_parallel_size > 1 ? "interleaved" : "1f1b";
  if (p.sequence_parallel && p.tensor_model_parallel_size == 1) {
    p.sequence_parallel = false;
    notes.push_back("--sequence-parallel has no effect with --tensor-model-parallel-size 1 (disabled, as Megatron does)");
  }
  if (p.tp_comm_overlap && p.tensor_model_parallel_size == 1) {
    p.tp_comm_overlap = false;
    notes.push_back("--tp-comm-overlap has no effect with --tensor-model-parallel-size 1 (no TP communication)");
  }
  if (p.tp_comm_overlap && !p.sequence_parallel)
    throw UserError("--tp-comm-overlap with --tensor-model-parallel-size = " + std::to_string(p.tensor_model_parallel_size) +
                    " requires --sequence-parallel (as in Megatron: the overlap pipelines the sequence-parallel "
                    "all-gather and reduce-scatter with their GEMMs)");
}

void resolve_pipeline(const ModelConfig& m, ParallelConfig& p, std::vector<std::string>& notes) {
  if (p.account_for_embedding_in_pipeline_split || p.account_for_loss_in_pipeline_split) {
    resolve_accounted_split(m, p);
  } else {
    resolve_layer_split(m, p);
  }
  finish_pipeline(p, notes);
}

void resolve_world(Job& job) {
  auto& p = job.parallel;
  const int64_t model_parallel = p.tensor_model_parallel_size * p.pipeline_model_parallel_size * p.context_parallel_size;
  if (model_parallel > (int64_t{1} << 24))
    throw UserError("TP x PP x CP = " + std::to_string(model_parallel) + " exceeds 16,777,216 GPUs");
  if (job.world_size == 0) job.world_size = model_parallel;
  if (job.world_size % model_parallel != 0)
    throw UserError("--gpus = " + std::to_string(job.world_size) + " is not divisible by TP x PP x CP = " +
                    std::to_string(p.tensor_model_parallel_size) + " x " + std::to_string(p.pipeline_model_parallel_size) +
                    " x " + std::to_string(p.context_parallel_size) + " = " + std::to_string(model_parallel));
  p.data_parallel_size = job.world_size / model_parallel;
  if (p.expert_tensor_parallel_size == 0) p.expert_tensor_parallel_size = p.tensor_model_parallel_size;
  const int64_t expert_mp = p.expert_tensor_parallel_size * p.expert_model_parallel_size * p.pipeline_model_parallel_size;
  if (job.world_size % expert_mp != 0)
    throw UserError("--gpus = " + std::to_string(job.world_size) + " is not divisible by ETP x EP x PP = " +
                    std::to_string(expert_mp) + " (expert layers)");
  // Beyond the cluster's size: a what-if on the same fabric extended by its own rules (the platform
  // adds leaves of nodes_per_leaf nodes and pods of nodes_per_pod nodes as the GPU count needs).
  if (job.cluster.max_gpus > 0 && job.world_size > job.cluster.max_gpus)
    job.notes.push_back("--gpus " + std::to_string(job.world_size) + " exceeds the " +
                        std::to_string(job.cluster.max_gpus) + " GPUs of cluster " + job.cluster.name +
                        ": its fabric is extended by its own rules (more leaves and pods of the same size and "
                        "oversubscription), a what-if beyond the cluster as built");
  if (job.model.is_moe() && p.tensor_model_parallel_size > 1 && p.expert_model_parallel_size > 1 && !p.sequence_parallel)
    throw UserError("--expert-model-parallel-size = " + std::to_string(p.expert_model_parallel_size) +
                    " with --tensor-model-parallel-size = " + std::to_string(p.tensor_model_parallel_size) +
                    " requires --sequence-parallel (as in Megatron)");
  if (p.overlap_param_gather && !p.use_distributed_optimizer)
    throw UserError("--overlap-param-gather requires --use-distributed-optimizer");
}

void resolve_batch(Job& job) {
  auto& t = job.training;
  const int64_t dp = job.parallel.data_parallel_size;
  if (t.global_batch_size == 0) t.global_batch_size = t.micro_batch_size * dp;
  if (t.global_batch_size % (t.micro_batch_size * dp) != 0)
    throw UserError("--global-batch-size = " + std::to_string(t.global_batch_size) +
                    " is not divisible by --micro-batch-size x data-parallel size = " + std::to_string(t.micro_batch_size) +
                    " x " + std::to_string(dp));
  t.num_microbatches = t.global_batch_size / (t.micro_batch_size * dp);
  const double tokens = double(job.model.seq_length) * double(t.micro_batch_size) * double(job.model.hidden_size);
  if (tokens > 9.0e15)
    throw UserError("--seq-length x --micro-batch-size x --hidden-size = " + std::to_string(tokens) +
                    " is too large to account for exactly (activation tensor beyond 2^53 elements)");
}

void resolve_optimizer(Job& job) {
  auto& t = job.training;
  if (t.train_samples > 0) {
    if (t.train_iters > 0) throw UserError("--train-iters and --train-samples are mutually exclusive");
    t.train_iters = (t.train_samples + t.global_batch_size - 1) / t.global_batch_size;
  }
  if (t.lr_decay_iters == 0) t.lr_decay_iters = t.train_iters;
  if (t.lr_warmup_fraction > 0) {
    if (t.lr_warmup_iters > 0) throw UserError("--lr-warmup-iters and --lr-warmup-fraction are mutually exclusive");
    t.lr_warmup_iters = static_cast<int64_t>(t.lr_warmup_fraction * double(t.lr_decay_iters));
  }
  if (t.min_lr > t.lr && t.lr > 0)
    throw UserError("--min-lr = " + std::to_string(t.min_lr) + " exceeds --lr = " + std::to_string(t.lr));
  if (t.recompute_granularity == RecomputeGranularity::Full && t.recompute_num_layers == 0) {
    t.recompute_num_layers = 1;
    job.notes.push_back("--recompute-granularity full without --recompute-num-layers: recomputing every layer (uniform, 1)");
  }
  if (t.fp8_format != Fp8Format::None && t.params_dtype == DType::FP32)
    throw UserError("--fp8-format = " + to_string(t.fp8_format) + " needs --bf16 or --fp16");
  if (t.grad_reduce_in_bf16 && t.params_dtype != DType::BF16)
    throw UserError("--grad-reduce-in-bf16 needs --bf16 (params_dtype = " + to_string(t.params_dtype) + ")");
}

// The simulator's MoE routing model (training section): consistent choices; the trace file's
// contents are checked where it is read (backends/sim/moe_routing.cpp).
void resolve_routing(const Job& job) {
  const TrainingConfig& t = job.training;
  const std::string routing = to_string(t.moe_routing);
  if (t.moe_routing != MoeRouting::Balanced && !job.model.is_moe())
    throw UserError("--moe-routing = " + routing + " needs an MoE model (--num-experts is 0)");
  if (t.moe_routing == MoeRouting::Trace && t.moe_routing_trace.empty())
    throw UserError("--moe-routing = trace needs --moe-routing-trace FILE (written by tandem train --record-routing)");
  if (t.moe_routing != MoeRouting::Trace && !t.moe_routing_trace.empty())
    throw UserError("--moe-routing-trace = " + t.moe_routing_trace + " needs --moe-routing trace (got " + routing + ")");
}

}  // namespace

bool ModelConfig::layer_is_moe(int64_t layer) const {
  if (!is_moe()) return false;
  if (moe_layer_pattern.empty()) return true;
  TANDEM_CHECK(layer >= 0 && layer < static_cast<int64_t>(moe_layer_pattern.size()));
  return moe_layer_pattern[static_cast<size_t>(layer)] != 0;
}

// Megatron-Core's --recompute-modules: [core_attn] by default with selective granularity; ignored
// (a note) with the other granularities; mla_up_proj needs multi-latent attention.
void resolve_recompute_modules(Job& job) {
  auto& t = job.training;
  if (t.recompute_granularity != RecomputeGranularity::Selective) {
    if (!t.recompute_modules.empty())
      job.notes.push_back("--recompute-modules has effect only with --recompute-granularity selective (ignored, as "
                          "in Megatron-Core)");
    t.recompute_modules.clear();
    return;
  }
  if (t.recompute_modules.empty()) t.recompute_modules = {RecomputeModule::CoreAttn};
  if (t.recomputes(RecomputeModule::MlaUpProj) && !job.model.multi_latent_attention)
    throw UserError("--recompute-modules mla_up_proj is only supported with --multi-latent-attention (as in Megatron-Core)");
}

void resolve_job(Job& job) {
  if (job.world_size < 0) throw_field_error("--gpus", job.world_size, "must be positive");
  resolve_attention(job.model, job.parallel, job.notes);
  resolve_mlp_and_vocab(job.model, job.parallel, job.notes);
  resolve_moe(job.model, job.parallel);
  resolve_mla(job.model);
  resolve_router_groups(job.model, job.notes);
  resolve_router_scores(job.model);
  resolve_mtp(job.model);
  resolve_pipeline(job.model, job.parallel, job.notes);
  resolve_world(job);
  if (job.parallel.overlap_moe_expert_parallel_comm) check_ep_overlap(job);
  note_router_groups_on_nodes(job);
  resolve_batch(job);
  resolve_optimizer(job);
  resolve_recompute_modules(job);
  resolve_routing(job);
}

}  // namespace tandem
