// ModelRunner: dispatch, activation store, iteration state (model_runner.h).
#include "backends/executor/model_runner.h"

#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"

namespace tandem::exec {

ModelRunner::ModelRunner(Device& device, Communicator& comm, ParamStore& params, const Job& job,
                         const ParallelGrid& grid, const Schedule& schedule, int64_t rank, RunnerSettings settings)
    : device_(device),
      comm_(comm),
      params_(params),
      job_(job),
      grid_(grid),
      schedule_(schedule),
      rank_(rank),
      settings_(settings),
      dims_(lower::dims_for_job(job, grid)) {
  const DenseCoord dc = grid.dense_coord(rank);
  tp_rank_ = dc.tp;
  pipeline_rank_ = dc.pp;
  cp_rank_ = dc.cp;
  s_local_ = dims_.s / dims_.cp;
  vocab_local_ = dims_.vocab / dims_.t;
  vocab_start_ = tp_rank_ * vocab_local_;
  if (dims_.cp > 1 && s_local_ % 2 != 0)
    throw_field_error("seq_length", dims_.s, "must be divisible by 2 x context-parallel size");
}

ModelRunner::Fn ModelRunner::method_of(Handler handler) {
  switch (handler) {
    case Handler::None: return nullptr;
    case Handler::Norm: return &ModelRunner::norm;
    case Handler::NormGrad: return &ModelRunner::norm_grad;
    case Handler::Gemm: return &ModelRunner::gemm;
    case Handler::GemmGradInput: return &ModelRunner::gemm_grad_input;
    case Handler::GemmGradWeight: return &ModelRunner::gemm_grad_weight;
    case Handler::Rope: return &ModelRunner::rope;
    case Handler::RopeGrad: return &ModelRunner::rope_grad;
    case Handler::Attention: return &ModelRunner::attention;
    case Handler::AttentionGrad: return &ModelRunner::attention_grad;
    case Handler::Activation: return &ModelRunner::activation;
    case Handler::ActivationGrad: return &ModelRunner::activation_grad;
    case Handler::Residual: return &ModelRunner::residual;
    case Handler::ResidualGrad: return &ModelRunner::residual_grad;
    case Handler::EmbeddingDropout: return &ModelRunner::embedding_dropout;
    case Handler::Embedding: return &ModelRunner::embedding;
    case Handler::EmbeddingGrad: return &ModelRunner::embedding_grad;
    case Handler::CrossEntropy: return &ModelRunner::cross_entropy;
    case Handler::CrossEntropyGrad: return &ModelRunner::cross_entropy_grad;
    case Handler::LossReduce: return &ModelRunner::loss_reduce;
    case Handler::CeCollective: return &ModelRunner::ce_collective;
    case Handler::TpCollective: return &ModelRunner::tp_collective;
    case Handler::PpSend: return &ModelRunner::pp_send;
    case Handler::PpRecv: return &ModelRunner::pp_recv;
    case Handler::PpGather: return &ModelRunner::pp_gather;
    case Handler::CpSend: return &ModelRunner::cp_send;
    case Handler::CpRecv: return &ModelRunner::cp_recv;
    case Handler::DpGrad: return &ModelRunner::dp_grad;
    case Handler::SpNormGrad: return &ModelRunner::sp_norm_grad;
    case Handler::EmbeddingGradSync: return &ModelRunner::embedding_grad_sync;
    case Handler::GradNorm: return &ModelRunner::grad_norm;
    case Handler::OptimizerStep: return &ModelRunner::optimizer_step;
    case Handler::ParamGather: return &ModelRunner::param_gather;
    case Handler::MirrorSend: return &ModelRunner::mirror_send;
    case Handler::MirrorRecv: return &ModelRunner::mirror_recv;
    case Handler::MirrorAdd: return &ModelRunner::mirror_add;
    case Handler::Router: return &ModelRunner::router;
    case Handler::RouterGrad: return &ModelRunner::router_grad;
    case Handler::RouterCounts: return &ModelRunner::router_counts;
    case Handler::Permute: return &ModelRunner::permute;
    case Handler::PermuteGrad: return &ModelRunner::permute_grad;
    case Handler::Unpermute: return &ModelRunner::unpermute;
    case Handler::UnpermuteGrad: return &ModelRunner::unpermute_grad;
    case Handler::MoeCollective: return &ModelRunner::moe_collective;
    case Handler::MoeAdd: return &ModelRunner::moe_add;
    case Handler::MlaAdd: return &ModelRunner::mla_add;
    case Handler::ExpertBias: return &ModelRunner::expert_bias_sync;
    case Handler::MtpAdd: return &ModelRunner::mtp_add;
  }
  return nullptr;
}

bool ModelRunner::execute(const Instruction& ins, int32_t index) {
  current_ = index;
  const Fn method = method_of(handler_of(ins.kind, ins.site));
  if (method == nullptr)
    throw UserError("the " + std::string(device_.name()) + " backend cannot execute \"" + op_trace_line(ins) +
                    "\" (this model feature is not implemented by real backends yet)");
  (this->*method)(ins);
  return in_flight_.count(index) == 0;
}

bool ModelRunner::poll(int32_t index) {
  const auto it = in_flight_.find(index);
  if (it == in_flight_.end()) return true;
  if (!comm_.test(it->second.request)) return false;
  std::function<void()> finish = std::move(it->second.finish);
  in_flight_.erase(it);
  if (finish) finish();
  return true;
}

void ModelRunner::post_recv(const Instruction& ins, const DeviceTensor& buffer, std::function<void()> finish) {
  check_bytes(ins, buffer.numel());
  in_flight_[current_] = InFlight{comm_.irecv(ins.peer, ins.tag, buffer), std::move(finish)};
}

void ModelRunner::on_free(const Buffer& buffer) {
  if (buffer.role != BufferRole::Activation) return;
  const int32_t mb = buffer.microbatch, layer = buffer.layer;
  TANDEM_CHECK_MSG(mb >= 0, "activation buffer without microbatch: " << buffer.name());
  switch (buffer.part) {
    case BufferPart::Layer:
    case BufferPart::Input:
    case BufferPart::Replay:
      drop(layer, mb);
      routing_.erase({layer, mb});
      plans_.erase({layer, mb});
      counts_.erase({layer, mb});
      gathered_plans_.erase({layer, mb});
      etp_counts_.erase({layer, mb});
      aux_counts_.erase({layer, mb});
      return;
    case BufferPart::Embedding: drop(kEmbedding, mb); return;
    case BufferPart::Head: drop(kHead, mb); return;
  }
}

DeviceTensor& ModelRunner::put(int32_t scope, int32_t mb, const std::string& name, DeviceTensor t) {
  DeviceTensor& slot = acts_[{scope, mb, name}];
  slot = std::move(t);
  return slot;
}

DeviceTensor& ModelRunner::at(int32_t scope, int32_t mb, const std::string& name) {
  const auto it = acts_.find({scope, mb, name});
  TANDEM_CHECK_MSG(it != acts_.end(), "no tensor '" << name << "' for scope " << scope << " microbatch " << mb);
  return it->second;
}

bool ModelRunner::has(int32_t scope, int32_t mb, const std::string& name) const {
  return acts_.count({scope, mb, name}) > 0;
}

void ModelRunner::drop(int32_t scope, int32_t mb) {
  auto it = acts_.lower_bound({scope, mb, std::string()});
  while (it != acts_.end() && std::get<0>(it->first) == scope && std::get<1>(it->first) == mb) it = acts_.erase(it);
}

int ModelRunner::chunk_of_stage(int stage) const {
  for (int c = 0; c < schedule_.num_chunks(); ++c)
    if (schedule_.stage_of(static_cast<int>(pipeline_rank_), c) == stage) return c;
  return -1;
}

DeviceTensor& ModelRunner::hidden(const Instruction& ins) {
  const int32_t scope = stream_scope(ins.chunk);
  if (!has(scope, ins.microbatch, "hidden")) {
    const int prev = chunk_of_stage(schedule_.stage_of(static_cast<int>(pipeline_rank_), ins.chunk) - 1);
    if (prev >= 0) return put(scope, ins.microbatch, "hidden", at(stream_scope(prev), ins.microbatch, "hidden"));
  }
  return at(scope, ins.microbatch, "hidden");
}

DeviceTensor& ModelRunner::grad(const Instruction& ins) {
  const int32_t scope = stream_scope(ins.chunk);
  if (!has(scope, ins.microbatch, "grad")) {
    const int next = chunk_of_stage(schedule_.stage_of(static_cast<int>(pipeline_rank_), ins.chunk) + 1);
    if (next >= 0) return put(scope, ins.microbatch, "grad", at(stream_scope(next), ins.microbatch, "grad"));
  }
  return at(scope, ins.microbatch, "grad");
}

const MicrobatchData& ModelRunner::data(const Instruction& ins) const {
  TANDEM_CHECK_MSG(ins.microbatch >= 0 && static_cast<size_t>(ins.microbatch) < batch_.size(),
                   "microbatch " << ins.microbatch << " of " << batch_.size());
  return batch_[static_cast<size_t>(ins.microbatch)];
}

// The MTP module's layer is built like the last decoder layer (program/lower_head.cpp).
bool ModelRunner::moe_layer(int32_t layer) const {
  return is_moe_layer(job_.model, std::min<int32_t>(layer, static_cast<int32_t>(dims_.layers) - 1));
}

void ModelRunner::begin_iteration(int64_t step, double lr, std::vector<MicrobatchData> batch, bool update) {
  step_ = step;
  lr_ = lr;
  update_ = update;
  batch_ = std::move(batch);
  totals_ = IterationTotals{};
  norms_ready_ = false;
  norm_combined_ = false;
  dense_sq_ = expert_sq_ = 0;
  acts_.clear();
  routing_.clear();
  plans_.clear();
  counts_.clear();
  gathered_plans_.clear();
  etp_counts_.clear();
  aux_counts_.clear();
  mirror_inbox_.assign(static_cast<size_t>(schedule_.num_chunks()), DeviceTensor{});
  params_.zero_grads();
}

IterationTotals ModelRunner::end_iteration() {
  TANDEM_CHECK_MSG(in_flight_.empty(), in_flight_.size() << " receives still in flight after the program");
  comm_.wait_sends();
  acts_.clear();
  routing_.clear();
  plans_.clear();
  counts_.clear();
  gathered_plans_.clear();
  etp_counts_.clear();
  aux_counts_.clear();
  return totals_;
}


}  // namespace tandem::exec
