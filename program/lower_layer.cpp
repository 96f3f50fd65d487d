// One decoder layer, forward and backward (Megatron-Core's TransformerLayer):
//
//   x [n/r, h] -> input norm -> (SP: all-gather [n, h]) -> QKV / MLA projections (column-parallel)
//     -> RoPE -> attention core (CP: ring exchange of K/V, one step per CP rank)
//     -> output projection (row-parallel) -> (SP: reduce-scatter, else all-reduce [n, h])
//     -> bias-dropout-add -> pre-MLP norm -> MLP (fc1 column-, fc2 row-parallel) or MoE block
//     -> bias-dropout-add
//
// n = s/CP * b local tokens, r = TP with sequence parallelism (else 1), t = TP. Column-parallel
// layers split their output columns over TP, row-parallel layers their input columns. The
// backward mirrors it: the backward of an all-gather is a reduce-scatter, of a reduce-scatter an
// all-gather, of the row-parallel all-reduce nothing, and of the column-parallel input's identity
// an all-reduce. With SP the weight gradient of a column-parallel layer all-gathers its saved
// input [n/t, h] again (Megatron's LinearWithGradAccumulationAndAsyncCommunication).
#include "core/check.h"
#include "program/lower_context.h"

namespace tandem::lower {
namespace {

double e_of(const Context& ctx) { return double(ctx.dims.e); }

// Emits `body`'s instructions as recomputation (selective recompute's replays in the backward).
template <typename F>
void replay(Context& ctx, F body) {
  ctx.em.cursor.recompute = true;
  body();
  ctx.em.cursor.recompute = false;
}

int32_t norm(Context& ctx, Site site, int64_t rows, int64_t cols, Deps deps) {
  return ctx.em.op(OpKind::Norm, site, rows, cols, 2.0 * double(rows) * double(cols) * e_of(ctx), deps);
}

int32_t norm_grad(Context& ctx, Site site, int64_t rows, int64_t cols, int32_t layer, ParamSlot slot,
                  Deps deps) {
  const int32_t i = ctx.em.op(OpKind::NormGrad, site, rows, cols, 3.0 * double(rows) * double(cols) * e_of(ctx), deps);
  ctx.em.produced(param_key(layer, slot), i);
  return i;
}

// Bias-dropout-add over the [n/r, h] shard: read x and the residual, write the sum, the mask.
int32_t residual(Context& ctx, Site site, Deps deps) {
  const Dims& d = ctx.dims;
  const double rows = double(d.sp_rows()), mask = d.hidden_dropout ? 1.0 : 0.0;
  return ctx.em.op(OpKind::Elementwise, site, d.sp_rows(), d.h, rows * double(d.h) * (3.0 * e_of(ctx) + mask), deps);
}

// Weight gradient dW [k, n] = X^T [k, m] x dY [m, n] of parameter (layer, slot).
int32_t weight_grad(Context& ctx, Site site, int64_t m, int64_t n, int64_t k, int32_t layer, ParamSlot slot,
                    Deps deps) {
  Instruction ins;
  ins.kind = OpKind::GemmGradWeight;
  ins.site = site;
  ins.m = m;
  ins.n = n;
  ins.k = k;
  ins.flops = 2.0 * double(m) * double(n) * double(k);
  ins.bytes = e_of(ctx) * (double(m) * double(k) + double(k) * double(n) + double(m) * double(n));
  return ctx.em.weight_grad(std::move(ins), param_key(layer, slot), deps);
}

}  // namespace

// ---- TP communication around column- and row-parallel layers --------------------------------

int32_t tp_gather_input(Context& ctx, Site site, int64_t cols, int32_t x) {
  if (!ctx.dims.sp) return x;
  const double bytes = double(ctx.dims.n) * double(cols) * e_of(ctx);
  return ctx.em.collective(OpKind::AllGather, ParallelGroup::Tp, StreamKind::TpComm, site, bytes, {x});
}

int32_t tp_reduce_output(Context& ctx, Site rs_site, Site ar_site, int32_t x) {
  if (ctx.tp == 1) return x;
  const double bytes = double(ctx.dims.n) * double(ctx.dims.h) * e_of(ctx);
  const OpKind kind = ctx.dims.sp ? OpKind::ReduceScatter : OpKind::AllReduce;
  return ctx.em.collective(kind, ParallelGroup::Tp, StreamKind::TpComm, ctx.dims.sp ? rs_site : ar_site, bytes, {x});
}

int32_t tp_gather_output_grad(Context& ctx, Site site, int32_t dy) {
  return tp_gather_input(ctx, site, ctx.dims.h, dy);
}

int32_t tp_reduce_input_grad(Context& ctx, Site rs_site, Site ar_site, int64_t cols, int32_t dx,
                             int32_t wgrad) {
  if (ctx.tp == 1) return dx;
  const double bytes = double(ctx.dims.n) * double(cols) * e_of(ctx);
  const OpKind kind = ctx.dims.sp ? OpKind::ReduceScatter : OpKind::AllReduce;
  // Synchronous: the reduction is issued after the weight gradient, so it cannot hide behind it.
  const int32_t after = ctx.job.parallel.async_tensor_model_parallel_allreduce ? -1 : wgrad;
  return ctx.em.collective(kind, ParallelGroup::Tp, StreamKind::TpComm, ctx.dims.sp ? rs_site : ar_site, bytes,
                           {dx, after});
}

// ---- attention core -----------------------------------------------------------------------

namespace {

// HBM traffic of one flash-attention call over sq queries and skv keys (Q, O, K, V; with an
// unfused kernel also the [heads, sq, skv] scores, softmax, dropout mask and output).
double attention_bytes(const Dims& d, int64_t sq, int64_t skv) {
  const double e = double(d.e), b = double(d.b);
  const double qo = double(sq) * double(d.heads) * double(d.qk_head_dim() + d.v_head_dim());
  const double kv = double(skv) * double(d.mla ? d.heads : d.kv_heads) * double(d.qk_head_dim() + d.v_head_dim());
  double bytes = e * b * (qo + kv);
  if (!d.flash) bytes += b * double(d.heads) * double(sq) * double(skv) * (4.0 * e + 1.0);
  return bytes;
}

int32_t attention_op(Context& ctx, OpKind kind, int64_t sq, int64_t skv, int16_t step, Deps deps) {
  const Dims& d = ctx.dims;
  Instruction ins;
  ins.kind = kind;
  ins.site = Site::Attn;
  ins.m = sq;
  ins.n = skv;
  ins.k = d.qk_head_dim();
  ins.batch = d.b * d.heads;
  ins.ring_step = step;
  // QK^T and softmax x V over the full sq x skv square (the convention of models/accounting).
  const double fwd = 2.0 * double(ins.batch) * double(sq) * double(skv) * double(d.qk_head_dim() + d.v_head_dim());
  ins.flops = kind == OpKind::Attention ? fwd : 2.0 * fwd;
  ins.bytes = attention_bytes(d, sq, skv) * (kind == OpKind::Attention ? 1.0 : 2.0);
  return ctx.em.add(std::move(ins), deps);
}

// K and V of the local sequence chunk: what one CP ring step passes on.
double cp_kv_bytes(const Context& ctx) {
  const Dims& d = ctx.dims;
  const int64_t heads = d.mla ? d.heads : d.kv_heads;
  return double(d.n) * double(heads) * double(d.qk_head_dim() + d.v_head_dim()) * e_of(ctx);
}

}  // namespace

// Forward of the core. With CP each rank holds 2 of the 2*CP sequence chunks (causal load
// balancing) and passes K/V around the ring: CP steps of s/CP queries x s/CP keys each.
int32_t attention_core_forward(Context& ctx, int32_t layer, int32_t x) {
  const Dims& d = ctx.dims;
  const int64_t sq = d.s / d.cp;
  if (ctx.cp == 1) return attention_op(ctx, OpKind::Attention, sq, d.s, -1, {x});
  const double bytes = cp_kv_bytes(ctx);
  const bool rc = ctx.em.cursor.recompute;
  int32_t kv = x, out = x;
  for (int64_t step = 0; step < ctx.cp; ++step) {
    int32_t next = -1;
    if (step + 1 < ctx.cp) {
      const int64_t tag = make_tag(TagPurpose::CpForward, rc, layer, ctx.em.cursor.microbatch, step);
      const int32_t s = ctx.em.send(ParallelGroup::Cp, StreamKind::CpComm, Site::CpKv, ctx.cp_next, tag, bytes, {kv});
      ctx.em.program().instructions[static_cast<size_t>(s)].ring_step = static_cast<int16_t>(step);
      next = ctx.em.recv(ParallelGroup::Cp, StreamKind::CpComm, Site::CpKv, ctx.cp_prev, tag, bytes);
      ctx.em.program().instructions[static_cast<size_t>(next)].ring_step = static_cast<int16_t>(step);
    }
    out = attention_op(ctx, OpKind::Attention, sq, sq, static_cast<int16_t>(step), {kv, x});
    kv = next;
  }
  return out;
}

// Backward of the core: the ring passes K/V with the accumulating dK/dV, then returns dK/dV.
int32_t attention_core_backward(Context& ctx, int32_t layer, int32_t dy) {
  const Dims& d = ctx.dims;
  const int64_t sq = d.s / d.cp;
  if (ctx.cp == 1) return attention_op(ctx, OpKind::AttentionGrad, sq, d.s, -1, {dy});
  const double kv = cp_kv_bytes(ctx);
  const int32_t mb = ctx.em.cursor.microbatch;
  int32_t have = dy, out = dy;
  for (int64_t step = 0; step < ctx.cp; ++step) {
    const bool last = step + 1 == ctx.cp;
    out = attention_op(ctx, OpKind::AttentionGrad, sq, sq, static_cast<int16_t>(step), {have, dy});
    // After each step the block moves on: K/V + dK/dV, the last time dK/dV back to its owner.
    const int64_t tag = make_tag(TagPurpose::CpBackward, false, layer, mb, step);
    const double bytes = last ? kv : 2.0 * kv;
    Site site = last ? Site::CpDkv : Site::CpKvDkv;
    const int32_t s = ctx.em.send(ParallelGroup::Cp, StreamKind::CpComm, site, ctx.cp_next, tag, bytes, {out});
    ctx.em.program().instructions[static_cast<size_t>(s)].ring_step = static_cast<int16_t>(step);
    have = ctx.em.recv(ParallelGroup::Cp, StreamKind::CpComm, site, ctx.cp_prev, tag, bytes);
    ctx.em.program().instructions[static_cast<size_t>(have)].ring_step = static_cast<int16_t>(step);
  }
  return have;
}

// ---- attention block ------------------------------------------------------------------------

namespace {

int32_t rope(Context& ctx, OpKind kind, int64_t heads, int64_t rot_dim, Deps deps) {
  const Dims& d = ctx.dims;
  if (!d.rope) return -1;
  const double bytes = 2.0 * double(d.n) * double(heads) * double(rot_dim) * e_of(ctx);
  return ctx.em.op(kind, Site::Rope, d.n, heads * rot_dim, bytes, deps);
}

// MLA projections: down projections (TP-replicated) on the [n/r, h] shard, their norms, one
// all-gather of the latents with SP, then the column-parallel up projections on n rows.
int32_t mla_projections_forward(Context& ctx, int32_t x) {
  const Dims& d = ctx.dims;
  const int64_t rows = d.sp_rows();
  int32_t q = x, hidden = x;
  int64_t latent = d.kv_lora + d.d_rope;
  if (d.q_lora > 0) {
    q = ctx.em.gemm(OpKind::Gemm, Site::QDown, rows, d.q_lora, d.h, 1, {x});
    q = norm(ctx, Site::QNorm, rows, d.q_lora, {q});
    latent += d.q_lora;
  } else {
    hidden = tp_gather_input(ctx, Site::QAg, d.h, x);
  }
  int32_t kv = ctx.em.gemm(OpKind::Gemm, Site::KvDown, rows, d.kv_lora + d.d_rope, d.h, 1, {x});
  kv = norm(ctx, Site::KvNorm, rows, d.kv_lora, {kv});
  const int32_t gathered = tp_gather_input(ctx, Site::MlaAg, latent, kv);
  const int64_t q_cols = d.heads * (d.d_nope + d.d_rope);
  if (d.q_lora > 0) q = ctx.em.gemm(OpKind::Gemm, Site::QUp, d.n, q_cols, d.q_lora, 1, {gathered, q});
  else q = ctx.em.gemm(OpKind::Gemm, Site::Q, d.n, q_cols, d.h, 1, {hidden});
  kv = ctx.em.gemm(OpKind::Gemm, Site::KvUp, d.n, d.heads * (d.d_nope + d.d_v), d.kv_lora, 1, {gathered, q});
  const int32_t r = rope(ctx, OpKind::Rope, d.heads + 1, d.d_rope, {kv});
  return r >= 0 ? r : kv;
}

// The up projections and RoPE again (--recompute-modules mla_up_proj): Q, K, V from the kept latents.
void mla_up_projections_replay(Context& ctx) {
  const Dims& d = ctx.dims;
  const int64_t q_cols = d.heads * (d.d_nope + d.d_rope);
  if (d.q_lora > 0) ctx.em.gemm(OpKind::Gemm, Site::QUp, d.n, q_cols, d.q_lora, 1, {});
  const int32_t kv = ctx.em.gemm(OpKind::Gemm, Site::KvUp, d.n, d.heads * (d.d_nope + d.d_v), d.kv_lora, 1, {});
  rope(ctx, OpKind::Rope, d.heads + 1, d.d_rope, {kv});
}

int32_t mla_projections_backward(Context& ctx, int32_t layer, int32_t dqkv) {
  const Dims& d = ctx.dims;
  const int64_t rows = d.sp_rows();
  const int32_t r = rope(ctx, OpKind::RopeGrad, d.heads + 1, d.d_rope, {dqkv});
  const int32_t g = r >= 0 ? r : dqkv;
  const int64_t kv_cols = d.heads * (d.d_nope + d.d_v), q_cols = d.heads * (d.d_nope + d.d_rope);
  int32_t dx = ctx.em.gemm(OpKind::GemmGradInput, Site::KvUp, d.n, kv_cols, d.kv_lora, 1, {g});
  weight_grad(ctx, Site::KvUp, d.n, kv_cols, d.kv_lora, layer, ParamSlot::KvUp, {g});
  int64_t latent = d.kv_lora + d.d_rope;
  int32_t dhidden = -1;
  if (d.q_lora > 0) {
    dx = ctx.em.gemm(OpKind::GemmGradInput, Site::QUp, d.n, q_cols, d.q_lora, 1, {g});
    weight_grad(ctx, Site::QUp, d.n, q_cols, d.q_lora, layer, ParamSlot::QUp, {g});
    latent += d.q_lora;
  } else {
    const int32_t ag = tp_gather_input(ctx, Site::QWgradAg, d.h, g);
    dhidden = ctx.em.gemm(OpKind::GemmGradInput, Site::Q, d.n, q_cols, d.h, 1, {g});
    const int32_t w = weight_grad(ctx, Site::Q, d.n, q_cols, d.h, layer, ParamSlot::QUp, {ag});
    dhidden = tp_reduce_input_grad(ctx, Site::QGradRs, Site::QGradAr, d.h, dhidden, w);
  }
  // Latent gradients are partial sums over TP (each rank holds a slice of the up projections).
  const int32_t dl = tp_reduce_input_grad(ctx, Site::MlaGradRs, Site::MlaGradAr, latent, dx);
  int32_t dkv = norm_grad(ctx, Site::KvNorm, rows, d.kv_lora, layer, ParamSlot::KvNorm, {dl});
  const int32_t down = ctx.em.gemm(OpKind::GemmGradInput, Site::KvDown, rows, d.kv_lora + d.d_rope, d.h, 1, {dkv});
  weight_grad(ctx, Site::KvDown, rows, d.kv_lora + d.d_rope, d.h, layer, ParamSlot::KvDown, {dkv});
  int32_t out = down;
  if (d.q_lora > 0) {
    const int32_t dq = norm_grad(ctx, Site::QNorm, rows, d.q_lora, layer, ParamSlot::QNorm, {dl});
    out = ctx.em.gemm(OpKind::GemmGradInput, Site::QDown, rows, d.q_lora, d.h, 1, {dq});
    weight_grad(ctx, Site::QDown, rows, d.q_lora, d.h, layer, ParamSlot::QDown, {dq});
  }
  return ctx.em.op(OpKind::Elementwise, Site::MlaGradAdd, rows, d.h, 3.0 * double(rows) * double(d.h) * e_of(ctx),
                   {out, dhidden});
}

int32_t qkv_forward(Context& ctx, int32_t x) {
  const Dims& d = ctx.dims;
  const int32_t in = tp_gather_input(ctx, Site::QkvAg, d.h, x);
  const int64_t cols = (d.heads + 2 * d.kv_heads) * d.d;
  const int32_t qkv = ctx.em.gemm(OpKind::Gemm, Site::Qkv, d.n, cols, d.h, 1, {in});
  const int32_t r = rope(ctx, OpKind::Rope, d.heads + d.kv_heads, d.d, {qkv});
  return r >= 0 ? r : qkv;
}

int32_t qkv_backward(Context& ctx, int32_t layer, int32_t dqkv) {
  const Dims& d = ctx.dims;
  const int32_t r = rope(ctx, OpKind::RopeGrad, d.heads + d.kv_heads, d.d, {dqkv});
  const int32_t g = r >= 0 ? r : dqkv;
  const int64_t cols = (d.heads + 2 * d.kv_heads) * d.d;
  const int32_t ag = tp_gather_input(ctx, Site::QkvWgradAg, d.h, g);
  const int32_t dx = ctx.em.gemm(OpKind::GemmGradInput, Site::Qkv, d.n, cols, d.h, 1, {g});
  const int32_t w = weight_grad(ctx, Site::Qkv, d.n, cols, d.h, layer, ParamSlot::Qkv, {ag});
  return tp_reduce_input_grad(ctx, Site::QkvGradRs, Site::QkvGradAr, d.h, dx, w);
}

int32_t attention_block_forward(Context& ctx, int32_t layer, int32_t x) {
  const Dims& d = ctx.dims;
  const int32_t gate = ctx.em.take_param_gate(layer);
  const int32_t normed = norm(ctx, Site::InputNorm, d.sp_rows(), d.h, {x, gate});
  const int32_t qkv = d.mla ? mla_projections_forward(ctx, normed) : qkv_forward(ctx, normed);
  const int32_t core = attention_core_forward(ctx, layer, qkv);
  const int32_t proj = ctx.em.gemm(OpKind::Gemm, Site::Proj, d.n, d.h, d.heads * d.v_head_dim(), 1, {core});
  const int32_t out = tp_reduce_output(ctx, Site::ProjRs, Site::ProjAr, proj);
  return residual(ctx, Site::AttnResidual, {out});
}

int32_t attention_block_backward(Context& ctx, int32_t layer, int32_t dy, const LayerOptions& options) {
  const Dims& d = ctx.dims;
  const int32_t ddrop = residual(ctx, Site::AttnResidual, {dy});
  const int32_t g = tp_gather_output_grad(ctx, Site::ProjGradAg, ddrop);
  const int64_t k = d.heads * d.v_head_dim();
  const int32_t dcore = ctx.em.gemm(OpKind::GemmGradInput, Site::Proj, d.n, d.h, k, 1, {g});
  weight_grad(ctx, Site::Proj, d.n, d.h, k, layer, ParamSlot::Proj, {g});
  ctx.em.cursor.recompute = true;
  if (options.mla_up_proj && d.mla) mla_up_projections_replay(ctx);
  if (options.core_attn) attention_core_forward(ctx, layer, -1);
  ctx.em.cursor.recompute = false;
  const int32_t dqkv = attention_core_backward(ctx, layer, dcore);
  if (options.layernorm) replay(ctx, [&] { norm(ctx, Site::InputNorm, d.sp_rows(), d.h, {}); });
  const int32_t dx = d.mla ? mla_projections_backward(ctx, layer, dqkv) : qkv_backward(ctx, layer, dqkv);
  const int32_t dn = norm_grad(ctx, Site::InputNorm, d.sp_rows(), d.h, layer, ParamSlot::InputNorm, {dx});
  return ctx.em.op(OpKind::Elementwise, Site::ResidualGrad, d.sp_rows(), d.h,
                   3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {dn, dy});
}

}  // namespace

// ---- MLP ---------------------------------------------------------------------------------

int32_t mlp_core_forward(Context& ctx, const MlpNames& names, int64_t ffn, int32_t x) {
  const Dims& d = ctx.dims;
  const int32_t in = tp_gather_input(ctx, names.fc1_ag, d.h, x);
  const int64_t f_local = ffn / d.t;
  const int32_t fc1 = ctx.em.gemm(OpKind::Gemm, names.fc1, d.n, d.mlp_fc1_cols(f_local), d.h, 1, {in});
  const double act_bytes = double(d.n) * double(f_local) * e_of(ctx) * (d.gated ? 3.0 : 2.0);
  const int32_t act = ctx.em.op(OpKind::Activation, names.act, d.n, f_local, act_bytes, {fc1});
  const int32_t fc2 = ctx.em.gemm(OpKind::Gemm, names.fc2, d.n, d.h, f_local, 1, {act});
  return tp_reduce_output(ctx, names.fc2_rs, names.fc2_ar, fc2);
}

int32_t mlp_core_backward(Context& ctx, const MlpNames& names, int64_t ffn, int32_t layer, int32_t dy) {
  const Dims& d = ctx.dims;
  const int64_t f_local = ffn / d.t;
  const int32_t g = tp_gather_output_grad(ctx, names.fc2_grad_ag, dy);
  const int32_t dact = ctx.em.gemm(OpKind::GemmGradInput, names.fc2, d.n, d.h, f_local, 1, {g});
  weight_grad(ctx, names.fc2, d.n, d.h, f_local, layer, names.fc2_slot, {g});
  const double act_bytes = double(d.n) * double(f_local) * e_of(ctx) * (d.gated ? 5.0 : 3.0);
  const int32_t dfc1 = ctx.em.op(OpKind::ActivationGrad, names.act, d.n, f_local, act_bytes, {dact});
  const int64_t cols = d.mlp_fc1_cols(f_local);
  const int32_t ag = tp_gather_input(ctx, names.fc1_wgrad_ag, d.h, dfc1);
  const int32_t dx = ctx.em.gemm(OpKind::GemmGradInput, names.fc1, d.n, cols, d.h, 1, {dfc1});
  const int32_t w = weight_grad(ctx, names.fc1, d.n, cols, d.h, layer, names.fc1_slot, {ag});
  return tp_reduce_input_grad(ctx, names.fc1_grad_rs, names.fc1_grad_ar, d.h, dx, w);
}

namespace {

const MlpNames kDenseMlp{Site::Fc1Ag, Site::Fc1, Site::Act, Site::Fc2, Site::Fc2Rs, Site::Fc2Ar, Site::Fc2GradAg, Site::Fc1WgradAg,
                         Site::Fc1GradRs, Site::Fc1GradAr, ParamSlot::Fc1, ParamSlot::Fc2};

int32_t mlp_block_forward(Context& ctx, bool moe, int32_t x) {
  const Dims& d = ctx.dims;
  const int32_t normed = norm(ctx, Site::PreMlpNorm, d.sp_rows(), d.h, {x});
  const int32_t out = moe ? moe_forward(ctx, normed) : mlp_core_forward(ctx, kDenseMlp, d.f, normed);
  return residual(ctx, Site::MlpResidual, {out});
}

int32_t mlp_block_backward(Context& ctx, int32_t layer, bool moe, int32_t dy, const LayerOptions& options) {
  const Dims& d = ctx.dims;
  const int32_t ddrop = residual(ctx, Site::MlpResidual, {dy});
  replay(ctx, [&] {
    if (options.layernorm) norm(ctx, Site::PreMlpNorm, d.sp_rows(), d.h, {});
    if (!moe && options.mlp) mlp_core_forward(ctx, kDenseMlp, d.f, -1);
    if (moe && options.moe) moe_forward(ctx, -1);
  });
  const int32_t dx = moe ? moe_backward(ctx, layer, ddrop, options) : mlp_core_backward(ctx, kDenseMlp, d.f, layer, ddrop);
  const int32_t dn = norm_grad(ctx, Site::PreMlpNorm, d.sp_rows(), d.h, layer, ParamSlot::PreMlpNorm, {dx});
  return ctx.em.op(OpKind::Elementwise, Site::ResidualGrad, d.sp_rows(), d.h,
                   3.0 * double(d.sp_rows()) * double(d.h) * e_of(ctx), {dn, dy});
}

}  // namespace

int32_t layer_forward(Context& ctx, int32_t layer, bool moe, int32_t x) {
  const int32_t saved_layer = ctx.em.cursor.layer;
  ctx.em.cursor.layer = layer;
  const int32_t a = attention_block_forward(ctx, layer, x);
  const int32_t out = mlp_block_forward(ctx, moe, a);
  ctx.em.cursor.layer = saved_layer;
  return out;
}

int32_t layer_backward(Context& ctx, int32_t layer, bool moe, int32_t dy, const LayerOptions& options) {
  const int32_t saved_layer = ctx.em.cursor.layer;
  ctx.em.cursor.layer = layer;
  const int32_t m = mlp_block_backward(ctx, layer, moe, dy, options);
  const int32_t out = attention_block_backward(ctx, layer, m, options);
  ctx.em.cursor.layer = saved_layer;
  return out;
}

LayerOptions layer_options(const Job& job) {
  const auto& t = job.training;
  LayerOptions o;
  o.core_attn = t.recomputes(RecomputeModule::CoreAttn);
  o.layernorm = t.recomputes(RecomputeModule::Layernorm);
  o.mla_up_proj = t.recomputes(RecomputeModule::MlaUpProj);
  o.mlp = t.recomputes(RecomputeModule::Mlp);
  o.moe = t.recomputes(RecomputeModule::Moe);
  o.moe_act = t.recomputes(RecomputeModule::MoeAct) && !o.moe;
  o.shared_experts = t.recomputes(RecomputeModule::SharedExperts) && !o.moe;
  return o;
}

}  // namespace tandem::lower
