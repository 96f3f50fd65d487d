// ModelRunner, model-level parts: embedding (vocabulary-parallel, + learned positions) and the
// vocabulary-parallel cross-entropy in its phases (local partials, TP all-reduces, loss).
#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {

using lower::ParamSlot;

std::vector<int32_t> ModelRunner::position_rows(const MicrobatchData& d) const {
  std::vector<int32_t> rows(static_cast<size_t>(dims_.n));
  for (int64_t r = 0; r < dims_.n; ++r) rows[static_cast<size_t>(r)] = d.positions[static_cast<size_t>(r / dims_.b)];
  return rows;
}

// Word rows of this rank's vocabulary slice (zero rows for other ids); the TP reduction that
// follows sums the slices. Learned positions are added once, by TP rank 0, before that sum.
void ModelRunner::embedding(const Instruction& ins) {
  if (ins.site == Site::MtpEmbedding) return mtp_embedding(ins);
  const MicrobatchData& d = data(ins);
  Param& word = params_.get(lower::kModelLayerKey, ParamSlot::WordEmbedding);
  DeviceTensor out = fresh({dims_.n, dims_.h});
  device_.embedding_forward(d.tokens, word.value, vocab_start_, out);
  Param* pos = params_.find(lower::kModelLayerKey, ParamSlot::Positions);
  if (pos != nullptr && tp_rank_ == 0) {
    DeviceTensor p = fresh({dims_.n, dims_.h});
    device_.embedding_forward(position_rows(d), pos->value, 0, p);
    device_.add(out, p, out);
  }
  put(stream_scope(ins.chunk), ins.microbatch, "hidden", out);
}

// The embedding's dropout over the residual stream ([n/t, h] with SP); its backward masks the
// gradient the same way.
void ModelRunner::embedding_dropout(const Instruction& ins) {
  if (settings_.hidden_dropout <= 0 || !update_) return;
  const bool fwd = forward_pass(ins);
  const DeviceTensor& src = fwd ? hidden(ins) : grad(ins);
  DeviceTensor out = fresh(src.shape);
  device_.copy(src, out);
  dropout(ins, 3, dims_.sp, out);
  put(stream_scope(ins.chunk), ins.microbatch, fwd ? "hidden" : "grad", out);
}

void ModelRunner::embedding_grad(const Instruction& ins) {
  if (ins.site == Site::MtpEmbedding) return mtp_embedding_grad(ins);
  const MicrobatchData& d = data(ins);
  const DeviceTensor dy = dims_.sp ? at(kEmbedding, ins.microbatch, "d_full") : grad(ins);
  Param& word = params_.get(lower::kModelLayerKey, ParamSlot::WordEmbedding);
  device_.embedding_backward(d.tokens, dy, vocab_start_, word.grad);
  if (Param* pos = params_.find(lower::kModelLayerKey, ParamSlot::Positions))
    device_.embedding_backward(position_rows(d), dy, 0, pos->grad);
}

void ModelRunner::cross_entropy(const Instruction& ins) {
  const int32_t mb = ins.microbatch, scope = head_scope(ins);
  const DeviceTensor& logits = at(scope, mb, "logits");
  if (on_logits && scope == kHead) on_logits(mb, logits);
  const int64_t n = logits.dim(0);
  DeviceTensor lmax = fresh({n}), sum = fresh({n}), target = fresh({n});
  device_.cross_entropy_partials(logits, head_labels(ins), vocab_start_, lmax, sum, target);
  put(scope, mb, "ce_lmax", lmax);
  put(scope, mb, "ce_sum", sum);
  put(scope, mb, "ce_target", target);
  if (dims_.t == 1) {
    put(scope, mb, "ce_max", lmax);
    finish_loss(ins);
    return;
  }
  DeviceTensor gmax = fresh({n});
  device_.copy(lmax, gmax);
  put(scope, mb, "ce_max", gmax);
}

void ModelRunner::ce_collective(const Instruction& ins) {
  const int32_t mb = ins.microbatch, scope = head_scope(ins);
  const Site site = ins.site;
  if (site == Site::CeMax) {
    comm_.all_reduce(ParallelGroup::Tp, at(scope, mb, "ce_max"), ReduceOp::Max);
  } else if (site == Site::CeTarget) {
    comm_.all_reduce(ParallelGroup::Tp, at(scope, mb, "ce_target"), ReduceOp::Sum);
  } else {
    DeviceTensor& sum = at(scope, mb, "ce_sum");
    device_.rescale_sum_exp(sum, at(scope, mb, "ce_lmax"), at(scope, mb, "ce_max"));
    comm_.all_reduce(ParallelGroup::Tp, sum, ReduceOp::Sum);
  }
  check_bytes(ins, at(scope, mb, "ce_max").numel());
}

void ModelRunner::loss_reduce(const Instruction& ins) { finish_loss(ins); }

// The token losses; the reported loss is the LM's (the MTP module's only trains, as in Megatron).
void ModelRunner::finish_loss(const Instruction& ins) {
  const int32_t mb = ins.microbatch, scope = head_scope(ins);
  const DeviceTensor& max = at(scope, mb, "ce_max");
  DeviceTensor loss = fresh(max.shape);
  device_.cross_entropy_loss(max, at(scope, mb, "ce_sum"), at(scope, mb, "ce_target"), loss);
  put(scope, mb, "loss", loss);
  if (tp_rank_ == 0 && scope == kHead) {
    totals_.loss_sum += device_.sum(loss);
    totals_.tokens += static_cast<double>(loss.numel());
  }
}

void ModelRunner::cross_entropy_grad(const Instruction& ins) {
  const int32_t mb = ins.microbatch, scope = head_scope(ins);
  const DeviceTensor& logits = at(scope, mb, "logits");
  DeviceTensor d_loss = fresh({logits.dim(0)});
  device_.upload(head_loss_grad(ins), d_loss);
  DeviceTensor d_logits = fresh(logits.shape);
  device_.cross_entropy_backward(logits, head_labels(ins), vocab_start_, at(scope, mb, "ce_max"),
                                 at(scope, mb, "ce_sum"), d_loss, d_logits);
  put(scope, mb, "d_logits", d_logits);
}

}  // namespace tandem::exec
