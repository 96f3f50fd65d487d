// The walk over one rank's schedule actions (core/schedule.h) that produces its program.
//
//   Forward(mb, c)         stage 0: embedding; the stage's layers; last stage: head (+ MTP).
//                          Saved activations: one buffer per (layer, mb, chunk) of
//                          activation_bytes_per_layer (models/accounting), allocated at the
//                          layer's forward; the embedding's dropout mask and the head's tensors
//                          likewise. Full recompute saves only each recompute group's input.
//   Backward(mb, c)        the mirror, layers in reverse; full recompute replays the forward of a
//                          group (recompute = true, its full activations allocated as a working
//                          set) before the group's backward; selective recompute replays the
//                          attention core before its gradient. With weight_deferred the weight
//                          gradients (and the frees) wait for the BackwardWeight action.
//   Send/Recv actions      [n/t, h] (SP shard, or Megatron's scatter/gather slice without SP,
//                          whose receiver all-gathers [n, h] over TP); n = s/CP * b; tags name
//                          (kind, microbatch, sending stage).
//                          Without --overlap-p2p-communication a send is blocking: the stage's
//                          next compute instruction waits for it (Megatron waits on its p2p
//                          requests before computing on).
//   Gradient reduction (lower_sync.cpp): with --overlap-grad-reduce during a chunk's last weight-
//   gradient action, each bucket right after its last gradient; otherwise after the last
//   backward. Then the optimizer.
// DualPipe's fused F&B pairs run one after the other (no intra-pair overlap is modelled).
#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"
#include "program/lower_context.h"

namespace tandem::lower {
namespace {

// Per (chunk, microbatch).
struct MicrobatchState {
  int32_t input = -1;          // instruction delivering the forward input (recv / gather)
  int32_t grad_input = -1;     // instruction delivering the output gradient
  int32_t forward_out = -1;
  int32_t backward_out = -1;
  std::vector<int32_t> layer_buffer;    // [position in stage] saved buffer or -1
  std::vector<int32_t> replay_buffer;   // [position in stage] recompute working set or -1
  int32_t embedding_buffer = -1;
  int32_t head_buffer = -1;
  std::vector<int32_t> to_free;         // buffers freed after deferred weight gradients
  std::vector<DeferredGrad> deferred;
};

// Recompute groups of one stage: positions [begin, end) replayed together; begin = -1 when a
// position is not recomputed.
struct RecomputePlan {
  std::vector<int> begin, end;
};

RecomputePlan recompute_plan(const TrainingConfig& t, int layers) {
  RecomputePlan p;
  p.begin.assign(static_cast<size_t>(layers), -1);
  p.end.assign(static_cast<size_t>(layers), -1);
  if (t.recompute_granularity != RecomputeGranularity::Full) return p;
  const int group = static_cast<int>(std::max<int64_t>(1, t.recompute_num_layers));
  for (int i = 0; i < layers; ++i) {
    const size_t k = static_cast<size_t>(i);
    if (t.recompute_method == RecomputeMethod::Uniform) {
      p.begin[k] = i / group * group;
      p.end[k] = std::min(layers, p.begin[k] + group);
    } else if (i < group) {
      p.begin[k] = i;
      p.end[k] = i + 1;
    }
  }
  return p;
}

class PipelineWalk {
 public:
  explicit PipelineWalk(Context& ctx) : ctx_(ctx), mem_(memory_options_for(ctx.job)) {
    const int chunks = ctx.schedule.num_chunks(), mbs = ctx.schedule.num_microbatches();
    state_.assign(static_cast<size_t>(chunks), std::vector<MicrobatchState>(static_cast<size_t>(mbs)));
    forwarded_.assign(static_cast<size_t>(chunks), false);
    reduced_.assign(static_cast<size_t>(chunks), false);
    final_grad_.assign(static_cast<size_t>(chunks), -1);
    const auto& actions = ctx.schedule.actions[static_cast<size_t>(ctx.pipeline_rank)];
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      const bool grads = a.kind == ActionKind::BackwardWeight || (a.kind == ActionKind::Backward && !a.weight_deferred);
      if (grads) final_grad_[static_cast<size_t>(a.chunk)] = static_cast<int>(i);
    }
  }

  void run() {
    const auto& actions = ctx_.schedule.actions[static_cast<size_t>(ctx_.pipeline_rank)];
    for (size_t i = 0; i < actions.size(); ++i) run_action(actions[i], static_cast<int>(i));
    int32_t last_compute = ctx_.em.size() - 1;
    while (last_compute >= 0 && ctx_.em.at(last_compute).stream != StreamKind::Compute) --last_compute;
    finish_iteration(ctx_, reduced_, last_compute);
  }

 private:
  MicrobatchState& state(const Action& a) {
    return state_[static_cast<size_t>(a.chunk)][static_cast<size_t>(a.microbatch)];
  }
  LayerRange layers_of(const Action& a) const { return ctx_.schedule.stage_layers[static_cast<size_t>(a.stage)]; }
  bool last_stage(const Action& a) const { return a.stage == ctx_.schedule.num_stages() - 1; }
  bool moe(int layer) const { return is_moe_layer(ctx_.job.model, layer); }

  void set_cursor(const Action& a, Phase phase) {
    ctx_.em.cursor = Cursor{};
    ctx_.em.cursor.microbatch = a.microbatch;
    ctx_.em.cursor.chunk = static_cast<int16_t>(a.chunk);
    ctx_.em.cursor.phase = phase;
  }

  int32_t activation_buffer(BufferPart part, int layer, const Action& a, double bytes) {
    Buffer b;
    b.role = BufferRole::Activation;
    b.part = part;
    b.layer = layer;
    b.microbatch = a.microbatch;
    b.chunk = static_cast<int16_t>(a.chunk);
    b.bytes = bytes;
    return ctx_.em.new_buffer(std::move(b));
  }

  void run_action(const Action& a, int index) {
    switch (a.kind) {
      case ActionKind::Forward: forward(a); break;
      case ActionKind::Backward: backward(a, index); break;
      case ActionKind::BackwardWeight: weight_grads(a, index); break;
      case ActionKind::SendActivation:
      case ActionKind::SendGradient: send(a); break;
      case ActionKind::RecvActivation:
      case ActionKind::RecvGradient: recv(a); break;
    }
  }

  void forward(const Action& a);
  void backward(const Action& a, int index);
  void backward_layer(const Action& a, const RecomputePlan& plan, int position, int32_t& dy);
  void weight_grads(const Action& a, int index);
  void release(MicrobatchState& st, int32_t buffer, bool deferred);
  void before_grads(const Action& a, int index);
  void after_grads(const Action& a, int index);
  void send(const Action& a);
  void recv(const Action& a);
  double message_bytes() const {
    const Dims& d = ctx_.dims;
    return double(d.n) * double(d.h) * double(d.e) / double(d.t);
  }

  Context& ctx_;
  MemoryOptions mem_;
  std::vector<std::vector<MicrobatchState>> state_;
  std::vector<bool> forwarded_, reduced_;
  std::vector<int> final_grad_;
  BucketTracker tracker_;
  bool tracking_ = false;
};

void PipelineWalk::forward(const Action& a) {
  if (!forwarded_[static_cast<size_t>(a.chunk)]) {
    param_gather_before_forward(ctx_, a.chunk);
    forwarded_[static_cast<size_t>(a.chunk)] = true;
  }
  set_cursor(a, Phase::Forward);
  MicrobatchState& st = state(a);
  const LayerRange range = layers_of(a);
  const RecomputePlan plan = recompute_plan(ctx_.job.training, range.size());
  const bool full = ctx_.job.training.recompute_granularity == RecomputeGranularity::Full;
  int32_t x = st.input;
  if (a.stage == 0) {
    st.embedding_buffer = activation_buffer(BufferPart::Embedding, -1, a, embedding_activation_bytes(ctx_));
    ctx_.em.alloc(st.embedding_buffer);
    x = embedding_forward(ctx_);
  }
  st.layer_buffer.assign(static_cast<size_t>(range.size()), -1);
  st.replay_buffer.assign(static_cast<size_t>(range.size()), -1);
  for (int i = 0; i < range.size(); ++i) {
    const int layer = range.begin + i;
    const size_t k = static_cast<size_t>(i);
    double bytes = -1;
    if (plan.begin[k] == i) bytes = activation_bytes_per_layer(ctx_.job, moe(layer), RecomputeGranularity::Full, mem_);
    else if (plan.begin[k] < 0 && full)
      bytes = activation_bytes_per_layer(ctx_.job, moe(layer), RecomputeGranularity::None, mem_);
    else if (plan.begin[k] < 0) bytes = activation_bytes_per_layer(ctx_.job, moe(layer), mem_);
    if (bytes >= 0) {
      st.layer_buffer[k] = activation_buffer(plan.begin[k] == i ? BufferPart::Input : BufferPart::Layer, layer, a, bytes);
      ctx_.em.alloc(st.layer_buffer[k]);
    }
    x = layer_forward(ctx_, layer, moe(layer), x);
  }
  if (last_stage(a)) {
    st.head_buffer = activation_buffer(BufferPart::Head, -1, a, head_activation_bytes(ctx_));
    ctx_.em.alloc(st.head_buffer);
    x = head_forward(ctx_, x);
  }
  st.forward_out = x;
}

void PipelineWalk::release(MicrobatchState& st, int32_t buffer, bool deferred) {
  if (buffer < 0) return;
  if (deferred) st.to_free.push_back(buffer);
  else ctx_.em.free(buffer);
}

void PipelineWalk::backward_layer(const Action& a, const RecomputePlan& plan, int position, int32_t& dy) {
  MicrobatchState& st = state(a);
  const LayerRange range = layers_of(a);
  const size_t k = static_cast<size_t>(position);
  const int layer = range.begin + position;
  if (plan.begin[k] >= 0 && position == plan.end[k] - 1) {
    // Replay the group's forward from its saved input, keeping its full activations.
    ctx_.em.cursor.recompute = true;
    int32_t x = -1;
    for (int j = plan.begin[k]; j < plan.end[k]; ++j) {
      const int l = range.begin + j;
      const double bytes = activation_bytes_per_layer(ctx_.job, moe(l), RecomputeGranularity::None, mem_);
      st.replay_buffer[static_cast<size_t>(j)] = activation_buffer(BufferPart::Replay, l, a, bytes);
      ctx_.em.alloc(st.replay_buffer[static_cast<size_t>(j)]);
      x = layer_forward(ctx_, l, moe(l), x);
    }
    ctx_.em.cursor.recompute = false;
  }
  const LayerOptions options = layer_options(ctx_.job);
  dy = layer_backward(ctx_, layer, moe(layer), dy, options);
  const bool deferred = ctx_.em.defer_to != nullptr;
  release(st, st.replay_buffer[k], deferred);
  release(st, st.layer_buffer[k], deferred);
}

void PipelineWalk::backward(const Action& a, int index) {
  set_cursor(a, Phase::Backward);
  MicrobatchState& st = state(a);
  ctx_.em.defer_to = a.weight_deferred ? &st.deferred : nullptr;
  if (!a.weight_deferred) before_grads(a, index);
  const LayerRange range = layers_of(a);
  const RecomputePlan plan = recompute_plan(ctx_.job.training, range.size());
  int32_t dy = st.grad_input;
  if (last_stage(a)) {
    dy = head_backward(ctx_);
    release(st, st.head_buffer, a.weight_deferred);
  }
  for (int i = range.size() - 1; i >= 0; --i) backward_layer(a, plan, i, dy);
  if (a.stage == 0) {
    dy = embedding_backward(ctx_, dy);
    release(st, st.embedding_buffer, a.weight_deferred);
  }
  st.backward_out = dy;
  ctx_.em.defer_to = nullptr;
  if (!a.weight_deferred) after_grads(a, index);
}

void PipelineWalk::weight_grads(const Action& a, int index) {
  set_cursor(a, Phase::WeightGrad);
  MicrobatchState& st = state(a);
  before_grads(a, index);
  for (DeferredGrad& d : st.deferred) {
    ctx_.em.cursor.layer = d.ins.layer;
    const int32_t i = ctx_.em.add(std::move(d.ins));
    ctx_.em.produced(d.key, i);
    if (d.extra_key >= 0) ctx_.em.produced(d.extra_key, i);
  }
  ctx_.em.cursor.layer = -1;
  st.deferred.clear();
  for (int32_t b : st.to_free) ctx_.em.free(b);
  st.to_free.clear();
  after_grads(a, index);
}

void PipelineWalk::before_grads(const Action& a, int index) {
  const size_t c = static_cast<size_t>(a.chunk);
  if (!ctx_.job.parallel.overlap_grad_reduce || final_grad_[c] != index) return;
  tracking_ = tracker_.begin(ctx_, a.chunk);
}

void PipelineWalk::after_grads(const Action& a, int index) {
  const size_t c = static_cast<size_t>(a.chunk);
  if (!ctx_.job.parallel.overlap_grad_reduce || final_grad_[c] != index) return;
  if (tracking_) tracker_.end();
  else reduce_chunk_grads(ctx_, a.chunk);
  tracking_ = false;
  reduced_[c] = true;
}

void PipelineWalk::send(const Action& a) {
  const bool act = a.kind == ActionKind::SendActivation;
  set_cursor(a, act ? Phase::Forward : Phase::Backward);
  const MicrobatchState& st = state(a);
  const TagPurpose purpose = act ? TagPurpose::PpActivation : TagPurpose::PpGradient;
  const int64_t tag = make_tag(purpose, false, a.stage, a.microbatch, 0);
  const int32_t sent = ctx_.em.send(ParallelGroup::Pp, StreamKind::PpSend, act ? Site::PpActivation : Site::PpGradient,
                                    pipeline_peer(ctx_, a.peer), tag, message_bytes(),
                                    {act ? st.forward_out : st.backward_out});
  // Megatron's p2p calls wait for their requests unless --overlap-p2p-communication.
  if (!ctx_.job.parallel.overlap_p2p_communication) ctx_.em.compute_gate.push_back(sent);
}

void PipelineWalk::recv(const Action& a) {
  const bool act = a.kind == ActionKind::RecvActivation;
  set_cursor(a, act ? Phase::Forward : Phase::Backward);
  MicrobatchState& st = state(a);
  const TagPurpose purpose = act ? TagPurpose::PpActivation : TagPurpose::PpGradient;
  const int sender_stage = act ? a.stage - 1 : a.stage + 1;
  const int64_t tag = make_tag(purpose, false, sender_stage, a.microbatch, 0);
  int32_t got = ctx_.em.recv(ParallelGroup::Pp, StreamKind::PpRecv, act ? Site::PpActivation : Site::PpGradient,
                             pipeline_peer(ctx_, a.peer), tag, message_bytes());
  if (!ctx_.dims.sp && ctx_.tp > 1) {
    // Megatron's scatter/gather: each TP rank received 1/t of the tensor.
    const Dims& d = ctx_.dims;
    got = ctx_.em.collective(OpKind::AllGather, ParallelGroup::Tp, StreamKind::TpComm, Site::PpGather,
                             double(d.n) * double(d.h) * double(d.e), {got});
  }
  (act ? st.input : st.grad_input) = got;
}

}  // namespace

void lower_actions(Context& ctx) { PipelineWalk(ctx).run(); }

}  // namespace tandem::lower
