// ModelRunner, after the backward: data-parallel gradient reductions per bucket, the TP sum of
// replicated gradients (sequence parallelism), tied-embedding sync, the global gradient norm,
// clipping + AdamW on this rank's range, and the distributed optimizer's parameter all-gathers.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

DeviceTensor segment_of(const DeviceTensor& t, const OptimSegment& s) {
  return t.flat().slice(s.begin, {s.end - s.begin});
}

}  // namespace

void ModelRunner::dp_grad(const Instruction& ins) {
  ParamBucket& b = params_.bucket(ins.chunk, ins.bucket);
  check_bytes(ins, b.elements);
  if (ins.kind == OpKind::AllReduce) {
    comm_.all_reduce(b.group, b.grads.slice(0, {b.elements}), ReduceOp::Sum);
    return;
  }
  TANDEM_CHECK_MSG(params_.distributed_optimizer(), "reduce-scatter of gradients without the distributed optimizer");
  DeviceTensor mine = fresh({b.shard});
  comm_.reduce_scatter(b.group, b.grads, mine);
  device_.copy(mine, b.grads.slice(b.dp_rank * b.shard, {b.shard}));
}

void ModelRunner::sp_norm_grad(const Instruction& ins) {
  std::vector<Param*> list;
  int64_t total = 0;
  for (auto& p : params_.params())
    if (p->sp_grad_sync) {
      list.push_back(p.get());
      total += p->grad.numel();
    }
  check_bytes(ins, total);
  DeviceTensor packed = fresh({total});
  int64_t offset = 0;
  for (Param* p : list) {
    device_.copy(p->grad, packed.slice(offset, {p->grad.numel()}));
    offset += p->grad.numel();
  }
  comm_.all_reduce(ParallelGroup::Tp, packed, ReduceOp::Sum);
  offset = 0;
  for (Param* p : list) {
    device_.copy(packed.slice(offset, {p->grad.numel()}), p->grad);
    offset += p->grad.numel();
  }
}

void ModelRunner::embedding_grad_sync(const Instruction& ins) {
  Param& word = params_.get(lower::kModelLayerKey, lower::ParamSlot::WordEmbedding);
  check_bytes(ins, word.grad.numel());
  comm_.all_reduce(ParallelGroup::Embedding, word.grad, ReduceOp::Sum);
}

// Squared norms of the gradients this rank owns (its shard with the distributed optimizer),
// counting a TP-replicated tensor on TP rank 0 only and a shared embedding copy not at all.
void ModelRunner::local_norms() {
  if (norms_ready_) return;
  for (auto& chunk : params_.buckets())
    for (ParamBucket& b : chunk)
      for (const OptimSegment& s : b.segments)
        if (s.in_norm) (s.param->expert ? expert_sq_ : dense_sq_) += device_.sum_of_squares(segment_of(s.param->grad, s));
  norms_ready_ = true;
}

// Scalar all-reduces of the squared norm: over the model-parallel group (dense tensors, or all
// with the distributed optimizer, then over DP-with-CP too), and over the expert
// tensor-expert-pipeline group for the expert tensors without the distributed optimizer.
void ModelRunner::grad_norm(const Instruction& ins) {
  local_norms();
  check_bytes(ins, 1);
  const bool expert = ins.site == Site::GradNormExpert;
  if (!expert && params_.distributed_optimizer() && !norm_combined_) {
    dense_sq_ += expert_sq_;
    expert_sq_ = 0;
    norm_combined_ = true;
  }
  double& value = expert ? expert_sq_ : dense_sq_;
  DeviceTensor t = fresh({1});
  const float v = static_cast<float>(value);
  device_.upload(std::span<const float>(&v, 1), t);
  comm_.all_reduce(ins.group, t, ReduceOp::Sum);
  value = static_cast<double>(device_.to_host(t)[0]);
}

void ModelRunner::optimizer_step(const Instruction& ins) {
  (void)ins;
  local_norms();
  const double norm = std::sqrt(dense_sq_ + expert_sq_);
  totals_.grad_norm = norm;
  if (!update_) return;   // evaluation: the gradients are discarded
  update_expert_bias();
  float coef = 1.0f;
  if (settings_.clip_grad > 0) coef = static_cast<float>(std::min(1.0, settings_.clip_grad / (norm + 1.0e-6)));
  for (auto& chunk : params_.buckets())
    for (ParamBucket& b : chunk)
      for (OptimSegment& s : b.segments) {
        const float wd = s.param->no_weight_decay ? 0.0f : static_cast<float>(settings_.weight_decay);
        device_.adamw_step(segment_of(s.param->value, s), segment_of(s.param->grad, s), s.exp_avg, s.exp_avg_sq,
                           static_cast<float>(lr_), static_cast<float>(settings_.beta1),
                           static_cast<float>(settings_.beta2), static_cast<float>(settings_.adam_eps), wd, step_,
                           coef);
      }
}

void ModelRunner::param_gather(const Instruction& ins) {
  ParamBucket& b = params_.bucket(ins.chunk, ins.bucket);
  check_bytes(ins, b.elements);
  comm_.all_gather(b.group, b.values.slice(b.dp_rank * b.shard, {b.shard}), b.values);
}

// ---- a stage held by two ranks (DualPipe): exchange and add the chunk's gradients.

namespace {

int64_t chunk_elements(ParamStore& params, int chunk) {
  int64_t n = 0;
  for (ParamBucket& b : params.buckets()[static_cast<size_t>(chunk)]) n += b.elements;
  return n;
}

}  // namespace

void ModelRunner::mirror_send(const Instruction& ins) {
  DeviceTensor packed = fresh({chunk_elements(params_, ins.chunk)});
  int64_t offset = 0;
  for (ParamBucket& b : params_.buckets()[static_cast<size_t>(ins.chunk)]) {
    device_.copy(b.grads.slice(0, {b.elements}), packed.slice(offset, {b.elements}));
    offset += b.elements;
  }
  check_bytes(ins, packed.numel());
  comm_.send(ins.peer, ins.tag, packed);
}

void ModelRunner::mirror_recv(const Instruction& ins) {
  DeviceTensor inbox = fresh({chunk_elements(params_, ins.chunk)});
  mirror_inbox_[static_cast<size_t>(ins.chunk)] = inbox;
  post_recv(ins, inbox);
}

void ModelRunner::mirror_add(const Instruction& ins) {
  const DeviceTensor& inbox = mirror_inbox_[static_cast<size_t>(ins.chunk)];
  TANDEM_CHECK_MSG(inbox.defined(), "mirror gradients of chunk " << ins.chunk << " not received");
  int64_t offset = 0;
  for (ParamBucket& b : params_.buckets()[static_cast<size_t>(ins.chunk)]) {
    device_.axpy(1.0f, inbox.slice(offset, {b.elements}), b.grads.slice(0, {b.elements}));
    offset += b.elements;
  }
}

}  // namespace tandem::exec
