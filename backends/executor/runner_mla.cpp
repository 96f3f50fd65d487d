// ModelRunner, multi-latent attention (program/lower_layer.cpp's mla_projections_*; Megatron-Core's
// MLASelfAttention with rope_type "rope"). Sizes: rows = n/r (the SP shard), hq = a/t local heads,
// ql = q_lora_rank (0: plain q projection), kl = kv_lora_rank, dn / dr / dv = qk_head_dim /
// qk_pos_emb_head_dim / v_head_dim, D = max(dn + dr, dv) the padded head width of the core.
//
//   ln1 [rows,h] -q-down-> mla.q_c [rows,ql] -q-norm-> mla.q_cn
//   ln1 -kv-down-> mla.kv_c [rows,kl+dr] = [kv latent | k_pe]; mla.kv_lat [rows,kl] -kv-norm-> mla.kv_n
//   mla.latent [rows, ql+kl+dr] = [q_cn | kv_n | k_pe] -(mla-ag with SP)-> mla.latent_full [n, ...]
//   latent[:, :ql] = mla.q_in -q-up-> mla.q [n, hq(dn+dr)]   (ql = 0: ln1(_full) -q-> mla.q)
//   latent[:, ql:ql+kl] = mla.kv_in -kv-up-> mla.kv [n, hq(dn+dv)]
//   -rope-> mla.q_pe [n, hq dr], mla.k_pe [n, dr] rotated (the single k_pe is shared by all heads)
//   -attn-> q, k, v [s,b,hq,D] (k_pe broadcast, V zero-padded), mla.o, lse -> ctx [n, hq dv]
//
// Backward: d_ctx -attn-> d_q [n, hq(dn+dr)], d_kv [n, hq(dn+dv)], mla.dq_pe, mla.dk_pe (summed
// over heads) -rope-grad-> d_q complete -kv-up / q-up grad-input-> mla.d_latent [n, ql+kl+dr]
// (a partial sum over TP: each rank holds a slice of the heads) -(mla-grad-ar | mla-grad-rs)->
// -kv-norm / q-norm grad-> kv-down / q-down grad-input -> mla.d_x_kv + mla.d_x_q -mla-grad-add-> d_ln1.
#include <algorithm>
#include <cmath>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

using lower::ParamSlot;

ColumnBlocks blocks(int64_t count, int64_t width, int64_t src_offset, int64_t src_stride, int64_t dst_offset,
                    int64_t dst_stride) {
  return ColumnBlocks{count, width, src_offset, src_stride, dst_offset, dst_stride};
}

}  // namespace

bool ModelRunner::mla_site(Site site) {
  switch (site) {
    case Site::Q: case Site::QDown: case Site::QNorm: case Site::QUp: case Site::KvDown: case Site::KvNorm:
    case Site::KvUp:
      return true;
    default:
      return false;
  }
}

int64_t ModelRunner::mla_width() const { return std::max(dims_.d_nope + dims_.d_rope, dims_.d_v); }

int64_t ModelRunner::mla_latent_cols() const { return dims_.q_lora + dims_.kv_lora + dims_.d_rope; }

// Columns [begin, begin + width) of the (gathered) latent as a contiguous [n, width] tensor.
DeviceTensor ModelRunner::mla_latent_columns(int32_t L, int32_t mb, int64_t begin, int64_t width) {
  const DeviceTensor& latent = at(L, mb, dims_.sp ? "mla.latent_full" : "mla.latent");
  DeviceTensor out = fresh({latent.dim(0), width});
  device_.copy_columns(latent, begin, out);
  return out;
}

// ---- forward ------------------------------------------------------------------------------

void ModelRunner::mla_gemm(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const lower::Dims& d = dims_;
  DeviceTensor x;
  ParamSlot slot = ParamSlot::QUp;
  std::string out;
  switch (ins.site) {
    case Site::QDown: x = at(L, mb, "ln1"), slot = ParamSlot::QDown, out = "mla.q_c"; break;
    case Site::KvDown: x = at(L, mb, "ln1"), slot = ParamSlot::KvDown, out = "mla.kv_c"; break;
    case Site::Q: x = at(L, mb, d.sp ? "ln1_full" : "ln1"), out = "mla.q"; break;
    case Site::QUp: x = put(L, mb, "mla.q_in", mla_latent_columns(L, mb, 0, d.q_lora)), out = "mla.q"; break;
    case Site::KvUp:
      x = put(L, mb, "mla.kv_in", mla_latent_columns(L, mb, d.q_lora, d.kv_lora));
      slot = ParamSlot::KvUp;
      out = "mla.kv";
      break;
    default: TANDEM_CHECK_MSG(false, "not an MLA GEMM: " << to_string(ins.site));
  }
  const Param& w = params_.get(L, slot);
  DeviceTensor y = fresh({x.dim(0), w.shape[1]});
  device_.gemm_forward(x, w.value, {}, WeightLayout::InOut, y);
  put(L, mb, out, y);
  if (ins.site == Site::KvDown) {   // the latent part, contiguous for its norm
    DeviceTensor lat = fresh({y.dim(0), d.kv_lora});
    device_.copy_columns(y, 0, lat);
    put(L, mb, "mla.kv_lat", lat);
  }
}

void ModelRunner::mla_norm(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool q = ins.site == Site::QNorm;
  const ParamSlot slot = q ? ParamSlot::QNorm : ParamSlot::KvNorm;
  const std::string out = q ? "mla.q_cn" : "mla.kv_n";
  const DeviceTensor& x = at(L, mb, q ? "mla.q_c" : "mla.kv_lat");
  Param& gamma = params_.get(L, slot);
  Param* beta = params_.find(L, slot, true);
  const int64_t rows = x.dim(0);
  DeviceTensor y = fresh(x.shape);
  DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? fresh({rows}) : DeviceTensor{};
  DeviceTensor rstd = fresh({rows});
  device_.norm_forward(settings_.norm, x, gamma.value, beta != nullptr ? beta->value : DeviceTensor{},
                       settings_.norm_eps, y, mean, rstd);
  put(L, mb, out, y);
  if (mean.defined()) put(L, mb, out + ".mean", mean);
  put(L, mb, out + ".rstd", rstd);
  if (q) return;
  // kv-norm comes after q-norm: assemble the latent [q_cn | kv_n | k_pe] that SP gathers at once.
  const lower::Dims& d = dims_;
  DeviceTensor latent = fresh({rows, mla_latent_cols()});
  if (d.q_lora > 0) device_.copy_column_blocks(at(L, mb, "mla.q_cn"), latent, blocks(1, d.q_lora, 0, 0, 0, 0), false);
  device_.copy_column_blocks(y, latent, blocks(1, d.kv_lora, 0, 0, d.q_lora, 0), false);
  device_.copy_column_blocks(at(L, mb, "mla.kv_c"), latent, blocks(1, d.d_rope, d.kv_lora, 0, d.q_lora + d.kv_lora, 0),
                             false);
  put(L, mb, "mla.latent", latent);
}

// The RoPE channels of the queries [n, hq dr] and of the shared key [n, dr], rotated when `rotate`.
void ModelRunner::mla_rope(const Instruction& ins) { mla_positional(ins.layer, ins.microbatch, ins, true); }

void ModelRunner::mla_positional(int32_t L, int32_t mb, const Instruction& ins, bool rotate) {
  const lower::Dims& d = dims_;
  const int64_t n = d.n, hq = d.heads, dr = d.d_rope;
  DeviceTensor q_pe = fresh({n, hq * dr});
  device_.copy_column_blocks(at(L, mb, "mla.q"), q_pe, blocks(hq, dr, d.d_nope, d.d_nope + dr, 0, dr), false);
  DeviceTensor k_pe = mla_latent_columns(L, mb, d.q_lora + d.kv_lora, dr);
  if (rotate) {
    const std::vector<int32_t>& pos = data(ins).positions;
    const DeviceTensor q4 = q_pe.reshaped({s_local_, d.b, hq, dr}), k4 = k_pe.reshaped({s_local_, d.b, 1, dr});
    device_.rope_forward(q4, pos, settings_.rope_base, q4);
    device_.rope_forward(k4, pos, settings_.rope_base, k4);
  }
  put(L, mb, "mla.q_pe", q_pe);
  put(L, mb, "mla.k_pe", k_pe);
}

// q = [q_nope | q_pe], k = [k_nope | k_pe broadcast], v, each zero-padded to D per head; then the
// core with softmax scale 1/sqrt(dn + dr), and ctx = the first dv channels of every head.
void ModelRunner::mla_attention(const Instruction& ins) {
  TANDEM_CHECK_MSG(ins.ring_step < 0, "multi-latent attention with context parallelism");
  const int32_t L = ins.layer, mb = ins.microbatch;
  const lower::Dims& d = dims_;
  const int64_t n = d.n, hq = d.heads, dn = d.d_nope, dr = d.d_rope, dv = d.d_v, D = mla_width();
  if (!d.rope) mla_positional(L, mb, ins, false);
  DeviceTensor q = device_.zeros({n, hq * D}), k = device_.zeros({n, hq * D}), v = device_.zeros({n, hq * D});
  const DeviceTensor &mq = at(L, mb, "mla.q"), &mkv = at(L, mb, "mla.kv");
  device_.copy_column_blocks(mq, q, blocks(hq, dn, 0, dn + dr, 0, D), false);
  device_.copy_column_blocks(at(L, mb, "mla.q_pe"), q, blocks(hq, dr, 0, dr, dn, D), false);
  device_.copy_column_blocks(mkv, k, blocks(hq, dn, 0, dn + dv, 0, D), false);
  device_.copy_column_blocks(at(L, mb, "mla.k_pe"), k, blocks(hq, dr, 0, 0, dn, D), false);
  device_.copy_column_blocks(mkv, v, blocks(hq, dv, dn, dn + dv, 0, D), false);
  const Shape heads{s_local_, d.b, hq, D};
  put(L, mb, "q", q.reshaped(heads));
  put(L, mb, "k", k.reshaped(heads));
  put(L, mb, "v", v.reshaped(heads));
  AttentionArgs args = attention_args(ins, {}, {});
  args.softmax_scale = static_cast<float>(1.0 / std::sqrt(double(dn + dr)));
  DeviceTensor out = fresh(heads), lse = fresh({d.b, hq, s_local_});
  device_.attention_forward(at(L, mb, "q"), at(L, mb, "k"), at(L, mb, "v"), args, out, lse);
  DeviceTensor ctx = fresh({n, hq * dv});
  device_.copy_column_blocks(out.reshaped({n, hq * D}), ctx, blocks(hq, dv, 0, D, 0, dv), false);
  put(L, mb, "mla.o", out);
  put(L, mb, "lse", lse);
  put(L, mb, "ctx", ctx);
}

// ---- backward -----------------------------------------------------------------------------

void ModelRunner::mla_attention_grad(const Instruction& ins) {
  TANDEM_CHECK_MSG(ins.ring_step < 0, "multi-latent attention with context parallelism");
  const int32_t L = ins.layer, mb = ins.microbatch;
  const lower::Dims& d = dims_;
  const int64_t n = d.n, hq = d.heads, dn = d.d_nope, dr = d.d_rope, dv = d.d_v, D = mla_width();
  const DeviceTensor &q = at(L, mb, "q"), &k = at(L, mb, "k"), &v = at(L, mb, "v");
  DeviceTensor d_out = device_.zeros({n, hq * D});
  device_.copy_column_blocks(at(L, mb, "d_ctx"), d_out, blocks(hq, dv, 0, dv, 0, D), false);
  AttentionArgs args = attention_args(ins, {}, {});
  args.softmax_scale = static_cast<float>(1.0 / std::sqrt(double(dn + dr)));
  DeviceTensor dq = fresh(q.shape), dk = fresh(k.shape), dvv = fresh(v.shape);
  device_.attention_backward(q, k, v, at(L, mb, "mla.o"), at(L, mb, "lse"), d_out.reshaped(q.shape), args, dq, dk,
                             dvv);
  const DeviceTensor dq2 = dq.reshaped({n, hq * D}), dk2 = dk.reshaped({n, hq * D}), dv2 = dvv.reshaped({n, hq * D});
  DeviceTensor d_q = fresh({n, hq * (dn + dr)}), d_kv = fresh({n, hq * (dn + dv)});
  device_.copy_column_blocks(dq2, d_q, blocks(hq, dn, 0, D, 0, dn + dr), false);
  device_.copy_column_blocks(dk2, d_kv, blocks(hq, dn, 0, D, 0, dn + dv), false);
  device_.copy_column_blocks(dv2, d_kv, blocks(hq, dv, 0, D, dn, dn + dv), false);
  DeviceTensor dq_pe = fresh({n, hq * dr}), dk_pe = device_.zeros({n, dr});
  device_.copy_column_blocks(dq2, dq_pe, blocks(hq, dr, dn, D, 0, dr), false);
  device_.copy_column_blocks(dk2, dk_pe, blocks(hq, dr, dn, D, 0, 0), true);   // k_pe is shared: sum the heads
  put(L, mb, "d_q", d_q);
  put(L, mb, "d_kv", d_kv);
  put(L, mb, "mla.dq_pe", dq_pe);
  put(L, mb, "mla.dk_pe", dk_pe);
  if (!d.rope) mla_finish_q_grad(L, mb);
}

void ModelRunner::mla_rope_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const std::vector<int32_t>& pos = data(ins).positions;
  const DeviceTensor q4 = at(L, mb, "mla.dq_pe").reshaped({s_local_, dims_.b, dims_.heads, dims_.d_rope});
  const DeviceTensor k4 = at(L, mb, "mla.dk_pe").reshaped({s_local_, dims_.b, 1, dims_.d_rope});
  device_.rope_backward(q4, pos, settings_.rope_base, q4);
  device_.rope_backward(k4, pos, settings_.rope_base, k4);
  mla_finish_q_grad(L, mb);
}

void ModelRunner::mla_finish_q_grad(int32_t L, int32_t mb) {
  const lower::Dims& d = dims_;
  const int64_t dn = d.d_nope, dr = d.d_rope;
  device_.copy_column_blocks(at(L, mb, "mla.dq_pe"), at(L, mb, "d_q"), blocks(d.heads, dr, 0, dr, dn, dn + dr), false);
}

void ModelRunner::mla_gemm_grad_input(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const lower::Dims& d = dims_;
  const bool kv_up = ins.site == Site::KvUp;
  if (kv_up || ins.site == Site::QUp) {   // into the latent gradient [n, ql + kl + dr]
    if (kv_up) {
      DeviceTensor dl = device_.zeros({d.n, mla_latent_cols()});
      device_.copy_column_blocks(at(L, mb, "mla.dk_pe"), dl, blocks(1, d.d_rope, 0, 0, d.q_lora + d.kv_lora, 0), false);
      put(L, mb, "mla.d_latent", dl);
    }
    const DeviceTensor& dy = at(L, mb, kv_up ? "d_kv" : "d_q");
    const DeviceTensor& w = params_.get(L, kv_up ? ParamSlot::KvUp : ParamSlot::QUp).value;
    DeviceTensor dx = fresh({dy.dim(0), w.dim(0)});
    device_.gemm_grad_input(dy, w, WeightLayout::InOut, dx);
    const int64_t at_col = kv_up ? d.q_lora : 0;
    device_.copy_column_blocks(dx, at(L, mb, "mla.d_latent"), blocks(1, w.dim(0), 0, 0, at_col, 0), false);
    return;
  }
  DeviceTensor dy;
  ParamSlot slot = ParamSlot::QUp;
  std::string out;
  switch (ins.site) {
    case Site::Q: dy = at(L, mb, "d_q"), out = "mla.d_x_q"; break;
    case Site::QDown: dy = at(L, mb, "mla.d_q_c"), slot = ParamSlot::QDown, out = "mla.d_x_q"; break;
    case Site::KvDown: dy = at(L, mb, "mla.d_kv_c"), slot = ParamSlot::KvDown, out = "mla.d_x_kv"; break;
    default: TANDEM_CHECK_MSG(false, "not an MLA GEMM: " << to_string(ins.site));
  }
  const DeviceTensor& w = params_.get(L, slot).value;
  DeviceTensor dx = fresh({dy.dim(0), d.h});
  device_.gemm_grad_input(dy, w, WeightLayout::InOut, dx);
  put(L, mb, out, dx);
}

void ModelRunner::mla_gemm_grad_weight(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  DeviceTensor x, dy;
  ParamSlot slot = ParamSlot::QUp;
  switch (ins.site) {
    case Site::Q: x = at(L, mb, dims_.sp ? "q.in_w" : "ln1"), dy = at(L, mb, "d_q"); break;
    case Site::QUp: x = at(L, mb, "mla.q_in"), dy = at(L, mb, "d_q"); break;
    case Site::KvUp: x = at(L, mb, "mla.kv_in"), dy = at(L, mb, "d_kv"), slot = ParamSlot::KvUp; break;
    case Site::QDown: x = at(L, mb, "ln1"), dy = at(L, mb, "mla.d_q_c"), slot = ParamSlot::QDown; break;
    case Site::KvDown: x = at(L, mb, "ln1"), dy = at(L, mb, "mla.d_kv_c"), slot = ParamSlot::KvDown; break;
    default: TANDEM_CHECK_MSG(false, "not an MLA GEMM: " << to_string(ins.site));
  }
  device_.gemm_grad_weight(x, dy, WeightLayout::InOut, params_.get(L, slot).grad, {});
}

// Norm gradients read their columns of the (reduced) latent gradient, on the [rows] shard.
void ModelRunner::mla_norm_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const lower::Dims& d = dims_;
  const bool q = ins.site == Site::QNorm;
  const ParamSlot slot = q ? ParamSlot::QNorm : ParamSlot::KvNorm;
  const std::string stats = q ? "mla.q_cn" : "mla.kv_n";
  const DeviceTensor& dl = at(L, mb, "mla.d_latent");
  const DeviceTensor& x = at(L, mb, q ? "mla.q_c" : "mla.kv_lat");
  TANDEM_CHECK_MSG(dl.dim(0) == x.dim(0), "latent gradient rows " << dl.dim(0) << " vs " << x.dim(0));
  const int64_t width = x.dim(1);
  DeviceTensor dy = fresh(x.shape);
  device_.copy_columns(dl, q ? 0 : d.q_lora, dy);
  Param& gamma = params_.get(L, slot);
  Param* beta = params_.find(L, slot, true);
  const DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? at(L, mb, stats + ".mean") : DeviceTensor{};
  DeviceTensor dx = fresh(x.shape);
  device_.norm_backward(settings_.norm, x, gamma.value, mean, at(L, mb, stats + ".rstd"), dy, dx, gamma.grad,
                        beta != nullptr ? beta->grad : DeviceTensor{});
  if (q) {
    put(L, mb, "mla.d_q_c", dx);
    return;
  }
  DeviceTensor d_kv_c = fresh({x.dim(0), width + d.d_rope});   // [d latent | d k_pe]
  device_.copy_column_blocks(dx, d_kv_c, blocks(1, width, 0, 0, 0, 0), false);
  device_.copy_column_blocks(dl, d_kv_c, blocks(1, d.d_rope, d.q_lora + d.kv_lora, 0, width, 0), false);
  put(L, mb, "mla.d_kv_c", d_kv_c);
}

void ModelRunner::mla_add(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const DeviceTensor& a = at(L, mb, "mla.d_x_kv");
  DeviceTensor sum = fresh(a.shape);
  device_.add(a, at(L, mb, "mla.d_x_q"), sum);
  put(L, mb, "d_ln1", sum);
}

}  // namespace tandem::exec
