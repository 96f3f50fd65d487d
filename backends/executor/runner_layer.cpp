// ModelRunner, one decoder layer: norms, GEMMs, RoPE, attention, activations, residuals.
#include <cstring>

#include "backends/executor/init_rng.h"
#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

using lower::ParamSlot;

bool shared_mlp(const Instruction& ins) {
  return ins.site == Site::SharedFc1 || ins.site == Site::SharedFc2 || ins.site == Site::SharedAct;
}
bool expert_op(const Instruction& ins) {
  return ins.site == Site::ExpertFc1 || ins.site == Site::ExpertFc2 || ins.site == Site::ExpertAct;
}
std::string mlp_prefix(const Instruction& ins) { return shared_mlp(ins) ? "shared." : "mlp."; }
DeviceTensor grad_or_none(Param* p) { return p != nullptr ? p->grad : DeviceTensor{}; }
DeviceTensor value_or_none(Param* p) { return p != nullptr ? p->value : DeviceTensor{}; }

}  // namespace

// ---- norms --------------------------------------------------------------------------------

void ModelRunner::norm(const Instruction& ins) {
  if (mla_site(ins.site)) return mla_norm(ins);
  if (ins.site == Site::MtpEnorm || ins.site == Site::MtpHnorm || (ins.site == Site::FinalNorm && mtp_layer(ins.layer)))
    return mtp_norm(ins);
  const int32_t mb = ins.microbatch;
  int32_t scope = ins.layer;
  ParamSlot slot = ParamSlot::InputNorm;
  std::string out = "ln1";
  DeviceTensor x;
  if (ins.site == Site::InputNorm) {
    x = ins.recompute ? at(scope, mb, "x") : put(scope, mb, "x", hidden(ins));
  } else if (ins.site == Site::PreMlpNorm) {
    slot = ParamSlot::PreMlpNorm;
    out = "ln2";
    x = at(scope, mb, "h1");
  } else {
    scope = kHead;
    slot = ParamSlot::FinalNorm;
    out = "final_ln";
    x = put(kHead, mb, "x", hidden(ins));
  }
  const int32_t layer = scope == kHead ? lower::kModelLayerKey : scope;
  Param& gamma = params_.get(layer, slot);
  Param* beta = params_.find(layer, slot, true);
  const int64_t rows = x.dim(0);
  DeviceTensor y = fresh({rows, dims_.h});
  DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? fresh({rows}) : DeviceTensor{};
  DeviceTensor rstd = fresh({rows});
  device_.norm_forward(settings_.norm, x, gamma.value, value_or_none(beta), settings_.norm_eps, y, mean, rstd);
  put(scope, mb, out, y);
  if (mean.defined()) put(scope, mb, out + ".mean", mean);
  put(scope, mb, out + ".rstd", rstd);
}

void ModelRunner::norm_grad(const Instruction& ins) {
  if (mla_site(ins.site)) return mla_norm_grad(ins);
  if (ins.site == Site::MtpEnorm || ins.site == Site::MtpHnorm || (ins.site == Site::FinalNorm && mtp_layer(ins.layer)))
    return mtp_norm_grad(ins);
  const int32_t mb = ins.microbatch;
  int32_t scope = ins.layer;
  ParamSlot slot = ParamSlot::InputNorm;
  std::string x_name = "x", stats = "ln1", dy_name = "d_ln1", out = "d_norm.attn";
  if (ins.site == Site::PreMlpNorm) {
    slot = ParamSlot::PreMlpNorm;
    x_name = "h1";
    stats = "ln2";
    dy_name = "d_mlp_in";
    out = "d_norm.mlp";
  } else if (ins.site == Site::FinalNorm) {
    scope = kHead;
    slot = ParamSlot::FinalNorm;
    stats = "final_ln";
    dy_name = "d_final";
  }
  const int32_t layer = scope == kHead ? lower::kModelLayerKey : scope;
  Param& gamma = params_.get(layer, slot);
  Param* beta = params_.find(layer, slot, true);
  const DeviceTensor& x = at(scope, mb, x_name);
  const DeviceTensor mean = settings_.norm == NormKind::LayerNorm ? at(scope, mb, stats + ".mean") : DeviceTensor{};
  DeviceTensor dx = fresh(x.shape);
  device_.norm_backward(settings_.norm, x, gamma.value, mean, at(scope, mb, stats + ".rstd"), at(scope, mb, dy_name),
                        dx, gamma.grad, grad_or_none(beta));
  if (scope == kHead) put(stream_scope(ins.chunk), mb, "grad", dx);
  else put(scope, mb, out, dx);
}

// ---- GEMMs --------------------------------------------------------------------------------

namespace {

struct GemmOperands {
  Param* weight = nullptr;
  Param* bias = nullptr;
  WeightLayout layout = WeightLayout::InOut;
};

}  // namespace

void ModelRunner::gemm(const Instruction& ins) {
  if (expert_op(ins)) return expert_gemm(ins);
  if (mla_site(ins.site)) return mla_gemm(ins);
  if (ins.site == Site::MtpProj) return mtp_gemm(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool sp = dims_.sp;
  if (ins.site == Site::Qkv) {
    const DeviceTensor& x = at(L, mb, sp ? "ln1_full" : "ln1");
    Param& w = params_.get(L, ParamSlot::Qkv);
    DeviceTensor y = fresh({x.dim(0), w.shape[1]});
    device_.gemm_forward(x, w.value, value_or_none(params_.find(L, ParamSlot::Qkv, true)), WeightLayout::InOut, y);
    put(L, mb, "qkv", y);
    if (!dims_.rope) split_heads(L, mb);   // with RoPE, the Rope instruction splits the heads
  } else if (ins.site == Site::Proj) {
    const DeviceTensor& x = at(L, mb, "ctx");
    Param& w = params_.get(L, ParamSlot::Proj);
    DeviceTensor y = fresh({x.dim(0), dims_.h});
    device_.gemm_forward(x, w.value, {}, WeightLayout::InOut, y);
    put(L, mb, "proj", y);
  } else if (ins.site == Site::Fc1 || ins.site == Site::SharedFc1) {
    const std::string p = mlp_prefix(ins);
    const ParamSlot slot = shared_mlp(ins) ? ParamSlot::SharedFc1 : ParamSlot::Fc1;
    const DeviceTensor& x = at(L, mb, sp ? p + "in_full" : "ln2");
    Param& w = params_.get(L, slot);
    DeviceTensor y = fresh({x.dim(0), w.shape[1]});
    device_.gemm_forward(x, w.value, value_or_none(params_.find(L, slot, true)), WeightLayout::InOut, y);
    put(L, mb, p + "fc1", y);
  } else if (ins.site == Site::Fc2 || ins.site == Site::SharedFc2) {
    const std::string p = mlp_prefix(ins);
    const DeviceTensor& x = at(L, mb, p + "act");
    Param& w = params_.get(L, shared_mlp(ins) ? ParamSlot::SharedFc2 : ParamSlot::Fc2);
    DeviceTensor y = fresh({x.dim(0), dims_.h});
    device_.gemm_forward(x, w.value, {}, WeightLayout::InOut, y);
    put(L, mb, p + "out", y);
  } else {   // output layer: logits [n, V/t] = x [n, h] . E^T, E [V/t, h]
    const DeviceTensor& x = at(head_scope(ins), mb, sp ? "in_full" : "final_ln");
    Param& w = params_.get(lower::kModelLayerKey, dims_.tied ? ParamSlot::WordEmbedding : ParamSlot::Output);
    DeviceTensor y = fresh({x.dim(0), vocab_local_});
    device_.gemm_forward(x, w.value, {}, WeightLayout::OutIn, y);
    put(head_scope(ins), mb, "logits", y);
  }
}

void ModelRunner::gemm_grad_input(const Instruction& ins) {
  if (expert_op(ins)) return expert_gemm_grad_input(ins);
  if (mla_site(ins.site)) return mla_gemm_grad_input(ins);
  if (ins.site == Site::MtpProj) return mtp_gemm_grad_input(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool sp = dims_.sp;
  DeviceTensor dy, w;
  WeightLayout layout = WeightLayout::InOut;
  int32_t scope = L;
  std::string out;
  int64_t cols = dims_.h;
  if (ins.site == Site::Qkv) {
    dy = at(L, mb, "d_qkv");
    w = params_.get(L, ParamSlot::Qkv).value;
    out = "d_ln1";
  } else if (ins.site == Site::Proj) {
    dy = at(L, mb, sp ? "d_proj_full" : "g_attn");
    w = params_.get(L, ParamSlot::Proj).value;
    out = "d_ctx";
    cols = w.dim(0);
  } else if (ins.site == Site::Fc1 || ins.site == Site::SharedFc1) {
    const std::string p = mlp_prefix(ins);
    dy = at(L, mb, p + "d_fc1");
    w = params_.get(L, shared_mlp(ins) ? ParamSlot::SharedFc1 : ParamSlot::Fc1).value;
    out = shared_mlp(ins) ? "shared.d_in" : "d_mlp_in";
  } else if (ins.site == Site::Fc2 || ins.site == Site::SharedFc2) {
    const std::string p = mlp_prefix(ins);
    dy = at(L, mb, sp ? p + "d_out_full" : "g_mlp");
    w = params_.get(L, shared_mlp(ins) ? ParamSlot::SharedFc2 : ParamSlot::Fc2).value;
    out = p + "d_act";
    cols = w.dim(0);
  } else {
    scope = head_scope(ins);
    dy = at(scope, mb, "d_logits");
    w = params_.get(lower::kModelLayerKey, dims_.tied ? ParamSlot::WordEmbedding : ParamSlot::Output).value;
    layout = WeightLayout::OutIn;
    out = "d_final";
  }
  DeviceTensor dx = fresh({dy.dim(0), cols});
  device_.gemm_grad_input(dy, w, layout, dx);
  put(scope, mb, out, dx);
}

void ModelRunner::gemm_grad_weight(const Instruction& ins) {
  if (expert_op(ins) || ins.site == Site::Router) return expert_gemm_grad_weight(ins);
  if (mla_site(ins.site)) return mla_gemm_grad_weight(ins);
  if (ins.site == Site::MtpProj) return mtp_gemm_grad_weight(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool sp = dims_.sp;
  DeviceTensor x, dy;
  Param* w = nullptr;
  Param* b = nullptr;
  WeightLayout layout = WeightLayout::InOut;
  if (ins.site == Site::Qkv) {
    x = at(L, mb, sp ? "qkv.in_w" : "ln1");
    dy = at(L, mb, "d_qkv");
    w = &params_.get(L, ParamSlot::Qkv);
    b = params_.find(L, ParamSlot::Qkv, true);
  } else if (ins.site == Site::Proj) {
    x = at(L, mb, "ctx");
    dy = at(L, mb, sp ? "d_proj_full" : "g_attn");
    w = &params_.get(L, ParamSlot::Proj);
  } else if (ins.site == Site::Fc1 || ins.site == Site::SharedFc1) {
    const std::string p = mlp_prefix(ins);
    const ParamSlot slot = shared_mlp(ins) ? ParamSlot::SharedFc1 : ParamSlot::Fc1;
    x = at(L, mb, sp ? p + "in_w" : "ln2");
    dy = at(L, mb, p + "d_fc1");
    w = &params_.get(L, slot);
    b = params_.find(L, slot, true);
  } else if (ins.site == Site::Fc2 || ins.site == Site::SharedFc2) {
    const std::string p = mlp_prefix(ins);
    x = at(L, mb, p + "act");
    dy = at(L, mb, sp ? p + "d_out_full" : "g_mlp");
    w = &params_.get(L, shared_mlp(ins) ? ParamSlot::SharedFc2 : ParamSlot::Fc2);
  } else {
    x = at(head_scope(ins), mb, sp ? "in_w" : "final_ln");
    dy = at(head_scope(ins), mb, "d_logits");
    w = &params_.get(lower::kModelLayerKey, dims_.tied ? ParamSlot::WordEmbedding : ParamSlot::Output);
    layout = WeightLayout::OutIn;
  }
  device_.gemm_grad_weight(x, dy, layout, w->grad, grad_or_none(b));
}

// ---- attention ----------------------------------------------------------------------------

void ModelRunner::split_heads(int32_t layer, int32_t mb) {
  const DeviceTensor& qkv = at(layer, mb, "qkv");
  const int64_t n = qkv.dim(0), hq = dims_.heads, hkv = dims_.kv_heads, d = dims_.d;
  DeviceTensor q = fresh({n, hq * d}), k = fresh({n, hkv * d}), v = fresh({n, hkv * d});
  device_.split_qkv(qkv, hkv, hq / hkv, d, q, k, v);
  put(layer, mb, "q", q.reshaped({s_local_, dims_.b, hq, d}));
  put(layer, mb, "k", k.reshaped({s_local_, dims_.b, hkv, d}));
  put(layer, mb, "v", v.reshaped({s_local_, dims_.b, hkv, d}));
}

void ModelRunner::rope(const Instruction& ins) {
  if (dims_.mla) return mla_rope(ins);
  split_heads(ins.layer, ins.microbatch);
  const std::vector<int32_t>& pos = data(ins).positions;
  for (const char* name : {"q", "k"}) {
    DeviceTensor& t = at(ins.layer, ins.microbatch, name);
    device_.rope_forward(t, pos, settings_.rope_base, t);
  }
}

void ModelRunner::rope_grad(const Instruction& ins) {
  if (dims_.mla) return mla_rope_grad(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const std::vector<int32_t>& pos = data(ins).positions;
  for (const char* name : {"dq", "dk"}) {
    DeviceTensor& t = at(L, mb, name);
    device_.rope_backward(t, pos, settings_.rope_base, t);
  }
  const int64_t hq = dims_.heads, hkv = dims_.kv_heads, d = dims_.d, n = dims_.n;
  DeviceTensor mixed = fresh({n, (hq + 2 * hkv) * d});
  device_.merge_qkv(at(L, mb, "dq").reshaped({n, hq * d}), at(L, mb, "dk").reshaped({n, hkv * d}),
                    at(L, mb, "dv").reshaped({n, hkv * d}), hkv, hq / hkv, d, mixed);
  put(L, mb, "d_qkv", mixed);
}

AttentionArgs ModelRunner::attention_args(const Instruction& ins, std::span<const int32_t> q_positions,
                                          std::span<const int32_t> kv_positions) const {
  AttentionArgs a;
  a.q_positions = q_positions;
  a.kv_positions = kv_positions;
  if (settings_.attention_dropout <= 0 || !update_) return a;
  uint64_t key = stream_seed(settings_.seed, "attention-dropout") ^ (static_cast<uint64_t>(step_) << 32) ^
                 static_cast<uint64_t>(ins.layer + 2);
  a.dropout = static_cast<float>(settings_.attention_dropout);
  a.dropout_key = splitmix64(key);
  a.head_offset = tp_rank_ * dims_.heads;
  a.samples = data(ins).samples;
  return a;
}

void ModelRunner::attention(const Instruction& ins) {
  if (dims_.mla) return mla_attention(ins);
  if (ins.ring_step >= 0) return attention_cp_step(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const DeviceTensor& q = at(L, mb, "q");
  DeviceTensor out = fresh(q.shape), lse = fresh({dims_.b, dims_.heads, s_local_});
  device_.attention_forward(q, at(L, mb, "k"), at(L, mb, "v"), attention_args(ins, {}, {}), out, lse);
  put(L, mb, "ctx", out.reshaped({dims_.n, dims_.heads * dims_.d}));
  put(L, mb, "lse", lse);
}

void ModelRunner::attention_grad(const Instruction& ins) {
  if (dims_.mla) return mla_attention_grad(ins);
  if (ins.ring_step >= 0) return attention_grad_cp_step(ins);
  const int32_t L = ins.layer, mb = ins.microbatch;
  const DeviceTensor &q = at(L, mb, "q"), &k = at(L, mb, "k"), &v = at(L, mb, "v");
  DeviceTensor dq = fresh(q.shape), dk = fresh(k.shape), dv = fresh(v.shape);
  device_.attention_backward(q, k, v, at(L, mb, "ctx").reshaped(q.shape), at(L, mb, "lse"),
                             at(L, mb, "d_ctx").reshaped(q.shape), attention_args(ins, {}, {}), dq, dk, dv);
  put(L, mb, "dq", dq);
  put(L, mb, "dk", dk);
  put(L, mb, "dv", dv);
  if (dims_.rope) return;
  const int64_t hq = dims_.heads, hkv = dims_.kv_heads, d = dims_.d, n = dims_.n;
  DeviceTensor mixed = fresh({n, (hq + 2 * hkv) * d});
  device_.merge_qkv(dq.reshaped({n, hq * d}), dk.reshaped({n, hkv * d}), dv.reshaped({n, hkv * d}), hkv, hq / hkv, d,
                    mixed);
  put(L, mb, "d_qkv", mixed);
}

// ---- activations and residuals ----------------------------------------------------------

void ModelRunner::activation(const Instruction& ins) {
  const std::string p = expert_op(ins) ? "moe." : mlp_prefix(ins);
  const DeviceTensor& x = at(ins.layer, ins.microbatch, p + "fc1");
  const bool gated = settings_.activation == ActivationKind::SwiGlu;
  DeviceTensor y = fresh({x.dim(0), gated ? x.dim(1) / 2 : x.dim(1)});
  device_.activation_forward(settings_.activation, x, y);
  put(ins.layer, ins.microbatch, p + "act", y);
}

void ModelRunner::activation_grad(const Instruction& ins) {
  const std::string p = expert_op(ins) ? "moe." : mlp_prefix(ins);
  const DeviceTensor& x = at(ins.layer, ins.microbatch, p + "fc1");
  DeviceTensor dx = fresh(x.shape);
  device_.activation_backward(settings_.activation, x, at(ins.layer, ins.microbatch, p + "d_act"), dx);
  put(ins.layer, ins.microbatch, p + "d_fc1", dx);
}

// Bias-dropout-add: out = residual + dropout(branch + row-parallel bias). Backward: the residual
// receives the block's output gradient, the branch its dropout-masked copy (and the bias its
// column sums).
void ModelRunner::residual(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool attn = ins.site == Site::AttnResidual;
  const bool moe = moe_layer(L);
  const int32_t site = attn ? 1 : 2;
  const bool drop = settings_.hidden_dropout > 0 && update_;
  Param* bias = attn ? params_.find(L, ParamSlot::Proj, true) : (moe ? nullptr : params_.find(L, ParamSlot::Fc2, true));
  if (!forward_pass(ins)) {
    const DeviceTensor& g = put(L, mb, attn ? "g_attn_res" : "g_mlp_res", grad(ins));
    DeviceTensor branch = g;
    if (drop) {
      branch = fresh(g.shape);
      device_.copy(g, branch);
      dropout(ins, site, dims_.sp, branch);
    }
    put(L, mb, attn ? "g_attn" : "g_mlp", branch);
    if (bias != nullptr) device_.column_sums_accumulate(branch, bias->grad);
    return;
  }
  const DeviceTensor& x = at(L, mb, attn ? "x" : "h1");
  DeviceTensor branch = at(L, mb, attn ? "proj" : (moe ? "moe.out" : "mlp.out"));
  if (drop || bias != nullptr) {
    DeviceTensor b = fresh(branch.shape);
    device_.copy(branch, b);
    if (bias != nullptr) device_.add_row_vector(b, bias->value);
    if (drop) dropout(ins, site, dims_.sp, b);
    branch = b;
  }
  DeviceTensor out = fresh(x.shape);
  device_.add(x, branch, out);
  if (attn) {
    put(L, mb, "h1", out);
  } else {
    put(L, mb, "out", out);
    if (!ins.recompute) put(stream_scope(ins.chunk), mb, "hidden", out);
  }
}

void ModelRunner::dropout(const Instruction& ins, int32_t site, bool sharded, const DeviceTensor& x) {
  const MicrobatchData& d = data(ins);
  const int64_t rows = x.dim(0), offset = sharded ? tp_rank_ * rows : 0;
  std::vector<int64_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = offset + i, p = row / dims_.b, j = row % dims_.b;
    ids[static_cast<size_t>(i)] = d.samples[static_cast<size_t>(j)] * dims_.s + d.positions[static_cast<size_t>(p)];
  }
  uint64_t key = stream_seed(settings_.seed, "dropout") ^ (static_cast<uint64_t>(step_) << 32) ^
                 (static_cast<uint64_t>(ins.layer + 2) << 8) ^ static_cast<uint64_t>(site);
  device_.dropout(x, static_cast<float>(settings_.hidden_dropout), splitmix64(key), ids);
}

void ModelRunner::residual_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool attn = has(L, mb, "d_norm.attn");
  const DeviceTensor& dn = at(L, mb, attn ? "d_norm.attn" : "d_norm.mlp");
  DeviceTensor out = fresh(dn.shape);
  device_.add(dn, at(L, mb, attn ? "g_attn_res" : "g_mlp_res"), out);
  put(stream_scope(ins.chunk), mb, "grad", out);
}

}  // namespace tandem::exec
