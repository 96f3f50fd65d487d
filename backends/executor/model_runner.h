#pragma once
// ModelRunner: what every instruction of a lowered GPT/LLaMA/MoE program means for real tensors.
//
// The program names its work by (kind, site, layer, microbatch, chunk, step); buffers are per
// layer group. The runner keeps the real per-tensor state keyed the same way — saved
// activations per (layer, microbatch), the residual stream and its gradient per (chunk,
// microbatch), parameters and gradients in the ParamStore — and for each instruction issues
// exactly the device / communicator calls that instruction stands for. The data flow of one
// decoder layer (slots of the activation store, [rows, cols], r = TP with SP else 1):
//
//   x [n/r,h] -input-norm-> ln1 -(qkv-ag)-> ln1_full [n,h] -qkv-> qkv [n,(hq+2hkv)d] -rope-> q,k,v
//   -attn-> ctx [n,hq d] (+lse) -proj-> proj [n,h] -(proj-ar | proj-rs)-> -attn-residual-> h1
//   h1 -pre-mlp-norm-> ln2 -(fc1-ag)-> mlp.in_full -fc1-> mlp.fc1 -act-> mlp.act -fc2-> mlp.out
//   -(fc2-ar | fc2-rs)-> -mlp-residual-> hidden (the next layer's x)
//
// and the backward mirrors it through g_mlp / g_attn (block output gradients), mlp.d_act,
// mlp.d_fc1, d_mlp_in, d_norm, d_ctx, dq/dk/dv, d_qkv, d_ln1. Weight-gradient inputs live in
// slots nothing overwrites before the layer's buffers are freed, so deferred weight gradients
// (zero-bubble schedules) read what the input-gradient pass left.
//
// Dropout (embedding, residual branches, attention probabilities) uses deterministic masks
// hashed from global indices, so every layout draws the same. Evaluation runs without dropout.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backends/executor/communicator.h"
#include "backends/executor/device.h"
#include "backends/executor/param_store.h"
#include "backends/executor/program_executor.h"
#include "backends/executor/site_handlers.h"

namespace tandem::exec {

// Data of one microbatch on this rank (tokens of its DP replica, its CP sequence chunks).
struct MicrobatchData {
  std::vector<int32_t> tokens;      // [n] rows sequence-first: row = local position * b + sample
  std::vector<int32_t> labels;      // [n] next tokens
  std::vector<int32_t> positions;   // [s / CP] global positions of the local sequence rows
  std::vector<int64_t> samples;     // [b] global sample index of each micro-batch element
};

struct RunnerSettings {
  NormKind norm = NormKind::RMSNorm;
  float norm_eps = 1e-5f;
  ActivationKind activation = ActivationKind::SwiGlu;
  double rope_base = 10000.0;
  double loss_grad = 1.0;           // d(reported loss) / d(one token's loss): 1 / global tokens
  double aux_grad = 1.0;            // d(total loss) / d(one microbatch's aux loss): 1 / (M x DP)
  double hidden_dropout = 0.0;      // embedding and residual-branch dropout (masks: see dropout())
  double attention_dropout = 0.0;   // dropout of the attention probabilities (masks: see attention_args())
  int64_t seed = 1234;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, weight_decay = 0.0, clip_grad = 0.0;
  RouterArgs router;                // expert_bias is left empty here: the runner passes each layer's
  double aux_loss_coeff = 0.0;
  double expert_bias_rate = -1.0;   // aux-loss-free balancing's update rate; < 0: no expert bias
  double mtp_loss_scale = 0.1;      // --mtp-loss-scaling-factor
};

struct IterationTotals {
  double loss_sum = 0;   // token losses summed over this rank's microbatches (TP rank 0 of last stages)
  double tokens = 0;     // tokens in loss_sum
  double aux_loss = 0;   // this rank's share of the MoE aux loss, summed over its layers and microbatches
  double grad_norm = 0;  // global gradient norm before clipping
};

class ModelRunner final : public InstructionHandler {
 public:
  ModelRunner(Device& device, Communicator& comm, ParamStore& params, const Job& job, const ParallelGrid& grid,
              const Schedule& schedule, int64_t rank, RunnerSettings settings);

  // batch[mb] for every microbatch of the iteration; step is the 1-based optimizer step. With
  // update = false (evaluation) the program runs whole but its optimizer step changes nothing.
  void begin_iteration(int64_t step, double lr, std::vector<MicrobatchData> batch, bool update = true);
  IterationTotals end_iteration();

  bool execute(const Instruction& ins, int32_t index) override;
  // When set: called by every forward router (not its recompute) with (layer, microbatch, router
  // tokens, copies routed per expert before capacity), for `tandem train --record-routing`.
  std::function<void(int32_t, int32_t, int64_t, const std::vector<int64_t>&)> on_routing;
  // When set: called by every forward cross-entropy with (microbatch, this rank's logits
  // [n, V / t], rows sequence-first as MicrobatchData::tokens), for the first-step dump.
  std::function<void(int32_t, const DeviceTensor&)> on_logits;
  bool poll(int32_t index) override;
  void on_free(const Buffer& buffer) override;

 private:
  using Fn = void (ModelRunner::*)(const Instruction&);
  static constexpr int32_t kHead = -1, kEmbedding = -2;
  static constexpr int32_t kMtpScope = -50;   // MTP module i: kMtpScope - i (its own head slots)
  static int32_t stream_scope(int chunk) { return -100 - chunk; }

  // ---- activation store
  DeviceTensor& put(int32_t scope, int32_t mb, const std::string& name, DeviceTensor t);
  DeviceTensor& at(int32_t scope, int32_t mb, const std::string& name);
  bool has(int32_t scope, int32_t mb, const std::string& name) const;
  void drop(int32_t scope, int32_t mb);
  // The residual stream of (chunk, microbatch) and its gradient. When a stage's neighbour lives
  // on this rank too (V-shaped schedules), the stream passes between its chunks locally.
  DeviceTensor& hidden(const Instruction& ins);
  DeviceTensor& grad(const Instruction& ins);
  int chunk_of_stage(int stage) const;   // -1 when this rank does not hold it
  const MicrobatchData& data(const Instruction& ins) const;
  DeviceTensor fresh(Shape shape) { return device_.empty(std::move(shape)); }
  // Posts the receive of the instruction being executed; `finish` runs when it has arrived.
  void post_recv(const Instruction& ins, const DeviceTensor& buffer, std::function<void()> finish = {});
  bool moe_layer(int32_t layer) const;
  static bool forward_pass(const Instruction& ins) { return ins.phase == Phase::Forward || ins.recompute; }
  static Fn method_of(Handler handler);   // nullptr for Handler::None

  // ---- runner_layer.cpp: norms, GEMMs, attention (single rank of CP), activations, residuals
  void norm(const Instruction& ins);
  void norm_grad(const Instruction& ins);
  void gemm(const Instruction& ins);
  void gemm_grad_input(const Instruction& ins);
  void gemm_grad_weight(const Instruction& ins);
  void rope(const Instruction& ins);
  void rope_grad(const Instruction& ins);
  void attention(const Instruction& ins);
  void attention_grad(const Instruction& ins);
  void activation(const Instruction& ins);
  void activation_grad(const Instruction& ins);
  void residual(const Instruction& ins);
  void residual_grad(const Instruction& ins);
  void embedding_dropout(const Instruction& ins);
  // Hidden dropout of x [rows, h] in place (rows: this rank's shard of the microbatch's tokens,
  // `sharded` when they are the TP rank's sequence-parallel slice). The keep mask is a hash of
  // (seed, iteration, layer, site, global sample, global position, column): the same on every
  // layout, in the backward and in recompute.
  void dropout(const Instruction& ins, int32_t site, bool sharded, const DeviceTensor& x);
  void split_heads(int32_t layer, int32_t mb);
  // Positions and, when training with attention dropout, its mask key (seed, iteration, layer),
  // global head offset and samples: the mask does not depend on the layout.
  AttentionArgs attention_args(const Instruction& ins, std::span<const int32_t> q_positions,
                               std::span<const int32_t> kv_positions) const;
  // ---- runner_mtp.cpp: multi-token prediction (the module's own ops and its head's scope)
  bool mtp_layer(int32_t layer) const;   // the MTP module's layer (global index >= num_layers)
  int32_t head_scope(const Instruction& ins) const;   // kHead, or the MTP module's scope
  Param& mtp_param(int32_t layer, const std::string& suffix);
  Param* mtp_param_or_null(int32_t layer, const std::string& suffix);
  int64_t mtp_depth(int32_t layer) const;   // 1 for the first module
  std::vector<int32_t> mtp_shifted(const std::vector<int32_t>& ids, int32_t layer) const;
  std::vector<int32_t> head_labels(const Instruction& ins) const;
  std::vector<float> head_loss_grad(const Instruction& ins) const;   // [n] d loss / d token loss
  void mtp_embedding(const Instruction& ins);
  void mtp_embedding_grad(const Instruction& ins);
  void mtp_norm(const Instruction& ins);
  void mtp_norm_grad(const Instruction& ins);
  void mtp_gemm(const Instruction& ins);
  void mtp_gemm_grad_input(const Instruction& ins);
  void mtp_gemm_grad_weight(const Instruction& ins);
  void mtp_stream_input(const Instruction& ins, const DeviceTensor& gathered);
  void mtp_collective(const Instruction& ins);
  void mtp_add(const Instruction& ins);
  // ---- runner_mla.cpp: multi-latent attention (projections, norms, RoPE channels, padded core)
  static bool mla_site(Site site);   // the MLA GEMM / norm sites
  int64_t mla_width() const;         // D = max(dn + dr, dv): head width of the padded core
  int64_t mla_latent_cols() const;   // ql + kl + dr
  DeviceTensor mla_latent_columns(int32_t layer, int32_t mb, int64_t begin, int64_t width);
  void mla_gemm(const Instruction& ins);
  void mla_gemm_grad_input(const Instruction& ins);
  void mla_gemm_grad_weight(const Instruction& ins);
  void mla_norm(const Instruction& ins);
  void mla_norm_grad(const Instruction& ins);
  void mla_rope(const Instruction& ins);
  void mla_rope_grad(const Instruction& ins);
  void mla_positional(int32_t layer, int32_t mb, const Instruction& ins, bool rotate);
  void mla_attention(const Instruction& ins);
  void mla_attention_grad(const Instruction& ins);
  void mla_finish_q_grad(int32_t layer, int32_t mb);
  void mla_add(const Instruction& ins);
  // ---- runner_attention_cp.cpp: ring attention steps over the CP group
  void attention_cp_step(const Instruction& ins);
  void attention_grad_cp_step(const Instruction& ins);
  void cp_send(const Instruction& ins);
  void cp_recv(const Instruction& ins);
  void finish_cp_dkv(int32_t layer, int32_t mb, const DeviceTensor& buf, const Shape& kv_shape, int64_t kv_n);

  // ---- runner_head.cpp: embedding, output layer, cross-entropy
  void embedding(const Instruction& ins);
  void embedding_grad(const Instruction& ins);
  void cross_entropy(const Instruction& ins);
  void loss_reduce(const Instruction& ins);
  void cross_entropy_grad(const Instruction& ins);
  void ce_collective(const Instruction& ins);
  void finish_loss(const Instruction& ins);
  std::vector<int32_t> position_rows(const MicrobatchData& data) const;   // [n] position of each row

  // ---- runner_comm.cpp: TP collectives around layers, pipeline messages
  void tp_collective(const Instruction& ins);
  void pp_send(const Instruction& ins);
  void pp_recv(const Instruction& ins);
  void pp_gather(const Instruction& ins);
  void check_bytes(const Instruction& ins, int64_t elements) const;   // fp32 jobs: bytes = 4 x elements

  // ---- runner_optim.cpp: gradient reductions, grad norm, optimizer, parameter gathers
  void dp_grad(const Instruction& ins);
  void sp_norm_grad(const Instruction& ins);
  void embedding_grad_sync(const Instruction& ins);
  void grad_norm(const Instruction& ins);
  void optimizer_step(const Instruction& ins);
  void param_gather(const Instruction& ins);
  void mirror_send(const Instruction& ins);
  void mirror_recv(const Instruction& ins);
  void mirror_add(const Instruction& ins);
  void local_norms();

  // ---- runner_moe.cpp
  void expert_gemm(const Instruction& ins);
  void expert_gemm_grad_input(const Instruction& ins);
  void expert_gemm_grad_weight(const Instruction& ins);   // experts and the router weight
  void router(const Instruction& ins);
  void router_grad(const Instruction& ins);
  void permute(const Instruction& ins);
  void permute_grad(const Instruction& ins);
  void unpermute(const Instruction& ins);
  void unpermute_grad(const Instruction& ins);
  void moe_collective(const Instruction& ins);
  void moe_add(const Instruction& ins);
  void router_counts(const Instruction& ins);   // aux loss: routing counts summed over TP x CP
  // ---- runner_expert_bias.cpp: aux-loss-free balancing (DeepSeek-V3 §2.1.2)
  void expert_bias_sync(const Instruction& ins);   // tokens-per-expert all-reduce / mirror exchange
  void count_expert_tokens(int32_t layer, const std::vector<int64_t>& tokens_per_expert);
  void update_expert_bias();                       // after the step: bias += rate sign(mean - load)
  std::vector<int32_t> bias_layers(int chunk) const;   // MoE layers of a chunk (-1: all), ascending
 public:
  // The expert bias of every MoE layer held here (empty without --moe-router-enable-expert-bias).
  const std::map<int32_t, std::vector<float>>& expert_bias() const { return expert_bias_; }
  // Restores the biases of the MoE layers held here from `all` (a checkpoint's, every layer).
  void set_expert_bias(const std::map<int32_t, std::vector<float>>& all);

 private:
  void aux_loss(int32_t layer, int32_t mb, std::vector<int64_t> routed, int64_t tokens);
  DeviceTensor to_experts(int32_t layer, int32_t mb, const DeviceTensor& src);
  DeviceTensor from_experts(int32_t layer, int32_t mb, const DeviceTensor& src);
  void allgather_dispatch(const Instruction& ins);   // allgather dispatcher's collectives
  bool alltoall() const { return dims_.dispatcher != TokenDispatcher::AllGather; }
  // Tokens moved between ranks by this layer's dispatcher (else every expert is local).
  bool exchanged() const { return dims_.ep * dims_.etp > 1; }
  void etp_exchange(const Instruction& ins);   // alltoall dispatcher's expert-TP gathers / scatters
  const char* expert_input() const;             // slot of the expert GEMMs' input rows
  std::vector<int64_t> my_expert_counts(int32_t layer, int32_t mb) const;   // before the ETP gather
  const PermutationPlan& expert_plan(int32_t layer, int32_t mb) const;   // the plan of the expert rows
  std::vector<int64_t> expert_counts(int32_t layer, int32_t mb) const;   // rows per local expert

  Device& device_;
  Communicator& comm_;
  ParamStore& params_;
  const Job& job_;
  const ParallelGrid& grid_;
  const Schedule& schedule_;
  int64_t rank_;
  RunnerSettings settings_;
  lower::Dims dims_;
  int64_t tp_rank_ = 0, cp_rank_ = 0, pipeline_rank_ = 0, s_local_ = 0, vocab_local_ = 0, vocab_start_ = 0;

  struct InFlight {
    int64_t request = 0;
    std::function<void()> finish;
  };
  int32_t current_ = -1;                         // instruction being executed
  std::map<int32_t, InFlight> in_flight_;        // posted receives by instruction
  std::map<std::tuple<int32_t, int32_t, std::string>, DeviceTensor> acts_;
  std::map<std::tuple<int32_t, int32_t>, RoutingResult> routing_;      // (layer, mb)
  std::map<std::tuple<int32_t, int32_t>, PermutationPlan> plans_;      // (layer, mb)
  std::map<std::tuple<int32_t, int32_t>, std::vector<int64_t>> counts_;   // (layer, mb) received rows per source
  std::map<std::tuple<int32_t, int32_t>, PermutationPlan> gathered_plans_;   // allgather: local experts' rows
  std::map<std::tuple<int32_t, int32_t>, std::vector<int64_t>> etp_counts_;   // alltoall + ETP: [member][expert]
  // Aux loss inputs per (layer, mb): routed counts per expert and tokens, summed over TP x CP.
  std::map<std::tuple<int32_t, int32_t>, std::pair<std::vector<int64_t>, int64_t>> aux_counts_;

  // Iteration state.
  int64_t step_ = 0;
  double lr_ = 0;
  bool update_ = true;
  std::vector<MicrobatchData> batch_;
  IterationTotals totals_;
  bool norms_ready_ = false;
  double dense_sq_ = 0, expert_sq_ = 0;   // squared gradient norms (partial until reduced)
  bool norm_combined_ = false;            // dense_sq_ holds dense + expert (distributed optimizer)
  std::vector<DeviceTensor> mirror_inbox_;   // [chunk] gradients received from the other copy
  // Aux-loss-free balancing per MoE layer: the bias [E] (host data, the same on every rank holding
  // the layer) and this iteration's kept tokens per expert [E] (local until expert_bias_sync).
  std::map<int32_t, std::vector<float>> expert_bias_;
  std::map<int32_t, std::vector<double>> expert_load_;
};

}  // namespace tandem::exec
