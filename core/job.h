#pragma once
// The Job: one training run = model + parallel layout + training settings + cluster.
// Field names follow Megatron-LM's argument names (`--num-layers` <-> `num_layers`), so JSON
// files, presets and command lines speak the same vocabulary. Values that Megatron derives
// (ffn size, kv channels, padded vocabulary, data-parallel size, microbatches...) are filled by
// resolve_job() in job_resolve.cpp; before that they hold 0 / "unset".
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/stragglers.h"

namespace tandem {

enum class Normalization { LayerNorm, RMSNorm };
enum class PositionEmbedding { LearnedAbsolute, Rope, None };
enum class DType { FP32, FP16, BF16 };
enum class Fp8Format { None, E4M3, Hybrid };
enum class RecomputeGranularity { None, Selective, Full };
enum class RecomputeMethod { Uniform, Block };
// Megatron-Core's --recompute-modules (selective granularity): the parts of a layer whose forward
// is replayed in the backward instead of keeping what they saved. core_attn, mlp, moe and
// shared_experts checkpoint the module (keep its input); moe_act, layernorm and mla_up_proj
// discard their outputs.
enum class RecomputeModule { CoreAttn, MoeAct, Layernorm, MlaUpProj, Mlp, Moe, SharedExperts };
enum class LrDecayStyle { Constant, Linear, Cosine, InverseSquareRoot, WSD };
enum class TokenDispatcher { AllGather, AllToAll, Alltoall_Seq, Flex };
// Megatron's --moe-router-score-function: softmax (Mixtral, Switch) or sigmoid (DeepSeek-V3).
enum class RouterScore { Softmax, Sigmoid };
// Megatron's --attention-backend. auto/flash/fused never materialise the s x s score matrix.
enum class AttentionBackend { Auto, Flash, Fused, Unfused, Local };
// tandem: how the simulator draws MoE token-to-expert loads (backends/sim/moe_routing.h).
enum class MoeRouting { Balanced, Zipf, Trace };
// tandem: which parallel dimension crosses datacenters (backends/sim/dc_placement.h). RankOrder:
// ranks fill the datacenters' GPUs in rank order (Megatron's order decides); Pipeline, Data,
// Expert: the PP, DP or EP coordinate decides a rank's datacenter (D must divide that size).
enum class DcPlacement { RankOrder, Pipeline, Data, Expert };

// Transformer architecture. Sizes are element counts; 0 means "derive Megatron's default".
struct ModelConfig {
  std::string name = "custom";
  int64_t num_layers = 0;
  int64_t hidden_size = 0;                // h
  int64_t ffn_hidden_size = 0;            // default 4h, or Megatron's SwiGLU 8h/3 rounded to 64
  int64_t num_attention_heads = 0;        // a
  bool group_query_attention = false;
  int64_t num_query_groups = 0;           // g (= a without GQA)
  int64_t kv_channels = 0;                // head dim, default h/a
  int64_t seq_length = 0;                 // s
  int64_t max_position_embeddings = 0;    // default s
  int64_t vocab_size = 0;                 // V before padding (tokenizer size)
  int64_t make_vocab_size_divisible_by = 128;
  int64_t padded_vocab_size = 0;          // derived: multiple of divisible_by * TP
  bool swiglu = false;
  Normalization normalization = Normalization::LayerNorm;
  PositionEmbedding position_embedding = PositionEmbedding::LearnedAbsolute;
  bool untie_embeddings_and_output_weights = false;
  bool add_bias_linear = true;            // --disable-bias-linear clears it
  bool add_qkv_bias = false;              // --add-qkv-bias (Qwen-style), only when bias is off

  // Multi-latent attention (DeepSeek-V2/V3). Off unless --multi-latent-attention.
  bool multi_latent_attention = false;
  int64_t q_lora_rank = 0;                // 0: no query compression
  int64_t kv_lora_rank = 512;
  int64_t qk_head_dim = 128;
  int64_t qk_pos_emb_head_dim = 64;
  int64_t v_head_dim = 128;

  // Mixture of experts. num_experts == 0 means dense.
  int64_t num_experts = 0;
  int64_t moe_router_topk = 2;
  int64_t moe_ffn_hidden_size = 0;                      // default ffn_hidden_size
  int64_t moe_shared_expert_intermediate_size = 0;      // 0: no shared expert
  std::vector<int> moe_layer_pattern;                   // per layer 1 = MoE, 0 = dense; empty = all MoE
  double moe_expert_capacity_factor = 0.0;              // 0: dropless
  TokenDispatcher moe_token_dispatcher_type = TokenDispatcher::AllGather;
  double moe_aux_loss_coeff = 0.0;
  // Group-limited routing (DeepSeek-V2's device-limited, V3's node-limited routing): the experts
  // form moe_router_num_groups equal groups of consecutive experts; a token picks its
  // moe_router_group_topk best groups, then its top-k experts inside them. 0: not grouped.
  int64_t moe_router_num_groups = 0;
  int64_t moe_router_group_topk = 0;
  // DeepSeek-V3's router (Megatron-Core TopKRouter): sigmoid scores normalised over the chosen
  // experts; an expert bias added to the scores for choosing only (aux-loss-free balancing), moved
  // after every step by rate x sign(mean load - load); the routing weights scaled by a factor.
  RouterScore moe_router_score_function = RouterScore::Softmax;
  bool moe_router_enable_expert_bias = false;
  double moe_router_bias_update_rate = 1e-3;
  double moe_router_topk_scaling_factor = 0.0;          // 0: no scaling
  int64_t mtp_num_layers = 0;                           // DeepSeek-V3 multi-token prediction
  double mtp_loss_scaling_factor = 0.1;                 // weight of the MTP losses (split over the depths)
  double rotary_base = 10000.0;
  double norm_epsilon = 1e-5;

  bool is_moe() const { return num_experts > 0; }
  // True when layer `layer` (0-based) has an MoE MLP.
  bool layer_is_moe(int64_t layer) const;
};

// How the ranks are laid out. Sizes are group sizes; data_parallel_size is derived.
struct ParallelConfig {
  int64_t tensor_model_parallel_size = 1;     // TP
  int64_t pipeline_model_parallel_size = 1;   // PP
  int64_t context_parallel_size = 1;          // CP
  int64_t expert_model_parallel_size = 1;     // EP
  int64_t expert_tensor_parallel_size = 0;    // ETP, default TP
  int64_t data_parallel_size = 0;             // derived: world / (TP*PP*CP)
  int64_t virtual_pipeline_model_parallel_size = 1;   // chunks per pipeline rank
  int64_t num_layers_per_virtual_pipeline_stage = 0;  // Megatron's spelling of the same thing
  int64_t decoder_first_pipeline_num_layers = 0;      // 0: even split
  int64_t decoder_last_pipeline_num_layers = 0;
  // Megatron's --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split:
  // the embedding (the loss) counts as one layer of the first (last) virtual stage, so
  // (num_layers + those) split evenly over PP x VP virtual stages and the first (last) holds one
  // decoder layer fewer. Not with decoder_first/last_pipeline_num_layers.
  bool account_for_embedding_in_pipeline_split = false;
  bool account_for_loss_in_pipeline_split = false;
  bool sequence_parallel = false;
  bool use_distributed_optimizer = false;
  bool overlap_grad_reduce = false;
  bool overlap_param_gather = false;
  bool tp_comm_overlap = false;
  // Megatron's asynchronous TP communication of the input gradient in backward: the all-reduce
  // (reduce-scatter with SP) of a linear layer's dX runs while its weight-gradient GEMM computes.
  // `--no-async-tensor-model-parallel-allreduce` (and the 2021 code, which predates it) runs it
  // after the weight gradient instead.
  bool async_tensor_model_parallel_allreduce = true;
  // Pipeline sends/receives overlapped with compute (`--overlap-p2p-communication`); off, a
  // stage's next compute waits for its send to complete, as Megatron's blocking
  // send_forward_recv_backward and friends do.
  bool overlap_p2p_communication = false;
  // Megatron-Core's --overlap-moe-expert-parallel-comm (0.14): in the steady state of the schedule
  // the forward of one microbatch and the backward of another run as one overlapped unit, so one's
  // expert-parallel all-to-all hides behind the other's compute (as DualPipe's F&B pairs).
  bool overlap_moe_expert_parallel_comm = false;
  std::string order = "tp-cp-ep-dp-pp";       // Megatron's rank order, fastest-varying first
  std::string pipeline_schedule = "";         // "" = Megatron's choice (1f1b or interleaved)
  DcPlacement dc_placement = DcPlacement::RankOrder;  // tandem: rank -> GPU across datacenters
};

// Optimisation, precision, recompute, data and checkpoint settings.
struct TrainingConfig {
  int64_t micro_batch_size = 1;
  int64_t global_batch_size = 0;              // default micro * DP
  int64_t num_microbatches = 0;               // derived: global / (micro * DP)
  int64_t train_iters = 0;
  DType params_dtype = DType::FP32;           // --bf16 / --fp16 switch to mixed precision
  Fp8Format fp8_format = Fp8Format::None;
  // Megatron's --grad-reduce-in-bf16: with bf16 training the gradient buffer (main_grad) and its
  // data-parallel reduction are bf16 instead of fp32 (NVIDIA's H100 performance recipes set it:
  // grad_reduce_in_fp32 = False, NeMo's grad_sync_dtype = bf16).
  bool grad_reduce_in_bf16 = false;
  AttentionBackend attention_backend = AttentionBackend::Auto;  // Megatron-Core default (TE picks flash/fused)
  double attention_dropout = 0.1;             // Megatron's defaults; dropout masks are saved activations
  double hidden_dropout = 0.1;
  RecomputeGranularity recompute_granularity = RecomputeGranularity::None;
  RecomputeMethod recompute_method = RecomputeMethod::Uniform;
  int64_t recompute_num_layers = 0;
  // With selective granularity: resolved to {CoreAttn} when not given (Megatron-Core's default);
  // empty for the other granularities.
  std::vector<RecomputeModule> recompute_modules;
  bool recomputes(RecomputeModule m) const {
    return recompute_granularity == RecomputeGranularity::Selective &&
           std::find(recompute_modules.begin(), recompute_modules.end(), m) != recompute_modules.end();
  }
  double lr = 0.0;
  double min_lr = 0.0;
  LrDecayStyle lr_decay_style = LrDecayStyle::Linear;
  int64_t lr_warmup_iters = 0;
  double lr_warmup_fraction = 0.0;            // alternative to lr_warmup_iters
  int64_t train_samples = 0;                  // alternative to train_iters (sequences)
  int64_t lr_decay_iters = 0;                 // default train_iters
  double weight_decay = 0.01;
  double clip_grad = 1.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  int64_t seed = 1234;
  double init_method_std = 0.02;
  bool mock_data = false;
  std::string data_path;
  std::string split = "969,30,1";
  std::string save;
  std::string load;
  int64_t save_interval = 0;
  int64_t log_interval = 100;
  int64_t eval_interval = 1000;
  int64_t eval_iters = 100;
  // Megatron's TensorBoard logging (`tandem train`; rank 0 writes events.out.tfevents.* files).
  std::string tensorboard_dir;                // empty: no TensorBoard events
  int64_t tensorboard_log_interval = 1;       // iterations between training scalars
  bool log_timers_to_tensorboard = false;     // "iteration-time" (s, mean over --log-interval) and "throughput"
  bool log_validation_ppl_to_tensorboard = false;   // "lm loss validation ppl" = exp(min(20, loss))
  bool log_memory_to_tensorboard = false;     // "mem-allocated-bytes", "mem-max-allocated-bytes" of rank 0
  // tandem (simulator): the MoE routing model. Balanced: every expert gets tokens x topk / E
  // copies (the lowering's expected sizes). Zipf: expert popularity proportional to 1 / rank^s
  // over a seeded per-layer permutation of the experts, loads drawn per (layer, microbatch).
  // Trace: loads recorded from a real run (`tandem train --record-routing FILE`).
  MoeRouting moe_routing = MoeRouting::Balanced;
  double moe_routing_zipf_s = 1.0;            // skew exponent s > 0
  std::string moe_routing_trace;              // trace file (JSON, format in moe_routing.h)
  int64_t moe_routing_seed = 0;               // seeds the zipf permutation and draws
};

// One GPU kind. Units: FLOP/s, bytes, bytes/s.
struct GpuSpec {
  std::string name;
  double peak_flops_fp32 = 0;      // dense FP32 (non-tensor-core) FLOP/s
  double peak_flops_tf32 = 0;
  double peak_flops_bf16 = 0;      // dense BF16/FP16 tensor-core FLOP/s
  double peak_flops_fp8 = 0;       // dense FP8, 0 if unsupported
  double hbm_bytes = 0;
  double hbm_bandwidth = 0;        // bytes/s
  int64_t sm_count = 0;
};

// One cluster kind: identical nodes of GPUs joined by a fabric, optionally several datacenters.
struct ClusterSpec {
  std::string name;
  std::string source;              // where the numbers come from
  GpuSpec gpu;
  int64_t gpus_per_node = 8;
  double nvlink_bandwidth = 0;     // bytes/s per GPU per direction into the NVSwitch
  double nvlink_latency = 0;       // s
  double nic_bandwidth = 0;        // bytes/s per NIC per direction
  int64_t nics_per_node = 8;
  double nic_latency = 0;          // s, NIC to NIC through one switch
  std::string topology = "fat-tree";
  int64_t nodes_per_leaf = 16;     // leaf switch radix in nodes (rail-optimised leaves)
  double oversubscription = 1.0;   // leaf uplink : downlink ratio, 1 = full bisection
  int64_t nodes_per_pod = 0;       // 0: one pod
  int64_t datacenters = 1;
  double wan_bandwidth = 0;        // bytes/s between datacenters
  double wan_latency = 0;          // s
  int64_t max_gpus = 0;            // GPUs as built (0: unbounded); more is a what-if on the extended fabric, noted
  std::string stack;               // default software stack (clusters/stacks/NAME.json); "" = the GPU's
  // Degraded parts (core/stragglers.h): from the cluster file's "stragglers", a job file's
  // top-level "stragglers" and --straggler options, in that order.
  std::vector<Straggler> stragglers;
};

struct Job {
  ModelConfig model;
  ParallelConfig parallel;
  TrainingConfig training;
  ClusterSpec cluster;
  std::string stack;                          // software stack name or file; "" = the cluster's default
  int64_t world_size = 0;                     // GPUs (ranks); default TP*PP*CP
  std::vector<std::string> ignored_flags;     // accepted, not modelled (reported)
  std::vector<std::string> notes;             // derivations worth telling the user
};

std::string to_string(Normalization v);
std::string to_string(PositionEmbedding v);
std::string to_string(DType v);
std::string to_string(Fp8Format v);
std::string to_string(RecomputeGranularity v);
std::string to_string(RecomputeMethod v);
std::string to_string(RecomputeModule v);
// Megatron-Core's module names ("core_attn", ...); UserError naming `field` for an unknown one.
RecomputeModule parse_recompute_module(const std::string& field, const std::string& name);
std::string to_string(LrDecayStyle v);
std::string to_string(TokenDispatcher v);
std::string to_string(RouterScore v);
std::string to_string(AttentionBackend v);
std::string to_string(MoeRouting v);
std::string to_string(DcPlacement v);
// True when attention never stores the s x s probabilities (flash / fused kernels).
bool uses_flash_attention(AttentionBackend v);

// Bytes per element of the parameters/activations in the job's training precision.
int64_t bytes_per_element(DType d);

}  // namespace tandem
