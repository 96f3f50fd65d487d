// Dims of one microbatch on one rank, message tags, and the instruction Emitter (lower_context.h).
#include <algorithm>

#include "core/check.h"
#include "models/model_dims.h"
#include "program/lower_context.h"

namespace tandem::lower {

Dims dims_for_job(const Job& job, const ParallelGrid& grid) {
  const detail::ModelDims x = detail::model_dims(job.model);
  const auto& par = job.parallel;
  const auto& tr = job.training;
  Dims d;
  d.b = std::max<int64_t>(1, tr.micro_batch_size);
  d.s = x.s;
  d.cp = grid.cp_size();
  d.t = grid.tp_size();
  d.sp = par.sequence_parallel && d.t > 1;
  d.r = d.sp ? d.t : 1;
  if (d.s % d.cp != 0) throw_field_error("seq_length", d.s, "must be divisible by the context-parallel size");
  d.n = d.s / d.cp * d.b;
  if (d.sp && d.n % d.t != 0)
    throw_field_error("seq_length", d.s, "local tokens s/CP x b must be divisible by TP with sequence parallelism");
  d.h = x.h;
  d.a = x.a;
  d.g = x.g;
  d.d = x.d;
  d.f = x.f;
  d.heads = std::max<int64_t>(1, d.a / d.t);
  d.kv_heads = std::max<int64_t>(1, d.g / d.t);
  d.vocab = x.vocab;
  d.positions = x.positions;
  d.dtype = tr.params_dtype;
  d.e = bytes_per_element(tr.params_dtype);
  d.norm_factor = x.norm_factor;
  d.gated = x.gated;
  d.bias = x.bias;
  d.qkv_bias = x.qkv_bias;
  d.rope = job.model.position_embedding == PositionEmbedding::Rope;
  d.flash = uses_flash_attention(tr.attention_backend);
  d.attention_dropout = tr.attention_dropout > 0;
  d.hidden_dropout = tr.hidden_dropout > 0;
  d.tied = !job.model.untie_embeddings_and_output_weights;
  d.mla = x.mla;
  d.q_lora = x.q_lora;
  d.kv_lora = x.kv_lora;
  d.d_nope = x.d_nope;
  d.d_rope = x.d_rope;
  d.d_v = x.d_v;
  d.experts = x.experts;
  d.topk = x.topk;
  d.f_moe = x.f_moe;
  d.f_shared = x.f_shared;
  d.ep = grid.ep_size();
  d.etp = grid.expert_tp_size();
  d.dispatcher = job.model.moe_token_dispatcher_type;
  d.layers = x.layers;
  d.mtp_layers = job.model.mtp_num_layers;
  if (d.experts > 0 && d.t > 1 && !d.sp)
    throw UserError("--num-experts = " + std::to_string(d.experts) + " with --tensor-model-parallel-size = " +
                    std::to_string(d.t) + " requires --sequence-parallel (Megatron-Core's MoE layer refuses to train without it)");
  if (d.experts > 0 && d.experts % d.ep != 0)
    throw_field_error("num_experts", d.experts, "must be divisible by --expert-model-parallel-size");
  return d;
}

int64_t make_tag(TagPurpose purpose, bool recompute, int64_t index, int64_t microbatch, int64_t step, int64_t extra) {
  TANDEM_CHECK_MSG(index >= -1 && index < 4095, "tag index out of range: " << index);
  TANDEM_CHECK_MSG(microbatch >= -1 && microbatch < (int64_t{1} << 24) - 1, "tag microbatch out of range");
  TANDEM_CHECK_MSG(step >= 0 && step < 256 && extra >= 0 && extra < 256, "tag step/extra out of range");
  int64_t tag = int64_t(purpose) * 2 + (recompute ? 1 : 0);
  tag = tag * 4096 + (index + 1);
  tag = tag * (int64_t{1} << 24) + (microbatch + 1);
  tag = tag * 256 + step;
  return tag * 256 + extra;
}

int64_t pipeline_peer(const Context& ctx, int pp) {
  DenseCoord c = ctx.dense;
  c.pp = pp;
  return ctx.grid.dense_rank(c);
}

void Emitter::push_deps(Instruction& ins, Deps deps) const {
  const int32_t self = size();
  for (int32_t d : deps) {
    if (d < 0) continue;
    TANDEM_CHECK_MSG(d < self, "dependency " << d << " does not point backwards from " << self);
    if (at(d).stream == ins.stream) continue;
    if (std::find(ins.deps.begin(), ins.deps.end(), d) == ins.deps.end()) ins.deps.push_back(d);
  }
}

int32_t Emitter::add(Instruction ins, Deps deps) {
  ins.layer = cursor.layer;
  ins.microbatch = cursor.microbatch;
  ins.chunk = cursor.chunk;
  ins.phase = cursor.phase;
  ins.recompute = cursor.recompute;
  ins.dtype = dtype_;
  push_deps(ins, deps);
  if (ins.stream == StreamKind::Compute && !compute_gate.empty()) {
    for (int32_t g : compute_gate)
      if (std::find(ins.deps.begin(), ins.deps.end(), g) == ins.deps.end()) ins.deps.push_back(g);
    compute_gate.clear();
  }
  program_.instructions.push_back(std::move(ins));
  return size() - 1;
}

int32_t Emitter::add_dep_list(Instruction ins, const std::vector<int32_t>& deps) {
  const int32_t self = size();
  for (int32_t d : deps) {
    if (d < 0 || at(d).stream == ins.stream) continue;
    TANDEM_CHECK(d < self);
    if (std::find(ins.deps.begin(), ins.deps.end(), d) == ins.deps.end()) ins.deps.push_back(d);
  }
  return add(std::move(ins));
}

int32_t Emitter::op(OpKind kind, Site site, int64_t m, int64_t n, double bytes, Deps deps) {
  Instruction ins;
  ins.kind = kind;
  ins.site = site;
  ins.m = m;
  ins.n = n;
  ins.bytes = bytes;
  return add(std::move(ins), deps);
}

int32_t Emitter::gemm(OpKind kind, Site site, int64_t m, int64_t n, int64_t k, int64_t batch, Deps deps,
                      double expected_m) {
  Instruction ins;
  ins.kind = kind;
  ins.site = site;
  ins.m = m;
  ins.n = n;
  ins.k = k;
  ins.batch = batch;
  const double rows = expected_m > 0 ? expected_m : double(m);
  ins.routed = expected_m > 0;
  ins.flops = 2.0 * rows * double(n) * double(k) * double(batch);
  ins.bytes = double(bytes_per_element(dtype_)) * double(batch) * (rows * double(k) + double(k) * double(n) + rows * double(n));
  return add(std::move(ins), deps);
}

int32_t Emitter::weight_grad(Instruction ins, int64_t key, Deps deps, int64_t extra_key) {
  if (defer_to != nullptr) {
    // Stamp provenance now (the W action replays it as it was) but keep it out of the list.
    Instruction copy = ins;
    copy.layer = cursor.layer;
    copy.microbatch = cursor.microbatch;
    copy.chunk = cursor.chunk;
    copy.recompute = false;
    copy.dtype = dtype_;
    push_deps(copy, deps);
    defer_to->push_back(DeferredGrad{std::move(copy), key, extra_key});
    return -1;
  }
  const int32_t index = add(std::move(ins), deps);
  produced(key, index);
  if (extra_key >= 0) produced(extra_key, index);
  return index;
}

int32_t Emitter::collective(OpKind kind, ParallelGroup group, StreamKind stream, Site site, double bytes,
                            Deps deps) {
  Instruction ins;
  ins.kind = kind;
  ins.stream = stream;
  ins.group = group;
  ins.site = site;
  ins.bytes = bytes;
  return add(std::move(ins), deps);
}

namespace {

// Send and Recv differ only in their kind: one message of `bytes` to or from `peer`, matched by `tag`.
Instruction point_to_point(OpKind kind, ParallelGroup group, StreamKind stream, Site site, int64_t peer,
                           int64_t tag, double bytes) {
  Instruction ins;
  ins.kind = kind;
  ins.stream = stream;
  ins.group = group;
  ins.site = site;
  ins.peer = peer;
  ins.tag = tag;
  ins.bytes = bytes;
  return ins;
}

}  // namespace

int32_t Emitter::send(ParallelGroup group, StreamKind stream, Site site, int64_t peer, int64_t tag,
                      double bytes, Deps deps) {
  return add(point_to_point(OpKind::Send, group, stream, site, peer, tag, bytes), deps);
}

int32_t Emitter::recv(ParallelGroup group, StreamKind stream, Site site, int64_t peer, int64_t tag,
                      double bytes, Deps deps) {
  return add(point_to_point(OpKind::Recv, group, stream, site, peer, tag, bytes), deps);
}

int32_t Emitter::new_buffer(Buffer buffer) {
  program_.buffers.push_back(std::move(buffer));
  return static_cast<int32_t>(program_.buffers.size() - 1);
}

int32_t Emitter::alloc(int32_t buffer, Deps deps) {
  Instruction ins;
  ins.kind = OpKind::Alloc;
  ins.site = Site::Alloc;
  ins.buffer = buffer;
  ins.bytes = program_.buffers[static_cast<size_t>(buffer)].bytes;
  return add(std::move(ins), deps);
}

int32_t Emitter::free(int32_t buffer, Deps deps) {
  Instruction ins;
  ins.kind = OpKind::Free;
  ins.site = Site::Free;
  ins.buffer = buffer;
  ins.bytes = program_.buffers[static_cast<size_t>(buffer)].bytes;
  return add(std::move(ins), deps);
}

void Emitter::produced(int64_t key, int32_t index) {
  grad_producer[key] = index;
  if (on_produced) on_produced(key, index);
}

int32_t Emitter::take_param_gate(int32_t layer_key) {
  auto it = param_gate.find(layer_key);
  if (it == param_gate.end()) return -1;
  const int32_t index = it->second;
  param_gate.erase(it);
  return index;
}

}  // namespace tandem::lower
