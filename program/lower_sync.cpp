// Gradient reduction, optimizer step and parameter all-gathers (Megatron-Core's
// finish_grad_sync / finalize_model_grads / DistributedOptimizer.step):
//
//   per chunk, per bucket (backward order): all-reduce, or reduce-scatter with the distributed
//     optimizer, of the bucket's gradients over the DP-with-CP group (dense) or the expert-DP
//     group (routed experts); with --overlap-grad-reduce issued on the DpComm stream as soon as
//     the chunk's last backward produced the bucket's gradients, otherwise after the last backward.
//   a stage held by two ranks (DualPipe) first exchanges its gradients with the other copy.
//   with sequence parallelism, an all-reduce over TP of the TP-replicated gradients (norms,
//     row-parallel biases, router, MLA down projections).
//   tied embeddings (or MTP) with the first and last stages on different ranks: all-reduce of the
//     word-embedding gradient over the embedding group.
//   aux-loss-free balancing (--moe-router-enable-expert-bias): the iteration's tokens per expert
//     of every local MoE layer ([layers, E] fp32) all-reduced over TP x DP x CP (Megatron-Core's
//     _update_router_expert_bias), then exchanged with the other holder of a mirrored stage.
//   grad norm: a scalar all-reduce over the model-parallel group (and over DP-with-CP with the
//     distributed optimizer, where each rank holds a shard; without it, MoE adds one over the
//     expert tp-ep-pp group for the expert optimizer's norm), then the optimizer step on the local
//     shard, then (distributed optimizer) all-gathers of the updated parameters per bucket — or,
//     with --overlap-param-gather, before the forward of the bucket's layers (modelled at the start
//     of this iteration's first forward of the chunk).
#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "program/lower_context.h"

namespace tandem::lower {
namespace {

int32_t producer_of(const Context& ctx, const Bucket& bucket) {
  int32_t last = -1;
  for (int64_t key : bucket.keys) {
    auto it = ctx.em.grad_producer.find(key);
    TANDEM_CHECK_MSG(it != ctx.em.grad_producer.end(), "no gradient produced for parameter key " << key);
    last = std::max(last, it->second);
  }
  return last;
}

ParallelGroup dp_group(bool expert) { return expert ? ParallelGroup::ExpertDp : ParallelGroup::DpCp; }
int64_t dp_size(const Context& ctx, bool expert) { return expert ? ctx.edp : ctx.dp_cp; }

bool holds_stage(const Context& ctx, int stage) {
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c)
    if (ctx.schedule.stage_of(ctx.pipeline_rank, c) == stage) return true;
  return false;
}

// Sends this chunk's gradients to the other holder of its stage and adds the ones received.
int32_t mirror_exchange(Context& ctx, int chunk, const std::vector<Bucket>& buckets, int32_t after) {
  const int other = mirror_pipeline_rank(ctx, chunk);
  if (other < 0) return -1;
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  double elements = 0;
  int32_t last = -1;
  for (const Bucket& b : buckets) {
    elements += b.elements;
    last = std::max(last, producer_of(ctx, b));
  }
  const int stage = ctx.schedule.stage_of(ctx.pipeline_rank, chunk);
  const int64_t tag = make_tag(TagPurpose::MirrorGrad, false, stage, -1, 0);
  const int64_t peer = pipeline_peer(ctx, other);
  const double bytes = elements * bpp.gradients;
  ctx.em.send(ParallelGroup::Pp, StreamKind::PpSend, Site::MirrorGrad, peer, tag, bytes, {last, after});
  const int32_t got = ctx.em.recv(ParallelGroup::Pp, StreamKind::PpRecv, Site::MirrorGrad, peer, tag, bytes, {after});
  return ctx.em.op(OpKind::Elementwise, Site::MirrorGradAdd, static_cast<int64_t>(std::llround(elements)), 1,
                   3.0 * bytes, {got, last, after});
}

// HBM bytes the optimizer step and the gradient-buffer upkeep stream per iteration
// (Megatron-Core's DistributedDataParallel and (Distributed)Optimizer):
//   every local parameter, fp32-or-e-byte gradient buffer of `g` bytes per element:
//     zero_grad_buffer() before the first microbatch (write g), and before each bucket's DP
//     collective the NaN check grad.norm() (read g) and, with more than one DP rank, the 1/DP
//     pre-scale grad *= factor (read g, write g) — on the compute stream, counted here;
//   every parameter of the optimizer's shard (all local ones without the distributed optimizer):
//     16-bit gradients are first copied into fp32 main gradients (read g, write 4) and unscaled
//     with an inf check (read 4, write 4); then the grad norm (read 4), Adam (read the fp32
//     gradient, read and write the fp32 master weight and both moments: 4 + 24) and the copy
//     of the master weight into the model's parameter (read 4, write w).
double optimizer_bytes(const Context& ctx) {
  double bytes = 0;
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c)
    for (const ParamTensor& t : chunk_tensors(ctx, c))
      bytes += optimizer_step_bytes(ctx.job, t.elements, dp_size(ctx, t.expert));
  return bytes;
}

double shard_parameters(const Context& ctx) {
  const bool dist = ctx.job.parallel.use_distributed_optimizer;
  double shard = 0;
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c)
    for (const ParamTensor& t : chunk_tensors(ctx, c))
      shard += t.elements / (dist ? double(dp_size(ctx, t.expert)) : 1.0);
  return shard;
}

}  // namespace

int mirror_pipeline_rank(const Context& ctx, int chunk) {
  const int stage = ctx.schedule.stage_of(ctx.pipeline_rank, chunk);
  for (const auto& path : ctx.schedule.layout.paths) {
    const StageLocation loc = path[static_cast<size_t>(stage)];
    if (loc.rank != ctx.pipeline_rank) return loc.rank;
  }
  return -1;
}

void param_gather_before_forward(Context& ctx, int chunk) {
  const auto& par = ctx.job.parallel;
  if (!par.use_distributed_optimizer || !par.overlap_param_gather) return;
  const Cursor saved = ctx.em.cursor;
  ctx.em.cursor = Cursor{};
  ctx.em.cursor.chunk = static_cast<int16_t>(chunk);
  ctx.em.cursor.phase = Phase::ParamSync;
  const std::vector<ParamTensor> tensors = chunk_tensors(ctx, chunk);
  const std::vector<Bucket> buckets = chunk_buckets(ctx, chunk);
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  for (size_t i = buckets.size(); i-- > 0;) {   // forward order: the last bucket first
    const Bucket& b = buckets[i];
    if (dp_size(ctx, b.expert) == 1) continue;
    const int32_t ag = ctx.em.collective(OpKind::AllGather, dp_group(b.expert), StreamKind::DpComm,
                                         b.expert ? Site::EdpParamAg : Site::DpParamAg, b.elements * bpp.weights);
    ctx.em.program().instructions[static_cast<size_t>(ag)].bucket = static_cast<int16_t>(i);
    for (const ParamTensor& t : tensors) {
      if (std::find(b.keys.begin(), b.keys.end(), t.key) == b.keys.end()) continue;
      int32_t& gate = ctx.em.param_gate[t.gate];
      gate = std::max(gate, ag);
    }
  }
  ctx.em.cursor = saved;
}

namespace {

// All-reduce (or reduce-scatter) of bucket `index` of `chunk`, after its gradients' producers.
void reduce_bucket(Context& ctx, int chunk, const Bucket& b, size_t index, int32_t after, int32_t mirror) {
  if (dp_size(ctx, b.expert) == 1) return;
  const Cursor saved = ctx.em.cursor;
  ctx.em.cursor = Cursor{};
  ctx.em.cursor.chunk = static_cast<int16_t>(chunk);
  ctx.em.cursor.phase = Phase::GradSync;
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  const OpKind kind = ctx.job.parallel.use_distributed_optimizer ? OpKind::ReduceScatter : OpKind::AllReduce;
  const int32_t c = ctx.em.collective(kind, dp_group(b.expert), StreamKind::DpComm, b.expert ? Site::EdpGrad : Site::DpGrad,
                                      b.elements * bpp.gradients, {producer_of(ctx, b), after, mirror});
  ctx.em.program().instructions[static_cast<size_t>(c)].bucket = static_cast<int16_t>(index);
  ctx.last_grad_sync = c;
  ctx.em.cursor = saved;
}

// Producers of `key` expected in one backward of its chunk: the word embedding collects the
// embedding's and the tied output layers' gradients, an MTP module's norms two norm gradients.
int expected_producers(const Context& ctx, int chunk, ParamSlot slot) {
  if (slot == ParamSlot::MtpNorms) return 2;
  if (slot != ParamSlot::WordEmbedding) return 1;
  const int stage = ctx.schedule.stage_of(ctx.pipeline_rank, chunk);
  const int64_t tied = ctx.dims.tied ? 1 : 0;
  int64_t n = stage == 0 ? 1 : 0;
  if (stage == ctx.schedule.num_stages() - 1) n += tied + ctx.dims.mtp_layers * (tied + 1);
  return static_cast<int>(std::max<int64_t>(1, n));
}

}  // namespace

void reduce_chunk_grads(Context& ctx, int chunk, int32_t after) {
  const Cursor saved = ctx.em.cursor;
  ctx.em.cursor = Cursor{};
  ctx.em.cursor.chunk = static_cast<int16_t>(chunk);
  ctx.em.cursor.phase = Phase::GradSync;
  const std::vector<Bucket> buckets = chunk_buckets(ctx, chunk);
  const int32_t mirror = mirror_exchange(ctx, chunk, buckets, after);
  for (size_t i = 0; i < buckets.size(); ++i) reduce_bucket(ctx, chunk, buckets[i], i, after, mirror);
  ctx.em.cursor = saved;
}

bool BucketTracker::begin(Context& ctx, int chunk) {
  if (mirror_pipeline_rank(ctx, chunk) >= 0) return false;
  ctx_ = &ctx;
  chunk_ = chunk;
  buckets_ = chunk_buckets(ctx, chunk);
  pending_.assign(buckets_.size(), 0);
  done_.assign(buckets_.size(), false);
  remaining_.clear();
  buckets_of_.clear();
  for (const ParamTensor& t : chunk_tensors(ctx, chunk)) remaining_[t.key] = expected_producers(ctx, chunk, t.slot);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (int64_t key : buckets_[b].keys) {
      buckets_of_[key].push_back(b);
      ++pending_[b];
    }
  }
  ctx.em.on_produced = [this](int64_t key, int32_t index) { on_produced(key, index); };
  return true;
}

void BucketTracker::on_produced(int64_t key, int32_t index) {
  (void)index;
  auto it = remaining_.find(key);
  if (it == remaining_.end() || it->second == 0 || --it->second > 0) return;
  for (size_t b : buckets_of_[key])
    if (--pending_[b] == 0) emit(b);
}

void BucketTracker::emit(size_t bucket) {
  if (done_[bucket]) return;
  done_[bucket] = true;
  reduce_bucket(*ctx_, chunk_, buckets_[bucket], bucket, -1, -1);
}

void BucketTracker::end() {
  if (ctx_ == nullptr) return;
  ctx_->em.on_produced = nullptr;
  for (size_t b = 0; b < buckets_.size(); ++b) emit(b);
  ctx_ = nullptr;
}

namespace {

// MoE layers (their routers) of chunk `chunk`.
int64_t moe_layers_of(const Context& ctx, int chunk) {
  int64_t n = 0;
  for (const ParamTensor& t : chunk_tensors(ctx, chunk)) n += t.slot == ParamSlot::Router ? 1 : 0;
  return n;
}

// Tokens per expert for the expert-bias update (see the header); returns the last instruction or -1.
int32_t expert_bias_counts(Context& ctx, int32_t after) {
  if (!ctx.job.model.moe_router_enable_expert_bias) return -1;
  int64_t layers = 0;
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c) layers += moe_layers_of(ctx, c);
  if (layers == 0) return -1;
  const int16_t saved_chunk = ctx.em.cursor.chunk;
  const double per_layer = 4.0 * double(ctx.dims.experts);
  int32_t last = -1;
  if (ctx.grid.group_size(ParallelGroup::TpDpCp) > 1)
    last = ctx.em.collective(OpKind::AllReduce, ParallelGroup::TpDpCp, StreamKind::DpComm, Site::ExpertBias,
                             double(layers) * per_layer, {after});
  std::vector<int> chunks(static_cast<size_t>(ctx.schedule.num_chunks()));
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c) chunks[static_cast<size_t>(c)] = c;
  std::sort(chunks.begin(), chunks.end(), [&ctx](int a, int b) {
    return ctx.schedule.stage_of(ctx.pipeline_rank, a) < ctx.schedule.stage_of(ctx.pipeline_rank, b);
  });
  for (int c : chunks) {
    const int other = mirror_pipeline_rank(ctx, c);
    const int64_t n = moe_layers_of(ctx, c);
    if (other < 0 || n == 0) continue;
    ctx.em.cursor.chunk = static_cast<int16_t>(c);
    const int stage = ctx.schedule.stage_of(ctx.pipeline_rank, c);
    const int64_t tag = make_tag(TagPurpose::MirrorGrad, false, stage, -1, 1);
    const int64_t peer = pipeline_peer(ctx, other);
    ctx.em.send(ParallelGroup::Pp, StreamKind::PpSend, Site::ExpertBias, peer, tag, double(n) * per_layer, {last, after});
    last = ctx.em.recv(ParallelGroup::Pp, StreamKind::PpRecv, Site::ExpertBias, peer, tag, double(n) * per_layer,
                       {last, after});
  }
  ctx.em.cursor.chunk = saved_chunk;
  return last;
}

// All-reduces of finalize_model_grads after the DP reduction; returns the last one (or -1).
int32_t finalize_grads(Context& ctx, int32_t last_compute) {
  const Dims& d = ctx.dims;
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  int32_t sp_norms = -1, embedding = -1;
  if (d.sp && ctx.tp > 1) {
    double replicated = 0;
    for (int c = 0; c < ctx.schedule.num_chunks(); ++c)
      for (const ParamTensor& t : chunk_tensors(ctx, c))
        if (t.tp_replicated) replicated += t.elements;
    sp_norms = ctx.em.collective(OpKind::AllReduce, ParallelGroup::Tp, StreamKind::TpComm, Site::SpNormGrad,
                                 replicated * bpp.gradients, {ctx.last_grad_sync, last_compute});
  }
  const int last = ctx.schedule.num_stages() - 1;
  const bool first_here = holds_stage(ctx, 0), last_here = holds_stage(ctx, last);
  const auto group = ctx.grid.find_group(ctx.rank, ParallelGroup::Embedding);
  if ((d.tied || d.mtp_layers > 0) && first_here != last_here && group && group->ranks.size() > 1) {
    const double word = double(d.vocab) * double(d.h) / double(d.t);
    embedding = ctx.em.collective(OpKind::AllReduce, ParallelGroup::Embedding, StreamKind::DpComm, Site::EmbeddingGrad,
                                  word * bpp.gradients, {ctx.last_grad_sync, last_compute});
  }
  const int32_t bias = expert_bias_counts(ctx, std::max(ctx.last_grad_sync, last_compute));
  return std::max({sp_norms, embedding, bias, ctx.last_grad_sync});
}

}  // namespace

void finish_iteration(Context& ctx, const std::vector<bool>& reduced, int32_t last_compute) {
  // In stage order: the two holders of a mirrored stage (DualPipe) then exchange gradients in the
  // same order on both sides (a rank's chunk order differs from its mirror's).
  std::vector<int> chunks(static_cast<size_t>(ctx.schedule.num_chunks()));
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c) chunks[static_cast<size_t>(c)] = c;
  std::sort(chunks.begin(), chunks.end(), [&ctx](int a, int b) {
    return ctx.schedule.stage_of(ctx.pipeline_rank, a) < ctx.schedule.stage_of(ctx.pipeline_rank, b);
  });
  for (int c : chunks)
    if (!reduced[static_cast<size_t>(c)]) reduce_chunk_grads(ctx, c, last_compute);
  // The reductions may have added compute (the mirrored copies' gradient sums).
  for (int32_t i = ctx.em.size() - 1; i > last_compute; --i)
    if (ctx.em.at(i).stream == StreamKind::Compute) {
      last_compute = i;
      break;
    }
  ctx.em.cursor = Cursor{};
  ctx.em.cursor.phase = Phase::GradSync;
  const int32_t synced = finalize_grads(ctx, last_compute);
  const auto& par = ctx.job.parallel;
  ctx.em.cursor.phase = Phase::Optimizer;
  int32_t norm = -1;
  if (ctx.grid.group_size(ParallelGroup::ModelParallel) > 1)
    norm = ctx.em.collective(OpKind::AllReduce, ParallelGroup::ModelParallel, StreamKind::DpComm, Site::GradNorm, 4.0,
                             {synced, ctx.last_grad_sync, last_compute});
  if (par.use_distributed_optimizer && ctx.dp_cp > 1)
    norm = ctx.em.collective(OpKind::AllReduce, ParallelGroup::DpCp, StreamKind::DpComm, Site::GradNorm, 4.0,
                             {synced, ctx.last_grad_sync, last_compute});
  // Without sharding, the expert optimizer's norm spans the expert model-parallel group.
  if (!par.use_distributed_optimizer && ctx.dims.experts > 0 && ctx.grid.group_size(ParallelGroup::ExpertTpEpPp) > 1)
    norm = ctx.em.collective(OpKind::AllReduce, ParallelGroup::ExpertTpEpPp, StreamKind::DpComm, Site::GradNormExpert,
                             4.0, {synced, ctx.last_grad_sync, last_compute});
  const BytesPerParameter bpp = bytes_per_parameter(ctx.job.training);
  const double shard = shard_parameters(ctx);
  const int32_t step = ctx.em.op(OpKind::OptimizerStep, Site::Adam, static_cast<int64_t>(std::llround(shard)), 1,
                                 optimizer_bytes(ctx), {norm, synced, ctx.last_grad_sync});
  if (!par.use_distributed_optimizer || par.overlap_param_gather) return;
  ctx.em.cursor.phase = Phase::ParamSync;
  for (int c = 0; c < ctx.schedule.num_chunks(); ++c) {
    ctx.em.cursor.chunk = static_cast<int16_t>(c);
    const std::vector<Bucket> buckets = chunk_buckets(ctx, c);
    for (size_t i = 0; i < buckets.size(); ++i) {
      const Bucket& b = buckets[i];
      if (dp_size(ctx, b.expert) == 1) continue;
      const int32_t ag = ctx.em.collective(OpKind::AllGather, dp_group(b.expert), StreamKind::DpComm,
                                           b.expert ? Site::EdpParamAg : Site::DpParamAg, b.elements * bpp.weights, {step});
      ctx.em.program().instructions[static_cast<size_t>(ag)].bucket = static_cast<int16_t>(i);
    }
  }
}

}  // namespace tandem::lower

namespace tandem {

double optimizer_step_bytes(const Job& job, double elements, int64_t dp) {
  const BytesPerParameter bpp = bytes_per_parameter(job.training);
  const bool dist = job.parallel.use_distributed_optimizer;
  constexpr double kFp32 = 4.0;
  // fp32 copies of 16-bit gradients (read 16-bit, write and read fp32), then per shard element:
  // read the gradient, read+write master weight and both moments, write the 16-bit weight.
  const double cast = bpp.gradients < kFp32 ? bpp.gradients + kFp32 + 2.0 * kFp32 : 0.0;
  const double per_shard = cast + kFp32 + (kFp32 + 6.0 * kFp32) + (kFp32 + bpp.weights);
  // The whole local gradient buffer: scaled and its norm taken (read+write), and zeroed and
  // unscattered around the data-parallel reduction when DP > 1.
  return elements * bpp.gradients * (2.0 + (dp > 1 ? 2.0 : 0.0)) + elements / (dist ? double(dp) : 1.0) * per_shard;
}

}  // namespace tandem
