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
  register_handlers();
}

void ModelRunner::register_handlers() {
  auto on = [this](OpKind kind, std::initializer_list<const char*> labels, Fn fn) {
    for (const char* label : labels) handlers_[std::string(to_string(kind)) + " " + label] = fn;
  };
  on(OpKind::Norm, {"input-norm", "pre-mlp-norm", "final-norm"}, &ModelRunner::norm);
  on(OpKind::NormGrad, {"input-norm", "pre-mlp-norm", "final-norm"}, &ModelRunner::norm_grad);
  const auto dense_gemms = {"qkv", "proj", "fc1", "fc2", "shared-fc1", "shared-fc2", "output"};
  on(OpKind::Gemm, dense_gemms, &ModelRunner::gemm);
  on(OpKind::GemmGradInput, dense_gemms, &ModelRunner::gemm_grad_input);
  on(OpKind::GemmGradWeight, dense_gemms, &ModelRunner::gemm_grad_weight);
  on(OpKind::Rope, {"rope"}, &ModelRunner::rope);
  on(OpKind::RopeGrad, {"rope"}, &ModelRunner::rope_grad);
  on(OpKind::Attention, {"attn"}, &ModelRunner::attention);
  on(OpKind::AttentionGrad, {"attn"}, &ModelRunner::attention_grad);
  on(OpKind::Activation, {"act", "shared-act"}, &ModelRunner::activation);
  on(OpKind::ActivationGrad, {"act", "shared-act"}, &ModelRunner::activation_grad);
  on(OpKind::Elementwise, {"attn-residual", "mlp-residual"}, &ModelRunner::residual);
  on(OpKind::Elementwise, {"residual-grad"}, &ModelRunner::residual_grad);
  on(OpKind::Elementwise, {"embed-dropout"}, &ModelRunner::embedding_dropout);
  on(OpKind::Embedding, {"embedding"}, &ModelRunner::embedding);
  on(OpKind::EmbeddingGrad, {"embedding"}, &ModelRunner::embedding_grad);
  on(OpKind::CrossEntropy, {"loss"}, &ModelRunner::cross_entropy);
  on(OpKind::Elementwise, {"loss-reduce"}, &ModelRunner::loss_reduce);
  on(OpKind::CrossEntropyGrad, {"loss"}, &ModelRunner::cross_entropy_grad);
  on(OpKind::AllReduce, {"ce-max", "ce-target", "ce-sum"}, &ModelRunner::ce_collective);
  on(OpKind::AllReduce, {"embed-ar", "proj-ar", "fc2-ar", "shared-fc2-ar", "qkv-grad-ar", "fc1-grad-ar",
                         "shared-fc1-grad-ar", "output-grad-ar"},
     &ModelRunner::tp_collective);
  on(OpKind::ReduceScatter, {"embed-rs", "proj-rs", "fc2-rs", "shared-fc2-rs", "qkv-grad-rs", "fc1-grad-rs",
                             "shared-fc1-grad-rs", "output-grad-rs"},
     &ModelRunner::tp_collective);
  on(OpKind::AllGather, {"qkv-ag", "fc1-ag", "shared-fc1-ag", "output-ag", "proj-grad-ag", "qkv-wgrad-ag",
                         "fc2-grad-ag", "shared-fc2-grad-ag", "fc1-wgrad-ag", "shared-fc1-wgrad-ag",
                         "output-wgrad-ag", "embed-grad-ag"},
     &ModelRunner::tp_collective);
  on(OpKind::Send, {"pp-activation", "pp-gradient"}, &ModelRunner::pp_send);
  on(OpKind::Recv, {"pp-activation", "pp-gradient"}, &ModelRunner::pp_recv);
  on(OpKind::AllGather, {"pp-gather"}, &ModelRunner::pp_gather);
  on(OpKind::Send, {"cp-kv", "cp-kv-dkv", "cp-dkv"}, &ModelRunner::cp_send);
  on(OpKind::Recv, {"cp-kv", "cp-kv-dkv", "cp-dkv"}, &ModelRunner::cp_recv);
  on(OpKind::AllReduce, {"dp-grad", "edp-grad"}, &ModelRunner::dp_grad);
  on(OpKind::ReduceScatter, {"dp-grad", "edp-grad"}, &ModelRunner::dp_grad);
  on(OpKind::AllReduce, {"sp-norm-grad"}, &ModelRunner::sp_norm_grad);
  on(OpKind::AllReduce, {"embedding-grad"}, &ModelRunner::embedding_grad_sync);
  on(OpKind::AllReduce, {"grad-norm", "grad-norm-expert"}, &ModelRunner::grad_norm);
  on(OpKind::OptimizerStep, {"adam"}, &ModelRunner::optimizer_step);
  on(OpKind::AllGather, {"dp-param-ag", "edp-param-ag"}, &ModelRunner::param_gather);
  on(OpKind::Send, {"mirror-grad"}, &ModelRunner::mirror_send);
  on(OpKind::Recv, {"mirror-grad"}, &ModelRunner::mirror_recv);
  on(OpKind::Elementwise, {"mirror-grad-add"}, &ModelRunner::mirror_add);
  on(OpKind::Router, {"router"}, &ModelRunner::router);
  on(OpKind::AllReduce, {"router-counts"}, &ModelRunner::router_counts);
  on(OpKind::RouterGrad, {"router"}, &ModelRunner::router_grad);
  on(OpKind::Permute, {"permute"}, &ModelRunner::permute);
  on(OpKind::PermuteGrad, {"permute"}, &ModelRunner::permute_grad);
  on(OpKind::Unpermute, {"unpermute"}, &ModelRunner::unpermute);
  on(OpKind::UnpermuteGrad, {"unpermute"}, &ModelRunner::unpermute_grad);
  on(OpKind::AllToAllV, {"dispatch-a2a", "combine-a2a", "combine-grad-a2a", "dispatch-grad-a2a"},
     &ModelRunner::moe_collective);
  on(OpKind::AllGather, {"dispatch-ag", "combine-grad-ag"}, &ModelRunner::moe_collective);
  on(OpKind::ReduceScatter, {"combine-rs", "dispatch-grad-rs"}, &ModelRunner::moe_collective);
  on(OpKind::Elementwise, {"shared-add", "moe-grad-add", "shared-grad-add"}, &ModelRunner::moe_add);
  const auto expert = {"expert-fc1", "expert-fc2"};
  on(OpKind::Gemm, expert, &ModelRunner::gemm);
  on(OpKind::GemmGradInput, expert, &ModelRunner::gemm_grad_input);
  on(OpKind::GemmGradWeight, expert, &ModelRunner::gemm_grad_weight);
  on(OpKind::GemmGradWeight, {"router"}, &ModelRunner::gemm_grad_weight);
  on(OpKind::Activation, {"expert-act"}, &ModelRunner::activation);
  on(OpKind::ActivationGrad, {"expert-act"}, &ModelRunner::activation_grad);
}

bool ModelRunner::execute(const Instruction& ins, int32_t index) {
  current_ = index;
  const auto it = handlers_.find(std::string(to_string(ins.kind)) + " " + ins.label);
  if (it == handlers_.end())
    throw UserError("the " + std::string(device_.name()) + " backend cannot execute \"" + op_trace_line(ins) +
                    "\" (this model feature is not implemented by real backends yet)");
  (this->*(it->second))(ins);
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
  // Names: act/<what>[/L<layer>]/mb<m>/c<c> (program/lower_pipeline.cpp).
  const std::string& n = buffer.name;
  const size_t mb_at = n.find("/mb");
  TANDEM_CHECK_MSG(mb_at != std::string::npos, "activation buffer without microbatch: " << n);
  const int32_t mb = std::stoi(n.substr(mb_at + 3));
  const size_t layer_at = n.find("/L");
  if (layer_at != std::string::npos && layer_at < mb_at) {
    const int32_t layer = std::stoi(n.substr(layer_at + 2));
    drop(layer, mb);
    routing_.erase({layer, mb});
    plans_.erase({layer, mb});
    counts_.erase({layer, mb});
    gathered_plans_.erase({layer, mb});
    etp_counts_.erase({layer, mb});
    aux_counts_.erase({layer, mb});
  } else if (n.rfind("act/embedding/", 0) == 0) {
    drop(kEmbedding, mb);
  } else if (n.rfind("act/head/", 0) == 0) {
    drop(kHead, mb);
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

bool ModelRunner::moe_layer(int32_t layer) const { return is_moe_layer(job_.model, layer); }

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
