#pragma once
// Private to program/ (backends include program/model_layout.h): the state shared by the
// lowering passes of one rank.
//
//   lower_rank.cpp      lower_rank, the context set-up it shares with rank_parameters
//   lower_emit.cpp      Dims (sizes of one microbatch on this rank), Emitter (appends instructions
//                       with provenance, stream-aware deps, tags)
//   lower_layer.cpp     one decoder layer: attention (MHA/GQA/MLA, CP ring) and dense MLP
//   lower_moe.cpp       the MoE block: router, dispatch, experts, combine, shared expert
//   lower_head.cpp      embedding, final norm + output layer + cross-entropy, MTP modules
//   lower_params.cpp    parameter tensors per chunk, persistent buffers, DP buckets
//   lower_sync.cpp      gradient reductions (bucketed, overlapped), grad norm, optimizer step,
//                       parameter all-gathers
//   lower_pipeline.cpp  the walk over the schedule's actions: recompute, deferral, PP messages,
//                       saved-activation buffers
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/job.h"
#include "core/parallel_grid.h"
#include "core/schedule.h"
#include "models/accounting.h"
#include "program/model_layout.h"
#include "program/program.h"

namespace tandem::lower {


// What a point-to-point message is for; part of its tag.
enum class TagPurpose : int { PpActivation = 1, PpGradient, CpForward, CpBackward, MirrorGrad };

// Tag of a message: unique per (purpose, recompute, index, microbatch, step, extra) in one
// iteration. index is a layer or a stage. CHECKs the field ranges.
int64_t make_tag(TagPurpose purpose, bool recompute, int64_t index, int64_t microbatch, int64_t step, int64_t extra = 0);

// Provenance stamped on every instruction the Emitter appends.
struct Cursor {
  int32_t layer = -1;
  int32_t microbatch = -1;
  int16_t chunk = -1;
  Phase phase = Phase::Setup;
  bool recompute = false;
};

// Keys of Emitter::param_gate for the model-level parameters (layers use their layer index).
inline constexpr int32_t kEmbeddingGate = -10;   // word + position embedding of stage 0
inline constexpr int32_t kHeadGate = -11;        // final norm, output layer (or its embedding copy)

// A weight-gradient instruction kept for a later BackwardWeight action (zero-bubble split).
struct DeferredGrad {
  Instruction ins;
  int64_t key = 0;         // param_key of the tensor it produces
  int64_t extra_key = -1;  // a second tensor the same kernel produces (positions with words), or -1
};

using Deps = std::initializer_list<int32_t>;   // negative entries are ignored

// Appends instructions to a program. Deps on instructions of the same stream are dropped
// (stream order implies them); deps must point to earlier instructions.
class Emitter {
 public:
  Emitter(RankProgram& program, DType dtype) : program_(program), dtype_(dtype) {}

  Cursor cursor;
  // When set, weight gradients go to this list instead of the program.
  std::vector<DeferredGrad>* defer_to = nullptr;
  // Instructions the next compute-stream instruction waits for, then cleared (a blocking
  // pipeline send: the stage computes on only once its message has left).
  std::vector<int32_t> compute_gate;

  int32_t size() const { return static_cast<int32_t>(program_.instructions.size()); }
  const Instruction& at(int32_t index) const { return program_.instructions[static_cast<size_t>(index)]; }
  RankProgram& program() { return program_; }

  // Appends `ins` (provenance from the cursor), returns its index.
  int32_t add(Instruction ins, Deps deps = {});
  int32_t add_dep_list(Instruction ins, const std::vector<int32_t>& deps);
  // Memory-bound compute op over m x n.
  int32_t op(OpKind kind, Site site, int64_t m, int64_t n, double bytes, Deps deps = {});
  // GEMM-like op (Gemm, GemmGradInput, GemmGradWeight): flops 2*m*n*k*batch; `expected_m` (> 0)
  // replaces m in flops/bytes for routed shapes.
  int32_t gemm(OpKind kind, Site site, int64_t m, int64_t n, int64_t k, int64_t batch, Deps deps = {},
               double expected_m = 0);
  // Weight gradient of parameter `key`: appended now and recorded as its producer, or deferred.
  // Returns the index, or -1 when deferred.
  int32_t weight_grad(Instruction ins, int64_t key, Deps deps = {}, int64_t extra_key = -1);
  int32_t collective(OpKind kind, ParallelGroup group, StreamKind stream, Site site, double bytes,
                     Deps deps = {});
  int32_t send(ParallelGroup group, StreamKind stream, Site site, int64_t peer, int64_t tag, double bytes,
               Deps deps = {});
  int32_t recv(ParallelGroup group, StreamKind stream, Site site, int64_t peer, int64_t tag, double bytes,
               Deps deps = {});
  // Buffers.
  int32_t new_buffer(Buffer buffer);
  int32_t alloc(int32_t buffer, Deps deps = {});
  int32_t free(int32_t buffer, Deps deps = {});

  // Last instruction that produced the gradient of each parameter tensor (param_key -> index).
  std::unordered_map<int64_t, int32_t> grad_producer;
  // Records `index` as a producer of `key`'s gradient and tells on_produced.
  void produced(int64_t key, int32_t index);
  std::function<void(int64_t key, int32_t index)> on_produced;
  // Instruction that must finish before a layer's parameters are used (overlapped param
  // all-gather), keyed by layer key; consumed by the first use.
  std::unordered_map<int32_t, int32_t> param_gate;
  int32_t take_param_gate(int32_t layer_key);

 private:
  void push_deps(Instruction& ins, Deps deps) const;
  RankProgram& program_;
  DType dtype_;
};

// Where the lowering of one rank stands; passed to every pass.
struct Context {
  const Job& job;
  const ParallelGrid& grid;
  const Schedule& schedule;
  int64_t rank = 0;
  int pipeline_rank = 0;
  DenseCoord dense;
  Dims dims;
  Emitter& em;
  // Group sizes seen from this rank.
  int64_t tp = 1, cp = 1, ep = 1, etp = 1, dp_cp = 1, edp = 1, tp_ep = 1;
  int64_t cp_next = -1, cp_prev = -1;   // CP ring neighbours (global ranks)
  int32_t last_grad_sync = -1;          // latest gradient reduction emitted (DpComm)
};

// The context of `rank` with its group sizes and CP ring neighbours; `em` appends to the program
// it was made with, whose rank and pipeline rank are set here (lower_rank.cpp).
Context rank_context(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank, Emitter& em);

// Global rank of pipeline rank `pp` with this rank's other dense coordinates.
int64_t pipeline_peer(const Context& ctx, int pp);

// ---- lower_layer.cpp: TP communication around column-/row-parallel layers. Each returns the
// instruction its consumer waits for (its input when no communication is needed).
int32_t tp_gather_input(Context& ctx, Site site, int64_t cols, int32_t x);   // SP: all-gather [n, cols]
int32_t tp_reduce_output(Context& ctx, Site rs_site, Site ar_site, int32_t x);   // [n, h]
int32_t tp_gather_output_grad(Context& ctx, Site site, int32_t dy);          // SP: all-gather [n, h]
// dX's reduction; `wgrad` (the layer's weight-gradient GEMM, -1 when deferred) runs beside it
// with the asynchronous TP all-reduce, before it without (--no-async-tensor-model-parallel-allreduce).
int32_t tp_reduce_input_grad(Context& ctx, Site rs_site, Site ar_site, int64_t cols, int32_t dx,
                             int32_t wgrad = -1);

// Attention core with the CP ring (lower_layer.cpp).
int32_t attention_core_forward(Context& ctx, int32_t layer, int32_t x);
int32_t attention_core_backward(Context& ctx, int32_t layer, int32_t dy);

// A TP-split MLP (dense MLP, shared expert): sites and parameter slots.
struct MlpNames {
  Site fc1_ag;
  Site fc1;
  Site act;
  Site fc2;
  Site fc2_rs;
  Site fc2_ar;
  Site fc2_grad_ag;
  Site fc1_wgrad_ag;
  Site fc1_grad_rs;
  Site fc1_grad_ar;
  ParamSlot fc1_slot;
  ParamSlot fc2_slot;
};
// [n/r, h] -> [n/r, h] (SP) or [n, h] -> [n, h]; ffn is the full hidden size (split over TP).
int32_t mlp_core_forward(Context& ctx, const MlpNames& names, int64_t ffn, int32_t x);
int32_t mlp_core_backward(Context& ctx, const MlpNames& names, int64_t ffn, int32_t layer, int32_t dy);

// ---- lower_layer.cpp: one decoder layer. `x` is the instruction that produced the layer input
// (or -1); returns the instruction producing its output (forward) or input gradient (backward).
// What a layer's backward replays (selective recompute, Megatron-Core's --recompute-modules).
struct LayerOptions {
  bool core_attn = false;        // the attention core, before its gradient
  bool layernorm = false;        // the input and pre-MLP norms, before the gradients that read them
  bool mla_up_proj = false;      // MLA's up projections and RoPE, before the core's gradient
  bool mlp = false;              // a dense MLP, before its gradient
  bool moe = false;              // a whole MoE block (router, dispatch, experts, combine)
  bool moe_act = false;          // the routed experts' activation, before its gradient
  bool shared_experts = false;   // the shared expert's MLP, before its gradient
};
LayerOptions layer_options(const Job& job);
int32_t layer_forward(Context& ctx, int32_t layer, bool moe, int32_t x);
int32_t layer_backward(Context& ctx, int32_t layer, bool moe, int32_t dy, const LayerOptions& options);

// ---- lower_moe.cpp: the MoE MLP block on the [n/r, h] shard after the pre-MLP norm.
int32_t moe_forward(Context& ctx, int32_t x);
int32_t moe_backward(Context& ctx, int32_t layer, int32_t dy, const LayerOptions& options);

// ---- lower_head.cpp: model-level parts of the first and last stages.
int32_t embedding_forward(Context& ctx);
int32_t embedding_backward(Context& ctx, int32_t dy);
int32_t head_forward(Context& ctx, int32_t x);    // final norm, output layer, loss (+ MTP)
int32_t head_backward(Context& ctx);               // returns the gradient of the decoder output
// Activation bytes the head keeps per microbatch (models/memory.cpp: output layer + MTP).
double head_activation_bytes(const Context& ctx);
double embedding_activation_bytes(const Context& ctx);

// ---- lower_params.cpp (tensors, buffers, buckets) and lower_sync.cpp (reductions, optimizer)
// Tensors of one decoder layer on this rank, in Megatron's registration order.
std::vector<ParamTensor> layer_tensors(const Dims& dims, int32_t layer, bool moe);
// Tensors of local chunk `chunk` (its stage), in registration order.
std::vector<ParamTensor> chunk_tensors(const Context& ctx, int chunk);

// DP buckets of one chunk in communication (backward) order, dense buffer first.
std::vector<Bucket> chunk_buckets(const Context& ctx, int chunk);

// Persistent parameter/gradient/optimizer buffers, allocated at program start.
void allocate_persistent(Context& ctx);
// The other rank holding the stage of local chunk `chunk` (DualPipe's mirrored copy), or -1.
int mirror_pipeline_rank(const Context& ctx, int chunk);
// Overlapped param all-gathers of `chunk`, emitted before its first forward (sets param gates).
void param_gather_before_forward(Context& ctx, int chunk);
// Gradient reduction of one chunk's buckets (deps on the gradients' producers and on `after`).
void reduce_chunk_grads(Context& ctx, int chunk, int32_t after = -1);

// --overlap-grad-reduce: issues a chunk's bucket reductions during its last weight-gradient
// action, each right after the instruction that produces the bucket's last gradient (Megatron's
// register_grad_ready). Chunks whose stage has a mirrored copy reduce after the action instead.
class BucketTracker {
 public:
  // Starts tracking `chunk`; false (and nothing tracked) when it cannot be done inline.
  bool begin(Context& ctx, int chunk);
  // Emits the buckets still pending (gradients produced outside the action) and stops.
  void end();

 private:
  void on_produced(int64_t key, int32_t index);
  void emit(size_t bucket);
  Context* ctx_ = nullptr;
  int chunk_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<int> pending_;                                   // [bucket] keys still to produce
  std::vector<bool> done_;                                     // [bucket]
  std::unordered_map<int64_t, int> remaining_;                 // key -> producers still expected
  std::unordered_map<int64_t, std::vector<size_t>> buckets_of_;   // key -> buckets holding it
};
// Everything after the last backward: remaining reductions, embedding and SP-norm all-reduces,
// grad norm, optimizer step, param all-gathers. `reduced[c]` tells which chunks were reduced.
void finish_iteration(Context& ctx, const std::vector<bool>& reduced, int32_t last_compute);


// ---- lower_pipeline.cpp
void lower_actions(Context& ctx);

}  // namespace tandem::lower
