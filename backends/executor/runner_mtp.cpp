// ModelRunner, multi-token prediction (DeepSeek-V3 §2.2; Megatron-Core's MultiTokenPredictionLayer),
// one module per depth after the head of the last stage (program/lower_head.cpp's mtp_*). Slots of
// the module's scope mtp_scope(layer) ([rows, cols], rows = n/r with SP, else n):
//
//   tokens shifted left by k (depth k; the last k positions get token 0) -mtp-embedding (+ TP
//   reduction)-> emb -mtp-enorm-> enorm; h_in, the residual stream (the decoder's output, or the
//   previous depth's layer output) -mtp-hnorm-> hnorm; eh_in [rows, 2h] =
//   [enorm | hnorm] -(SP: mtp-proj-ag)-> eh_in_full -mtp-proj [2h, h/t]-> eh_out [n, h/t]
//   -(TP: mtp-proj-out-ag, then this rank's sequence rows with SP)-> the residual stream, which the
//   module's decoder layer (global index num_layers + k - 1) and its own final norm, output layer
//   and cross-entropy (the head's ops, in this scope) then use.
//
// Its loss: labels shifted left by k, the last k positions masked; each token's loss weighs
// mtp_loss_scaling_factor / depths / (tokens of the microbatch with a label) / microbatches / DP
// (Megatron's MTPLossAutoScaler), and only the LM loss is reported. Backward: the head and layer
// as usual, then d_eh_out (this rank's columns of the stream gradient) -> d_eh_in [rows, 2h]
// (partial over TP, reduced) -> enorm / hnorm grads -> d_emb into the word embedding, d_h added to
// the gradient of the hidden state it read (mtp-grad-add: the main head's, or depth k-1's).
#include <algorithm>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {

using lower::ParamSlot;

bool ModelRunner::mtp_layer(int32_t layer) const { return layer >= dims_.layers; }

int32_t ModelRunner::head_scope(const Instruction& ins) const {
  return mtp_layer(ins.layer) ? kMtpScope - (ins.layer - static_cast<int32_t>(dims_.layers)) : kHead;
}

Param& ModelRunner::mtp_param(int32_t layer, const std::string& suffix) {
  const std::string name = "layers." + std::to_string(layer) + ".mtp." + suffix;
  for (auto& p : params_.params())
    if (p->name == name) return *p;
  TANDEM_CHECK_MSG(false, "no parameter " << name);
  return *params_.params().front();
}

Param* ModelRunner::mtp_param_or_null(int32_t layer, const std::string& suffix) {
  const std::string name = "layers." + std::to_string(layer) + ".mtp." + suffix;
  for (auto& p : params_.params())
    if (p->name == name) return p.get();
  return nullptr;
}

int64_t ModelRunner::mtp_depth(int32_t layer) const { return int64_t(layer) - dims_.layers + 1; }

// Token ids [n] of the MTP module of `layer` (depth k): shifted k positions to the left within
// each sequence (rows position-major: row = position * b + sample), the last k positions 0
// (Megatron-Core's roll_tensor, k times).
std::vector<int32_t> ModelRunner::mtp_shifted(const std::vector<int32_t>& ids, int32_t layer) const {
  std::vector<int32_t> out(ids.size(), 0);
  const size_t shift = static_cast<size_t>(dims_.b * mtp_depth(layer));
  for (size_t r = 0; r + shift < ids.size(); ++r) out[r] = ids[r + shift];
  return out;
}

std::vector<int32_t> ModelRunner::head_labels(const Instruction& ins) const {
  return mtp_layer(ins.layer) ? mtp_shifted(data(ins).labels, ins.layer) : data(ins).labels;
}

// d(total loss) / d(token loss) [n]: the LM's 1 / global tokens, or the MTP weight (0 where masked).
std::vector<float> ModelRunner::head_loss_grad(const Instruction& ins) const {
  std::vector<float> g(static_cast<size_t>(dims_.n), static_cast<float>(settings_.loss_grad));
  if (!mtp_layer(ins.layer)) return g;
  const int64_t k = mtp_depth(ins.layer);
  const double s = double(dims_.s), scale = settings_.mtp_loss_scale / double(dims_.mtp_layers);
  const float w = static_cast<float>(settings_.loss_grad * scale * s / (s - double(k)));
  const size_t masked = static_cast<size_t>(dims_.b * k);   // the last k positions have no label
  for (size_t r = 0; r < g.size(); ++r) g[r] = r + masked < g.size() ? w : 0.0f;
  return g;
}

// ---- forward ------------------------------------------------------------------------------

void ModelRunner::mtp_embedding(const Instruction& ins) {
  Param& word = params_.get(lower::kModelLayerKey, ParamSlot::WordEmbedding);
  DeviceTensor out = fresh({dims_.n, dims_.h});
  device_.embedding_forward(mtp_shifted(data(ins).tokens, ins.layer), word.value, vocab_start_, out);
  put(head_scope(ins), ins.microbatch, "emb", out);
}

void ModelRunner::mtp_norm(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  std::string which, in, out;
  DeviceTensor x;
  switch (ins.site) {
    case Site::MtpEnorm: which = "enorm", out = "enorm", x = at(scope, mb, "emb"); break;
    case Site::MtpHnorm: which = "hnorm", out = "hnorm", x = put(scope, mb, "h_in", hidden(ins)); break;
    default: which = "final_norm", out = "final_ln", x = put(scope, mb, "x", hidden(ins)); break;
  }
  Param& gamma = mtp_param(ins.layer, which + ".weight");
  Param* beta = mtp_param_or_null(ins.layer, which + ".bias");
  const int64_t rows = x.dim(0);
  DeviceTensor y = fresh(x.shape), rstd = fresh({rows});
  DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? fresh({rows}) : DeviceTensor{};
  device_.norm_forward(settings_.norm, x, gamma.value, beta != nullptr ? beta->value : DeviceTensor{},
                       settings_.norm_eps, y, mean, rstd);
  put(scope, mb, out, y);
  if (mean.defined()) put(scope, mb, out + ".mean", mean);
  put(scope, mb, out + ".rstd", rstd);
  if (ins.site != Site::MtpHnorm) return;
  DeviceTensor eh = fresh({rows, 2 * dims_.h});   // [enorm | hnorm], Megatron's concatenation order
  device_.copy_column_blocks(at(scope, mb, "enorm"), eh, ColumnBlocks{1, dims_.h, 0, 0, 0, 0}, false);
  device_.copy_column_blocks(y, eh, ColumnBlocks{1, dims_.h, 0, 0, dims_.h, 0}, false);
  put(scope, mb, "eh_in", eh);
}

// eh_out [n, h/t] -> the layer's input: columns of all TP ranks side by side, this rank's rows with SP.
void ModelRunner::mtp_stream_input(const Instruction& ins, const DeviceTensor& gathered) {
  const int64_t n = dims_.n, t = dims_.t, w = dims_.h / t;
  DeviceTensor full = gathered;
  if (t > 1) {
    full = fresh({n, dims_.h});
    for (int64_t r = 0; r < t; ++r)
      device_.copy_column_blocks(gathered.rows(r * n, (r + 1) * n), full, ColumnBlocks{1, w, 0, 0, r * w, 0}, false);
  }
  if (dims_.sp) full = full.rows(tp_rank_ * (n / t), (tp_rank_ + 1) * (n / t));
  put(stream_scope(ins.chunk), ins.microbatch, "hidden", full);
}

void ModelRunner::mtp_gemm(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  const DeviceTensor& x = at(scope, mb, dims_.sp ? "eh_in_full" : "eh_in");
  Param& w = mtp_param(ins.layer, "eh_proj.weight");
  DeviceTensor y = fresh({x.dim(0), w.shape[1]});
  device_.gemm_forward(x, w.value, {}, WeightLayout::InOut, y);
  put(scope, mb, "eh_out", y);
  if (dims_.t == 1) mtp_stream_input(ins, y);
}

// ---- backward -----------------------------------------------------------------------------

void ModelRunner::mtp_gemm_grad_input(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  const DeviceTensor g = dims_.sp ? at(scope, mb, "d_out_full") : grad(ins);   // [n, h]
  const int64_t w_cols = dims_.h / dims_.t;
  DeviceTensor dy = fresh({g.dim(0), w_cols});
  device_.copy_columns(g, tp_rank_ * w_cols, dy);
  put(scope, mb, "d_eh_out", dy);
  const Param& w = mtp_param(ins.layer, "eh_proj.weight");
  DeviceTensor dx = fresh({dy.dim(0), 2 * dims_.h});
  device_.gemm_grad_input(dy, w.value, WeightLayout::InOut, dx);
  put(scope, mb, "d_eh_in", dx);
}

void ModelRunner::mtp_gemm_grad_weight(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  device_.gemm_grad_weight(at(scope, mb, dims_.sp ? "eh_in_w" : "eh_in"), at(scope, mb, "d_eh_out"),
                           WeightLayout::InOut, mtp_param(ins.layer, "eh_proj.weight").grad, {});
}

void ModelRunner::mtp_norm_grad(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  std::string which = "final_norm", stats = "final_ln", x_name = "x", out;
  DeviceTensor dy;
  if (ins.site == Site::FinalNorm) {
    dy = at(scope, mb, "d_final");
  } else {
    const bool e = ins.site == Site::MtpEnorm;
    which = stats = e ? "enorm" : "hnorm";
    x_name = e ? "emb" : "h_in";
    out = e ? "d_emb" : "d_h";
    const DeviceTensor& d_eh = at(scope, mb, "d_eh_in");
    dy = fresh({d_eh.dim(0), dims_.h});
    device_.copy_columns(d_eh, e ? 0 : dims_.h, dy);
  }
  Param& gamma = mtp_param(ins.layer, which + ".weight");
  Param* beta = mtp_param_or_null(ins.layer, which + ".bias");
  const DeviceTensor& x = at(scope, mb, x_name);
  const DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? at(scope, mb, stats + ".mean") : DeviceTensor{};
  DeviceTensor dx = fresh(x.shape);
  device_.norm_backward(settings_.norm, x, gamma.value, mean, at(scope, mb, stats + ".rstd"), dy, dx, gamma.grad,
                        beta != nullptr ? beta->grad : DeviceTensor{});
  if (ins.site == Site::FinalNorm) put(stream_scope(ins.chunk), mb, "grad", dx);
  else put(scope, mb, out, dx);
}

void ModelRunner::mtp_embedding_grad(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  Param& word = params_.get(lower::kModelLayerKey, ParamSlot::WordEmbedding);
  const DeviceTensor& dy = at(scope, mb, dims_.sp ? "d_emb_full" : "d_emb");
  device_.embedding_backward(mtp_shifted(data(ins).tokens, ins.layer), dy, vocab_start_, word.grad);
}

// mtp-grad-add: the gradient of a hidden state from its own head (the main head: ins.layer -1;
// depth k's head: ins.layer of depth k) plus that of the next depth's hnorm input.
void ModelRunner::mtp_add(const Instruction& ins) {
  DeviceTensor& g = grad(ins);
  Instruction next = ins;
  next.layer = mtp_layer(ins.layer) ? ins.layer + 1 : static_cast<int32_t>(dims_.layers);
  device_.add(g, at(head_scope(next), ins.microbatch, "d_h"), g);
}

// TP collectives of the module: (source scope slot -> destination), as runner_comm's table.
void ModelRunner::mtp_collective(const Instruction& ins) {
  const int32_t scope = head_scope(ins), mb = ins.microbatch;
  const int64_t t = dims_.t;
  auto gather = [&](const DeviceTensor& src) {
    DeviceTensor out = fresh({src.dim(0) * t, src.numel() / src.dim(0)});
    comm_.all_gather(ParallelGroup::Tp, src, out);
    check_bytes(ins, out.numel());
    return out;
  };
  switch (ins.site) {
    case Site::MtpProjAg: put(scope, mb, "eh_in_full", gather(at(scope, mb, "eh_in"))); break;
    case Site::MtpProjWgradAg: put(scope, mb, "eh_in_w", gather(at(scope, mb, "eh_in"))); break;
    case Site::MtpProjOutAg: mtp_stream_input(ins, gather(at(scope, mb, "eh_out"))); break;
    case Site::MtpProjGradAg: put(scope, mb, "d_out_full", gather(grad(ins))); break;
    case Site::EmbedGradAg: put(scope, mb, "d_emb_full", gather(at(scope, mb, "d_emb"))); break;
    case Site::MtpProjGradAr: case Site::EmbedAr: {
      DeviceTensor& src = at(scope, mb, ins.site == Site::EmbedAr ? "emb" : "d_eh_in");
      comm_.all_reduce(ParallelGroup::Tp, src, ReduceOp::Sum);
      check_bytes(ins, src.numel());
      break;
    }
    case Site::MtpProjGradRs: case Site::EmbedRs: {
      const char* name = ins.site == Site::EmbedRs ? "emb" : "d_eh_in";
      const DeviceTensor& src = at(scope, mb, name);
      DeviceTensor out = fresh({src.dim(0) / t, src.dim(1)});
      comm_.reduce_scatter(ParallelGroup::Tp, src, out);
      check_bytes(ins, src.numel());
      put(scope, mb, name, out);
      break;
    }
    default: TANDEM_CHECK_MSG(false, "not an MTP collective: " << op_trace_line(ins));
  }
}

}  // namespace tandem::exec
