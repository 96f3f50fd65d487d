// Model-level parts of the first and last stages (Megatron-Core's GPTModel):
//
//   embedding   vocab-parallel lookup of the n local tokens on every TP rank ([n, h], each rank
//               contributes the rows of its vocabulary slice), + learned positions, then
//               reduce-scatter to [n/t, h] with SP or all-reduce [n, h] without; dropout.
//   head        final norm [n/r, h] -> (SP: all-gather [n, h]) -> output layer [n, h] x [h, V/t]
//               (column-parallel, vocab split) -> vocab-parallel cross-entropy with three small
//               TP all-reduces over [n] fp32 (max, target logit, sum of exponentials).
//   MTP module  (DeepSeek-V3, after the head on the last stage) embedding of the shifted tokens,
//               enorm and hnorm, eh projection [n, 2h] x [2h, h/t] gathered over TP, one decoder
//               layer, its own final norm, output layer and loss. Depth k's hnorm reads depth
//               k-1's layer output (depth 1: the decoder's), so its gradient flows back there.
// Tied embeddings: the output layer's weight is the word embedding (its gradient goes to the
// embedding's copy on the last stage, all-reduced with the first stage after the iteration).
#include "core/check.h"
#include "models/accounting.h"
#include "program/lower_context.h"

namespace tandem::lower {
namespace {

double e_of(const Context& ctx) { return double(ctx.dims.e); }

// HBM bytes per logit [n, V/t] of Megatron's unfused vocab-parallel cross-entropy
// (tensor_parallel/cross_entropy.py), which works on an fp32 copy of the e-byte logits:
//   forward  .float() (read e, write 4), max over V (read 4), x -= max (read 4, write 4),
//            exp in place (read 4, write 4), sum over V (read 4), softmax = exp / sum in place
//            (read 4, write 4, kept for the backward): e + 36 bytes;
//   backward grad = softmax, minus 1 at the target (a gather: negligible), grad *= dloss in place
//            (read 4, write 4), then the backward of .float() casts to e bytes (read 4, write e):
//            12 + e bytes.
constexpr double cross_entropy_forward_bytes(double e) { return e + 36.0; }
constexpr double cross_entropy_backward_bytes(double e) { return 12.0 + e; }

bool full_uniform_recompute(const Context& ctx) {
  const auto& t = ctx.job.training;
  return t.recompute_granularity == RecomputeGranularity::Full && t.recompute_method == RecomputeMethod::Uniform;
}

int32_t lookup(Context& ctx, Site site, int32_t gate) {
  const Dims& d = ctx.dims;
  const double bytes = 2.0 * double(d.n) * double(d.h) * e_of(ctx);
  const int32_t emb = ctx.em.op(OpKind::Embedding, site, d.n, d.h, bytes, {gate});
  return tp_reduce_output(ctx, Site::EmbedRs, Site::EmbedAr, emb);
}

int32_t lookup_backward(Context& ctx, Site site, int32_t dy, bool positions) {
  const Dims& d = ctx.dims;
  const int32_t g = tp_gather_output_grad(ctx, Site::EmbedGradAg, dy);
  Instruction ins;
  ins.kind = OpKind::EmbeddingGrad;
  ins.site = site;
  ins.m = d.n;
  ins.n = d.h;
  // PyTorch's embedding backward (F.embedding, dense) scatter-adds the n gradient rows into a
  // zero-filled dense [V/t, h] gradient of e-byte elements, which Megatron's gradient hook then
  // adds to the fp32 main gradient: rows read + read-modify-write (3 n h e), dense gradient
  // written by the fill and read by the add (2 e), main gradient read and written (8).
  const double dense = double(d.vocab) / double(d.t) * double(d.h) * (2.0 * e_of(ctx) + 8.0);
  ins.bytes = 3.0 * double(d.n) * double(d.h) * e_of(ctx) + dense;
  // One kernel produces the word and the position gradients.
  const int64_t positions_key = positions ? param_key(kModelLayerKey, ParamSlot::Positions) : -1;
  ctx.em.weight_grad(std::move(ins), param_key(kModelLayerKey, ParamSlot::WordEmbedding), {g}, positions_key);
  return g;
}

// Parameter key the output layer's weight gradient accumulates into.
ParamSlot output_slot(const Context& ctx) { return ctx.dims.tied ? ParamSlot::WordEmbedding : ParamSlot::Output; }

// Final norm, output layer, loss; the backward names the final norm's parameter by (layer, slot).
int32_t logits_forward(Context& ctx, int32_t x) {
  const Dims& d = ctx.dims;
  const int64_t v_local = d.vocab / d.t;
  const int32_t gate = ctx.em.take_param_gate(kHeadGate);
  const int32_t normed = ctx.em.op(OpKind::Norm, Site::FinalNorm, d.sp_rows(), d.h,
                                   2.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {x, gate});
  const int32_t in = tp_gather_input(ctx, Site::OutputAg, d.h, normed);
  const int32_t logits = ctx.em.gemm(OpKind::Gemm, Site::Output, d.n, v_local, d.h, 1, {in});
  const double ce_bytes = double(d.n) * double(v_local) * cross_entropy_forward_bytes(e_of(ctx));
  int32_t loss = ctx.em.op(OpKind::CrossEntropy, Site::Loss, d.n, v_local, ce_bytes, {logits});
  if (ctx.tp > 1) {
    for (Site site : {Site::CeMax, Site::CeTarget, Site::CeSum})
      loss = ctx.em.collective(OpKind::AllReduce, ParallelGroup::Tp, StreamKind::TpComm, site, 4.0 * double(d.n), {loss});
    loss = ctx.em.op(OpKind::Elementwise, Site::LossReduce, d.n, 1, 12.0 * double(d.n), {loss});
  }
  return loss;
}

int32_t logits_backward(Context& ctx, int32_t norm_layer, ParamSlot norm_slot) {
  const Dims& d = ctx.dims;
  const int64_t v_local = d.vocab / d.t;
  const double ce_bytes = double(d.n) * double(v_local) * cross_entropy_backward_bytes(e_of(ctx));
  const int32_t dlogits = ctx.em.op(OpKind::CrossEntropyGrad, Site::Loss, d.n, v_local, ce_bytes, {});
  const int32_t ag = tp_gather_input(ctx, Site::OutputWgradAg, d.h, dlogits);
  const int32_t dx = ctx.em.gemm(OpKind::GemmGradInput, Site::Output, d.n, v_local, d.h, 1, {dlogits});
  Instruction w;
  w.kind = OpKind::GemmGradWeight;
  w.site = Site::Output;
  w.m = d.n;
  w.n = v_local;
  w.k = d.h;
  w.flops = 2.0 * double(d.n) * double(v_local) * double(d.h);
  w.bytes = e_of(ctx) * (double(d.n) * double(d.h) + double(d.h) * double(v_local) + double(d.n) * double(v_local));
  const int32_t wg = ctx.em.weight_grad(std::move(w), param_key(kModelLayerKey, output_slot(ctx)), {ag});
  const int32_t red = tp_reduce_input_grad(ctx, Site::OutputGradRs, Site::OutputGradAr, d.h, dx, wg);
  const int32_t ng = ctx.em.op(OpKind::NormGrad, Site::FinalNorm, d.sp_rows(), d.h,
                               3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {red});
  ctx.em.produced(param_key(norm_layer, norm_slot), ng);
  return ng;
}

// One MTP module on hidden state x (the decoder's or the previous depth's output); layer is its
// global layer index. Returns its layer's output (the next depth's hidden state), *loss its loss.
int32_t mtp_forward(Context& ctx, int32_t layer, int32_t x, int32_t* loss) {
  const Dims& d = ctx.dims;
  ctx.em.cursor.layer = layer;
  const int32_t emb = lookup(ctx, Site::MtpEmbedding, -1);
  const double norm_bytes = 2.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx);
  const int32_t en = ctx.em.op(OpKind::Norm, Site::MtpEnorm, d.sp_rows(), d.h, norm_bytes, {emb});
  const int32_t hn = ctx.em.op(OpKind::Norm, Site::MtpHnorm, d.sp_rows(), d.h, norm_bytes, {x});
  const int32_t in = tp_gather_input(ctx, Site::MtpProjAg, 2 * d.h, hn);
  const int32_t proj = ctx.em.gemm(OpKind::Gemm, Site::MtpProj, d.n, d.h / d.t, 2 * d.h, 1, {in, en});
  int32_t out = proj;
  if (ctx.tp > 1)
    out = ctx.em.collective(OpKind::AllGather, ParallelGroup::Tp, StreamKind::TpComm, Site::MtpProjOutAg,
                            double(d.n) * double(d.h) * e_of(ctx), {proj});
  const bool moe = is_moe_layer(ctx.job.model, d.layers - 1);
  out = layer_forward(ctx, layer, moe, out);
  ctx.em.cursor.layer = layer;
  *loss = logits_forward(ctx, out);
  return out;
}

// dh_next: the next depth's gradient of this module's layer output (its hnorm input), or -1.
int32_t mtp_backward(Context& ctx, int32_t layer, int32_t dh_next) {
  const Dims& d = ctx.dims;
  ctx.em.cursor.layer = layer;
  int32_t g = logits_backward(ctx, layer, ParamSlot::MtpNorms);
  if (dh_next >= 0)
    g = ctx.em.op(OpKind::Elementwise, Site::MtpGradAdd, d.sp_rows(), d.h,
                  3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {g, dh_next});
  const bool moe = is_moe_layer(ctx.job.model, d.layers - 1);
  if (full_uniform_recompute(ctx)) {
    ctx.em.cursor.recompute = true;
    layer_forward(ctx, layer, moe, -1);
    ctx.em.cursor.recompute = false;
  }
  g = layer_backward(ctx, layer, moe, g, layer_options(ctx.job));
  ctx.em.cursor.layer = layer;
  // Backward of gather-then-split: each rank keeps its column slice (free); with SP the
  // sequence split's backward all-gathers.
  const int32_t dy = tp_gather_output_grad(ctx, Site::MtpProjGradAg, g);
  const int32_t ag = tp_gather_input(ctx, Site::MtpProjWgradAg, 2 * d.h, dy);
  const int32_t dx = ctx.em.gemm(OpKind::GemmGradInput, Site::MtpProj, d.n, d.h / d.t, 2 * d.h, 1, {dy});
  Instruction w;
  w.kind = OpKind::GemmGradWeight;
  w.site = Site::MtpProj;
  w.m = d.n;
  w.n = d.h / d.t;
  w.k = 2 * d.h;
  w.flops = 2.0 * double(d.n) * double(w.n) * double(w.k);
  w.bytes = e_of(ctx) * (double(d.n) * double(w.k) + double(w.k) * double(w.n) + double(d.n) * double(w.n));
  ctx.em.weight_grad(std::move(w), param_key(layer, ParamSlot::MtpProj), {ag});
  const int32_t red = tp_reduce_input_grad(ctx, Site::MtpProjGradRs, Site::MtpProjGradAr, 2 * d.h, dx);
  const double nb = 3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx);
  const int32_t hn = ctx.em.op(OpKind::NormGrad, Site::MtpHnorm, d.sp_rows(), d.h, nb, {red});
  const int32_t en = ctx.em.op(OpKind::NormGrad, Site::MtpEnorm, d.sp_rows(), d.h, nb, {red});
  ctx.em.produced(param_key(layer, ParamSlot::MtpNorms), en);
  lookup_backward(ctx, Site::MtpEmbedding, en, false);
  return hn;
}

}  // namespace

int32_t embedding_forward(Context& ctx) {
  const Dims& d = ctx.dims;
  const int32_t saved = ctx.em.cursor.layer;
  ctx.em.cursor.layer = -1;
  int32_t x = lookup(ctx, Site::Embedding, ctx.em.take_param_gate(kEmbeddingGate));
  if (d.hidden_dropout)
    x = ctx.em.op(OpKind::Elementwise, Site::EmbedDropout, d.sp_rows(), d.h,
                  double(d.sp_rows()) * double(d.h) * (2.0 * e_of(ctx) + 1.0), {x});
  ctx.em.cursor.layer = saved;
  return x;
}

int32_t embedding_backward(Context& ctx, int32_t dy) {
  const Dims& d = ctx.dims;
  const int32_t saved = ctx.em.cursor.layer;
  ctx.em.cursor.layer = -1;
  int32_t g = dy;
  if (d.hidden_dropout)
    g = ctx.em.op(OpKind::Elementwise, Site::EmbedDropout, d.sp_rows(), d.h,
                  double(d.sp_rows()) * double(d.h) * (2.0 * e_of(ctx) + 1.0), {dy});
  g = lookup_backward(ctx, Site::Embedding, g, d.positions > 0);
  ctx.em.cursor.layer = saved;
  return g;
}

int32_t head_forward(Context& ctx, int32_t x) {
  const int32_t saved = ctx.em.cursor.layer;
  ctx.em.cursor.layer = -1;
  int32_t out = logits_forward(ctx, x), h = x;
  for (int64_t i = 0; i < ctx.dims.mtp_layers; ++i)
    h = mtp_forward(ctx, static_cast<int32_t>(ctx.dims.layers + i), h, &out);
  ctx.em.cursor.layer = saved;
  return out;
}

int32_t head_backward(Context& ctx) {
  const Dims& d = ctx.dims;
  const int32_t saved = ctx.em.cursor.layer;
  int32_t dh = -1;
  for (int64_t i = d.mtp_layers - 1; i >= 0; --i) dh = mtp_backward(ctx, static_cast<int32_t>(d.layers + i), dh);
  ctx.em.cursor.layer = -1;
  int32_t g = logits_backward(ctx, kModelLayerKey, ParamSlot::FinalNorm);
  if (dh >= 0)
    g = ctx.em.op(OpKind::Elementwise, Site::MtpGradAdd, d.sp_rows(), d.h,
                  3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {g, dh});
  ctx.em.cursor.layer = saved;
  return g;
}

// models/memory.cpp's output_activations: final-norm and output-layer inputs [n, h] / r and the
// fp32 logits [n, V/t]; each MTP module adds its norms' inputs, the projection input [n, 2h] / r,
// its layer and its own head.
double head_activation_bytes(const Context& ctx) {
  const Dims& d = ctx.dims;
  const double e = double(d.e), n = double(d.n), h = double(d.h), r = double(d.r), t = double(d.t);
  const double head = 2 * e * n * h / r + 4.0 * n * double(d.vocab) / t;
  double bytes = head;
  if (d.mtp_layers > 0) {
    const bool moe = is_moe_layer(ctx.job.model, d.layers - 1);
    const double layer = activation_bytes_per_layer(ctx.job, moe, memory_options_for(ctx.job));
    bytes += double(d.mtp_layers) * (2 * e * n * h / r + 2 * e * n * h / r + layer + head);
  }
  return bytes;
}

// The embedding's dropout mask [n/r, h], 1 byte per element.
double embedding_activation_bytes(const Context& ctx) {
  const Dims& d = ctx.dims;
  return d.hidden_dropout ? double(d.n) * double(d.h) / double(d.r) : 0.0;
}

}  // namespace tandem::lower
