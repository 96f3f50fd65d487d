// Parameters of a rank: tensors per model chunk, persistent buffers, data-parallel buckets,
// gradient reduction, optimizer step and parameter all-gathers (Megatron-Core's
// DistributedDataParallel, _ParamAndGradBuffer and finalize_model_grads).
//
// Tensors (elements on this rank; t = TP, weights [in, out]):
//   layer: input norm (nf*h), QKV [h, (a + 2g)d/t] (+ bias), or MLA: q down [h, q_lora] and
//          kv down [h, kv_lora + d_rope] (TP-replicated) with their norms, q up [q_lora, a(dn+dr)/t],
//          kv up [kv_lora, a(dn+dv)/t]; output projection [a*dv/t, h] (+ bias h, replicated);
//          pre-MLP norm; MLP fc1 [h, f/t or 2f/t] (+ bias), fc2 [f/t, h] (+ bias h, replicated);
//          MoE: router [h, E] (replicated), E/EP local experts with f/ETP, shared expert as an MLP.
//   model: word embedding [V/t, h] + positions [P, h] on stage 0; final norm and the untied
//          output layer [h, V/t] on the last stage, plus a copy of the word embedding when it is
//          tied (or MTP needs it) and stage 0 lives on another rank; MTP norms (3 nf*h),
//          projection [2h, h/t] and one layer per module.
// Their sums are the per-rank parameters of models/accounting (memory_per_rank); a test checks it.
//
// Buckets: parameters in reverse registration order (backward order); a new bucket starts once
// one holds bucket_size = max(4e7, 1e6 * DP) parameters, only with --overlap-grad-reduce on the
// first chunk of pipeline rank 0 (elsewhere one bucket per buffer); dense and expert parameters
// are separate buffers (DP-with-CP group vs expert-DP group). With the distributed optimizer the
// shared word embedding gets its own bucket. (Bucket padding for uniform sharding is ignored.)
#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"
#include "program/lower_context.h"

namespace tandem::lower {

namespace {

struct TensorList {
  std::vector<ParamTensor>& out;
  int32_t layer;
  int32_t gate;
  void add(ParamSlot slot, double elements, bool replicated = false, bool expert = false) {
    ParamTensor t;
    t.key = param_key(layer, slot);
    t.layer = layer;
    t.slot = slot;
    t.elements = elements;
    t.tp_replicated = replicated;
    t.expert = expert;
    t.gate = gate;
    out.push_back(t);
  }
};

void attention_tensors(const Dims& d, TensorList& l) {
  const double h = double(d.h), t = double(d.t), nf = double(d.norm_factor);
  const double bias = d.bias ? 1.0 : 0.0;
  l.add(ParamSlot::InputNorm, nf * h, true);
  if (!d.mla) {
    const double cols = double((d.a + 2 * d.g) * d.d);
    l.add(ParamSlot::Qkv, (h * cols + (d.qkv_bias ? cols : 0.0)) / t);
  } else {
    const double q_cols = double(d.a * (d.d_nope + d.d_rope));
    if (d.q_lora > 0) {
      const double ql = double(d.q_lora);
      l.add(ParamSlot::QDown, h * ql + bias * ql, true);
      l.add(ParamSlot::QNorm, nf * ql, true);
      l.add(ParamSlot::QUp, (ql * q_cols + bias * q_cols) / t);
    } else {
      l.add(ParamSlot::QUp, (h * q_cols + bias * q_cols) / t);
    }
    const double kv_down = double(d.kv_lora + d.d_rope), kv_cols = double(d.a * (d.d_nope + d.d_v));
    l.add(ParamSlot::KvDown, h * kv_down + bias * kv_down, true);
    l.add(ParamSlot::KvNorm, nf * double(d.kv_lora), true);
    l.add(ParamSlot::KvUp, (double(d.kv_lora) * kv_cols + bias * kv_cols) / t);
  }
  const double proj_in = double(d.a * d.v_head_dim());
  l.add(ParamSlot::Proj, proj_in * h / t);
  if (d.bias) l.add(ParamSlot::Proj, h, true);   // row-parallel bias, whole on every TP rank
}

void mlp_tensors(const Dims& d, TensorList& l, int64_t ffn, ParamSlot fc1, ParamSlot fc2) {
  const double h = double(d.h), t = double(d.t), f = double(ffn);
  const double fc1_cols = double(d.mlp_fc1_cols(ffn));
  l.add(fc1, (h * fc1_cols + (d.bias ? fc1_cols : 0.0)) / t);
  l.add(fc2, f * h / t);
  if (d.bias) l.add(fc2, h, true);
}

}  // namespace

std::vector<ParamTensor> layer_tensors(const Dims& d, int32_t layer, bool moe) {
  std::vector<ParamTensor> out;
  TensorList l{out, layer, layer};
  attention_tensors(d, l);
  l.add(ParamSlot::PreMlpNorm, double(d.norm_factor) * double(d.h), true);
  if (!moe) {
    mlp_tensors(d, l, d.f, ParamSlot::Fc1, ParamSlot::Fc2);
    return out;
  }
  l.add(ParamSlot::Router, double(d.experts) * double(d.h), true);
  const double local = double(d.experts / d.ep), etp = double(d.etp), h = double(d.h);
  const double cols = double(d.mlp_fc1_cols(d.f_moe)), bias = d.bias ? 1.0 : 0.0;
  l.add(ParamSlot::ExpertFc1, local * (h * cols + bias * cols) / etp, false, true);
  l.add(ParamSlot::ExpertFc2, local * (double(d.f_moe) * h + bias * h) / etp, false, true);
  if (d.f_shared > 0) mlp_tensors(d, l, d.f_shared, ParamSlot::SharedFc1, ParamSlot::SharedFc2);
  return out;
}

namespace {

bool rank_holds_stage(const Context& ctx, int stage) {
  const int chunks = ctx.schedule.num_chunks();
  for (int c = 0; c < chunks; ++c)
    if (ctx.schedule.stage_of(ctx.pipeline_rank, c) == stage) return true;
  return false;
}

void head_tensors(const Context& ctx, std::vector<ParamTensor>& out) {
  const Dims& d = ctx.dims;
  const double h = double(d.h), word = double(d.vocab) * h / double(d.t);
  TensorList head{out, kModelLayerKey, kHeadGate};
  head.add(ParamSlot::FinalNorm, double(d.norm_factor) * h, true);
  if (!d.tied) head.add(ParamSlot::Output, word);
  if (!rank_holds_stage(ctx, 0) && (d.tied || d.mtp_layers > 0)) {
    head.add(ParamSlot::WordEmbedding, word);
    out.back().shared_embedding = true;
  }
  const bool moe = is_moe_layer(ctx.job.model, d.layers - 1);
  for (int64_t i = 0; i < d.mtp_layers; ++i) {
    const int32_t layer = static_cast<int32_t>(d.layers + i);
    TensorList mtp{out, layer, layer};
    mtp.add(ParamSlot::MtpNorms, 3.0 * double(d.norm_factor) * h, true);
    mtp.add(ParamSlot::MtpProj, 2.0 * h * h / double(d.t));
    const std::vector<ParamTensor> lt = layer_tensors(d, layer, moe);
    out.insert(out.end(), lt.begin(), lt.end());
  }
}

}  // namespace

std::vector<ParamTensor> chunk_tensors(const Context& ctx, int chunk) {
  const Dims& d = ctx.dims;
  const int stage = ctx.schedule.stage_of(ctx.pipeline_rank, chunk);
  const LayerRange range = ctx.schedule.stage_layers[static_cast<size_t>(stage)];
  std::vector<ParamTensor> out;
  if (stage == 0) {
    TensorList emb{out, kModelLayerKey, kEmbeddingGate};
    emb.add(ParamSlot::WordEmbedding, double(d.vocab) * double(d.h) / double(d.t));
    out.back().shared_embedding = d.tied || d.mtp_layers > 0;
    if (d.positions > 0) emb.add(ParamSlot::Positions, double(d.positions) * double(d.h));
  }
  for (int l = range.begin; l < range.end; ++l) {
    const std::vector<ParamTensor> lt = layer_tensors(d, l, is_moe_layer(ctx.job.model, l));
    out.insert(out.end(), lt.begin(), lt.end());
  }
  if (stage == ctx.schedule.num_stages() - 1) head_tensors(ctx, out);
  return out;
}

std::vector<Bucket> chunk_buckets(const Context& ctx, int chunk) {
  const auto& par = ctx.job.parallel;
  const std::vector<ParamTensor> tensors = chunk_tensors(ctx, chunk);
  const bool bucketing = par.overlap_grad_reduce && ctx.pipeline_rank == 0 && chunk == 0;
  const double limit = bucketing ? std::max(4.0e7, 1.0e6 * double(ctx.grid.dp_size())) : 0.0;
  std::vector<Bucket> buckets;
  for (bool expert : {false, true}) {
    Bucket current;
    current.expert = expert;
    auto close = [&] {
      if (!current.keys.empty()) buckets.push_back(current);
      current = Bucket{};
      current.expert = expert;
    };
    for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) {
      if (it->expert != expert) continue;
      const bool own = it->shared_embedding && par.use_distributed_optimizer;
      if (own) close();
      current.elements += it->elements;
      if (std::find(current.keys.begin(), current.keys.end(), it->key) == current.keys.end())
        current.keys.push_back(it->key);
      if (own || (limit > 0 && current.elements >= limit)) close();
    }
    close();
  }
  return buckets;
}

namespace {

// Buffer name of a tensor's layer: "L3", "embedding", "head" (MTP layers are layers too).
std::string group_name(const ParamTensor& t) {
  if (t.layer >= 0) return "L" + std::to_string(t.layer);
  if (t.slot == ParamSlot::WordEmbedding || t.slot == ParamSlot::Positions) return "embedding";
  return "head";
}

}  // namespace

void allocate_persistent(Context& ctx) {
  const auto& par = ctx.job.parallel;
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  const double dense_shards = par.use_distributed_optimizer ? double(ctx.dp_cp) : 1.0;
  const double expert_shards = par.use_distributed_optimizer ? double(ctx.edp) : 1.0;
  ctx.em.cursor = Cursor{};
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c) {
    // Group consecutive tensors of one layer (dense and expert separately), in registration order.
    std::vector<std::pair<std::string, double>> groups;   // name -> elements
    std::vector<bool> expert_of;
    for (const ParamTensor& t : chunk_tensors(ctx, c)) {
      const std::string name = group_name(t) + (t.expert ? "/experts" : "");
      if (groups.empty() || groups.back().first != name) {
        groups.emplace_back(name, 0.0);
        expert_of.push_back(t.expert);
      }
      groups.back().second += t.elements;
    }
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto& [name, elements] = groups[i];
      const std::string suffix = ctx.schedule.num_chunks() > 1 ? "/c" + std::to_string(c) : "";
      const double shards = expert_of[i] ? expert_shards : dense_shards;
      ctx.em.alloc(ctx.em.new_buffer(BufferRole::Parameter, "param/" + name + suffix, elements * bpp.weights));
      ctx.em.alloc(ctx.em.new_buffer(BufferRole::Gradient, "grad/" + name + suffix, elements * bpp.gradients));
      ctx.em.alloc(ctx.em.new_buffer(BufferRole::OptimizerState, "optim/" + name + suffix,
                                     elements / shards * bpp.optimizer));
    }
  }
}

}  // namespace tandem::lower
