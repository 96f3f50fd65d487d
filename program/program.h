#pragma once
// The per-rank training program: what every interpreter (simulator, CPU, CUDA) carries out.
//
// lower_rank(job, grid, schedule, rank) turns the job + rank grid + pipeline schedule into the
// ordered instruction list of one rank for one training iteration. Instructions are issued in
// list order; each runs on a stream (compute, or one of the communication streams) and starts
// when (a) the previous instruction on its stream has finished and (b) every instruction in its
// `deps` has finished. That is the whole execution model: CUDA streams + events, SimGrid
// activities with successors, or an in-order CPU loop all honour it. Deps always point to
// earlier instructions; a dep on an instruction of the same stream is never needed.
//
// Buffers are named symbolically (parameter of layer L, saved activation of microbatch m /
// chunk c, gradient, optimizer state); Alloc/Free instructions give their lifetimes so that the
// simulator's peak memory and the real backends' allocations come from the same list. Parameter,
// gradient and optimizer-state buffers are allocated at program start and never freed; every
// other buffer is freed before the program ends.
//
// FLOPs count matrix products only (GEMMs, attention core, router), as models/accounting does,
// so that the FLOPs of all ranks add up to flops_per_iteration(job). Memory-bound ops carry
// their HBM traffic in `bytes` and 0 FLOPs.
//
// MoE sizes are expected values under balanced routing (instructions marked `routed`); real
// backends use the actual sizes, the simulator may redraw them from a routing model.
//
// Symmetry: ranks that share the pipeline coordinate have the same instruction list up to
// renaming of peers (groups are named by kind, so they are equal already); symmetry_class()
// says which.
//
// Ordering rules: what every interpreter may assume and must honour.
//   Collectives. The members of a group meet its collectives in the same order, the order of
//   their lists (lowering emits them so on every member). The real executor
//   (backends/executor/program_executor.h) relies on it: it issues every collective in list
//   order across all streams, so blocking MPI or NCCL collectives on different groups cannot
//   deadlock. The simulator does not keep that order: each collective starts when its stream and
//   deps allow, and the members of a group pair up in the order they reach its collectives.
//   Point to point. A Send and its Recv carry the same tag, unique per (sender, receiver) pair
//   and iteration, and match by (peer, tag), never by position. On a channel (sender ->
//   receiver) the sender issues its Sends in list order, the receiver its Recvs in list order.
//   Out-of-order channels. On most channels the k-th Recv names the k-th Send. The exceptions
//   are the pipeline channels listed, once, by out_of_order_channels(schedule)
//   (schedules/message_order.h): ZB-V, DualPipeV at PP >= 4, DualPipe at PP >= 8. Mirror-gradient
//   and context-parallel messages never add one (tests/message_order_test.cpp compares the
//   lowered programs). On those channels a backend must match by tag (MPI does; the NCCL communicator
//   announces tags and stages early messages, backends/cuda/p2p_matching.h) or buffer at the
//   receiver (the simulator); a backend that can do neither must refuse the layout with a
//   UserError naming the schedule.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/job.h"
#include "core/parallel_grid.h"
#include "core/schedule.h"
#include "program/op_site.h"

namespace tandem {

enum class OpKind : std::uint8_t {
  // Compute. Shapes in Instruction::{m,n,k,batch}; FLOPs and HBM bytes filled by lowering.
  Embedding,          // token (+ position) lookup: [tokens, h] written
  EmbeddingGrad,      // scatter-add into the embedding gradient (a weight gradient)
  Norm,               // LayerNorm / RMSNorm over [m = tokens, n = h]
  NormGrad,           // input and weight gradient of a norm
  Gemm,               // [m, k] x [k, n] -> [m, n], `batch` independent products (experts)
  GemmGradInput,      // dX [m, k] = dY [m, n] x W^T
  GemmGradWeight,     // dW [k, n] += X^T [k, m] x dY [m, n]
  // Causal attention core: batch = b x heads, m = s_q, n = s_kv, k = query/key head dim;
  // flops = 2 batch m n (k + value head dim), the full m x n square (MLA: value dim != k).
  // With CP (ring, causal load balancing: each rank holds sequence chunks i and 2CP-1-i) one
  // instruction per ring step: step 0 is the causal diagonal block of the local s/CP queries,
  // steps > 0 are off-diagonal blocks of which half is computed, unmasked. Without CP ring_step = -1.
  Attention,
  AttentionGrad,
  Rope,               // rotary embedding of q and k: m = tokens, n = (q + k heads) x rotary dim
  RopeGrad,
  Activation,         // GeLU / SwiGLU over [m = tokens, n = f] (n = f output columns)
  ActivationGrad,
  Elementwise,        // residual add, dropout, bias: memory-bound over `bytes`
  CrossEntropy,       // vocab-parallel softmax cross-entropy over [m = tokens, n = V/t]
  CrossEntropyGrad,
  Router,             // MoE router: [tokens, h] x [h, E] + top-k (m = tokens, k = h, n = E)
  RouterGrad,         // router input gradient (its weight gradient is a GemmGradWeight "router")
  Permute,            // MoE token permutation (dispatch side): m = token copies, n = h
  PermuteGrad,
  Unpermute,          // MoE token un-permutation + probability-weighted combine
  UnpermuteGrad,
  OptimizerStep,      // AdamW over the local shard: m = parameters, bytes = HBM traffic
  // Communication. Group in Instruction::group; bytes per rank in Instruction::bytes.
  Send,               // to Instruction::peer
  Recv,               // from Instruction::peer
  AllReduce,
  ReduceScatter,      // bytes = the full (unscattered) buffer
  AllGather,          // bytes = the full (gathered) buffer
  AllToAllV,          // bytes = what this rank sends to the other members (expected value for MoE)
  // Memory.
  Alloc,
  Free,
};

enum class StreamKind : std::uint8_t { Compute, TpComm, CpComm, EpComm, PpSend, PpRecv, DpComm };

// Which part of the iteration an instruction belongs to (time breakdown, traces).
enum class Phase : std::uint8_t {
  Setup,           // persistent allocations at program start
  Forward,
  Backward,        // input-gradient backward (the full backward when weights are not deferred)
  WeightGrad,      // deferred weight gradients (BackwardWeight actions)
  GradSync,        // data-parallel / embedding / sequence-parallel gradient reductions
  Optimizer,       // grad norm, optimizer step
  ParamSync,       // distributed-optimizer parameter all-gathers
};

bool is_compute(OpKind kind);
bool is_communication(OpKind kind);
bool is_collective(OpKind kind);   // AllReduce, ReduceScatter, AllGather, AllToAllV
bool is_memory(OpKind kind);
const char* to_string(OpKind kind);
const char* to_string(StreamKind kind);
const char* to_string(Phase phase);

// What a buffer holds; with (layer, microbatch, chunk) it names the buffer.
enum class BufferRole : std::uint8_t { Parameter, Gradient, OptimizerState, Activation, Workspace, Message };
const char* to_string(BufferRole role);
// Parameters, gradients and optimizer states live for the whole program.
inline bool is_persistent(BufferRole role) {
  return role == BufferRole::Parameter || role == BufferRole::Gradient || role == BufferRole::OptimizerState;
}

// Which part of the model a buffer belongs to. Persistent buffers: a decoder layer's tensors
// (Layer, with `layer`), the embedding's or the head's. Activation buffers (what one microbatch of
// one chunk keeps between its forward and backward): the embedding's, the input of a chunk's
// first layer (Input), a layer's saved activations (Layer), a recompute replay's (Replay), the head's.
enum class BufferPart : std::uint8_t { Layer, Input, Replay, Embedding, Head };
const char* to_string(BufferPart part);

// A buffer is a structured value; name() derives its text for people and traces
// ("act/layer/L3/mb5/c0", "param/L3", "grad/L3/experts/c1"), and nothing parses it back.
struct Buffer {
  BufferRole role = BufferRole::Activation;
  BufferPart part = BufferPart::Layer;
  int32_t layer = -1;        // global decoder layer (MTP layers follow), -1 for embedding / head
  int32_t microbatch = -1;   // activations: the microbatch; -1 for persistent buffers
  int16_t chunk = -1;        // activations: the action's chunk; persistent: the chunk with virtual stages, else -1
  bool experts = false;      // persistent: the routed experts' tensors of a layer
  double bytes = 0;
  std::string name() const;
  bool operator==(const Buffer&) const = default;
};

// What a simulator pass decided about one instruction of the simulator's copy of a program
// (backends/sim: MoE routing sizes, TP-overlap chunking). The lowering never attaches one, the
// real backends ignore it, the op trace does not show it; the executor reads it instead of
// being told which pass ran. Immutable and shared: copies of a program share their notes.
struct CostNote {
  // TP overlap: this instruction is piece `piece` (0-based) of an operation the pass split.
  int16_t piece = -1;
  // A compute piece costs `share` of the unsplit operation, whose rows, FLOPs and bytes these are
  // (the piece has the operation's other fields).
  double share = 1;
  int64_t whole_m = 0;
  double whole_flops = 0, whole_bytes = 0;
  // A communication piece after the first continues one pipelined exchange: it pays bandwidth
  // only, no latency of its own.
  bool continues_exchange = false;
  // MoE routing: rows per local expert of a grouped expert GEMM as the routing model drew them
  // (empty: the expected, even split).
  std::vector<int64_t> expert_rows;
  // MoE routing: bytes EP rank i sends to EP rank j in this all-to-all (row-major EP x EP, by EP
  // coordinate), played as flows with those sizes; null: Instruction::bytes split evenly.
  std::shared_ptr<const std::vector<double>> peer_bytes;
  bool operator==(const CostNote& o) const;
};

struct Instruction {
  OpKind kind = OpKind::Gemm;
  StreamKind stream = StreamKind::Compute;
  Phase phase = Phase::Forward;
  // Compute shape. GEMM: [m, k] x [k, n], `batch` of them. Attention: m = s_q, n = s_kv,
  // k = head dim, batch = micro-batch x heads on this rank. Elementwise/norm: m = rows, n = cols.
  // Routed (MoE) shapes are expected values rounded to integers; flops/bytes keep the exact value.
  int64_t m = 0, n = 0, k = 0, batch = 1;
  DType dtype = DType::BF16;
  double flops = 0;          // FLOPs this instruction performs on this rank (matrix products only)
  double bytes = 0;          // compute: HBM bytes read + written; comm: bytes (see OpKind); memory: buffer bytes
  // Communication.
  ParallelGroup group = ParallelGroup::Tp;   // collectives; Send/Recv: the dimension they cross (Pp, Cp)
  int64_t peer = -1;                         // Send / Recv: global rank
  int64_t tag = 0;                           // Send / Recv: equal on a Send and its Recv, unique per (peer pair, iteration)
  // Memory.
  int32_t buffer = -1;                       // Alloc / Free: index into RankProgram::buffers
  // Ordering beyond the stream: indices of earlier instructions of the same rank.
  std::vector<int32_t> deps;
  // Provenance, for traces and op-by-op comparison.
  int32_t layer = -1;                        // global decoder layer (MTP layers follow: L, L+1, ...), -1 outside layers
  int32_t microbatch = -1;
  int16_t chunk = -1;
  int16_t ring_step = -1;                    // CP ring step of attention and its KV messages, -1 otherwise
  int16_t bucket = -1;                       // DP bucket of a gradient reduction / parameter all-gather, -1 otherwise
  bool recompute = false;                    // replayed forward work (recompute)
  bool routed = false;                       // MoE: size depends on routing (expected value here)
  Site site = Site::None;                    // what it computes: qkv, fc1, dp-grad, ... (program/op_site.h)
  std::shared_ptr<const CostNote> cost;      // backends/sim passes only (see CostNote); null otherwise
  bool operator==(const Instruction&) const;
};

struct RankProgram {
  int64_t rank = 0;
  int64_t pipeline_rank = 0;
  std::vector<Instruction> instructions;
  std::vector<Buffer> buffers;
  // Sums over instructions, for checks and reports.
  double total_flops() const;               // compute instructions
  double peak_bytes() const;                // max over the list of the bytes allocated and not yet freed
  double persistent_bytes() const;          // parameters + gradients + optimizer states
};

// The schedule the job asks for (job.parallel.pipeline_schedule, its pipeline size, microbatches
// and virtual stages), with layers assigned per Megatron's split (interleaved: first/last layers
// divided over the chunks of the first/last rank; other layouts: first/last stage). UserError if
// the schedule does not accept the combination.
Schedule schedule_for_job(const Job& job);

// HBM bytes the optimizer step moves for a parameter tensor of `elements` on a rank whose
// data-parallel group (DP x CP, or expert DP) has `dp` members: the whole local gradient buffer,
// and the optimizer shard (elements / dp with the distributed optimizer) with its fp32 state.
double optimizer_step_bytes(const Job& job, double elements, int64_t dp);

// The program of one rank for one iteration. UserError for job features the lowering does not
// support (named in the message).
RankProgram lower_rank(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank);

// Ranks with equal programs up to renaming of peers get the same class id; class_representatives
// lists one rank per class (the smallest), in class order. Classes are the pipeline coordinates:
// every other coordinate only renames peers (MoE sizes are expected values, equal on all expert
// ranks; a routing model that makes expert ranks differ must split classes by expert coordinate).
int64_t symmetry_class(const Job& job, const ParallelGrid& grid, int64_t rank);
std::vector<int64_t> class_representatives(const Job& job, const ParallelGrid& grid);
// True when the two programs are equal in everything but the peers of their Send/Recv.
bool equal_up_to_peers(const RankProgram& a, const RankProgram& b);

// One line per instruction: "Gemm qkv L3 mb5 c0 m=.. n=.. k=.. batch=.. bytes=..", the op trace
// that `--trace-ops` writes and that backends compare rank by rank.
std::string op_trace_line(const Instruction& ins);
nlohmann::json program_to_json(const RankProgram& program);

}  // namespace tandem
