#pragma once
// Pipeline schedule IR: pure data saying, for every pipeline rank, which compute and point-to-point
// actions it issues in one training iteration, in order. Schedules (schedules/) produce it; the
// lowering into a per-rank Program, the simulator and the real backends consume it unchanged.
//
// Vocabulary
//   rank      pipeline rank, [0, num_ranks).
//   chunk     model chunk held by a rank, [0, num_chunks) (Megatron's virtual pipeline stage).
//   stage     model stage, [0, num_stages): a contiguous block of layers. Stage 0 reads the input,
//             stage num_stages-1 computes the loss. A chunk holds exactly one stage.
//   path      the route of a microbatch through the stages: paths[p][stage] = (rank, chunk).
//             One path for most schedules; DualPipe has two (one per direction), so the same
//             stage is held by two ranks (twice the parameter memory).
//
// Semantics assumed by validation, analysis and lowering
//   - A rank executes its actions one after the other, in list order.
//   - Sends are eager (buffered): a send never blocks. A receive blocks until the matching send
//     was issued. Messages are identified by (kind, microbatch, sending stage).
//   - Forward(mb, chunk) of stage s > 0 needs the activation of stage s-1; Backward(mb, chunk)
//     of stage s < num_stages-1 needs the gradient from stage s+1 and needs Forward(mb, chunk);
//     BackwardWeight(mb, chunk) needs Backward(mb, chunk).
//   - Activations of (mb, chunk) are live from its Forward until its weight gradient is done:
//     the BackwardWeight, or the Backward when weight_deferred is false.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tandem {

enum class ActionKind : std::uint8_t {
  Forward,         // forward of (microbatch, chunk)
  Backward,        // input-gradient backward; the full backward when !weight_deferred
  BackwardWeight,  // weight-gradient part of a Backward with weight_deferred
  SendActivation,  // after Forward: output of `stage` to `peer`, which computes stage + 1
  RecvActivation,  // before Forward: input of `stage` from `peer`, which computed stage - 1
  SendGradient,    // after Backward: input gradient of `stage` to `peer`, which computes stage - 1
  RecvGradient,    // before Backward: output gradient of `stage` from `peer` (stage + 1)
};

const char* to_string(ActionKind kind);
// One-letter code used in timelines and traces: F, B, W, s/r (activation), S/R (gradient).
char short_code(ActionKind kind);
bool is_compute(ActionKind kind);
bool is_send(ActionKind kind);
bool is_recv(ActionKind kind);

struct Action {
  ActionKind kind = ActionKind::Forward;
  int microbatch = 0;   // [0, num_microbatches)
  int chunk = 0;        // local chunk on this rank, [0, num_chunks)
  int stage = 0;        // model stage of `chunk` on this rank
  int peer = -1;        // send/recv only: the other rank
  int peer_chunk = -1;  // send/recv only: the chunk on `peer` that produces/consumes the tensor
  // Backward only: true when a later BackwardWeight of the same (microbatch, chunk) computes the
  // weight gradient (zero-bubble split); false when this Backward is the full backward.
  bool weight_deferred = false;
  // Compute only: this action and the next compute action on the rank run as one overlapped unit
  // (DualPipe's F&B). Receives of both come before the pair, sends of both after it.
  bool fused_with_next = false;
};

bool operator==(const Action& a, const Action& b);

struct StageLocation {
  int rank = 0;
  int chunk = 0;
};

// Layers [begin, end) of the model held by one stage.
struct LayerRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
};

// Where stages live and how microbatches travel: the part of a schedule that is not ordering.
struct StageLayout {
  int num_ranks = 0;
  int num_microbatches = 0;
  int num_chunks = 0;
  int num_stages = 0;
  std::vector<std::vector<int>> chunk_stage;          // [rank][chunk] -> stage
  std::vector<std::vector<StageLocation>> paths;      // [path][stage] -> location
  std::vector<int> microbatch_path;                   // [microbatch] -> path
};

// Standard layouts. All take ranks >= 1, microbatches >= 1 (checked).
// Linear: stage r on rank r (GPipe, 1F1B, ZB-H1/H2).
StageLayout linear_layout(int ranks, int microbatches);
// Interleaved (Megatron virtual pipeline): stage c*ranks + r on rank r, chunk c.
StageLayout interleaved_layout(int ranks, int chunks, int microbatches);
// V shape (ZB-V, DualPipeV): chunk 0 of rank r holds stage r, chunk 1 holds stage 2*ranks-1-r;
// the turn at the bottom (stage ranks-1 -> ranks) stays on the last rank.
StageLayout v_layout(int ranks, int microbatches);
// Bidirectional (DualPipe): ranks stages; microbatches [0, m/2) enter at rank 0 and use chunk 0
// (stage r on rank r), microbatches [m/2, m) enter at the last rank and use chunk 1
// (stage s on rank ranks-1-s).
StageLayout bidirectional_layout(int ranks, int microbatches);

struct Schedule {
  std::string name;
  StageLayout layout;
  // [stage] work of the stage, in units of 1/num_ranks of the model (uniform split:
  // num_ranks/num_stages each). Scales action costs and activation memory.
  std::vector<double> stage_work;
  std::vector<LayerRange> stage_layers;       // [stage]; empty until assign_layers()
  std::vector<std::vector<Action>> actions;   // [rank], in issue order

  int num_ranks() const { return layout.num_ranks; }
  int num_microbatches() const { return layout.num_microbatches; }
  int num_chunks() const { return layout.num_chunks; }
  int num_stages() const { return layout.num_stages; }

  // Where `microbatch` computes `stage`.
  StageLocation location(int microbatch, int stage) const;
  int stage_of(int rank, int chunk) const { return layout.chunk_stage[rank][chunk]; }
  // Fraction of the model's parameters held by `rank`, in units of 1/num_ranks of the model
  // (1 for every rank of a plain pipeline, 2 for DualPipe).
  double parameter_share(int rank) const;
};

// One compute step as a schedule author writes it; make_schedule adds the rest.
struct ComputeStep {
  ActionKind kind = ActionKind::Forward;  // Forward, Backward or BackwardWeight
  int microbatch = 0;
  int chunk = 0;
  bool fused_with_next = false;
};
using ComputeOrder = std::vector<std::vector<ComputeStep>>;  // [rank]

// Builds a schedule from a layout and the per-rank compute order: fills `stage`, sets
// weight_deferred on each Backward that has a BackwardWeight on the same rank, and inserts the
// implied communication: a receive right before the compute (or fused pair) that consumes it and
// a send right after the compute (or fused pair) that produces it. Transitions between two
// chunks of the same rank need no communication. Ids out of range are programmer errors.
Schedule make_schedule(std::string name, StageLayout layout, const ComputeOrder& order);

// Layer assignment. layers_per_stage[s] > 0 for all s; fills stage_layers and stage_work
// (stage_work[s] = layers_per_stage[s] * num_ranks / total layers). UserError on a bad count.
void assign_layers(Schedule& schedule, const std::vector<int>& layers_per_stage);
// Even split of num_layers over num_stages, except the first and last stages when
// first_stage_layers / last_stage_layers are > 0 (Megatron's uneven first/last pipeline stages);
// the middle stages must split the rest evenly. UserError names the offending value.
std::vector<int> split_layers(int num_layers, int num_stages, int first_stage_layers = 0,
                              int last_stage_layers = 0);
// Megatron's rule for interleaved layouts: first/last apply to the first/last pipeline rank and
// are divided evenly over its chunks; result is indexed by stage (c * ranks + r).
std::vector<int> megatron_split_layers(int num_layers, int ranks, int chunks,
                                       int first_rank_layers = 0, int last_rank_layers = 0);

// Megatron's account_for_embedding/loss_in_pipeline_split: (num_layers + embedding + loss) split
// evenly over num_stages virtual stages (indexed c * ranks + r), then the first stage gives one
// layer to the embedding and the last one to the loss. UserError when it does not divide.
std::vector<int> accounted_split_layers(int num_layers, int num_stages, bool embedding, bool loss);

// "Forward(mb 3, chunk 1, stage 6)", "RecvGradient(mb 0, chunk 0, stage 2) from rank 3".
std::string describe(const Action& action);

// JSON form for consumers outside C++: layout, stage_work, stage_layers, and per rank the list
// of actions {kind, microbatch, chunk, stage[, peer, peer_chunk][, weight_deferred][, fused]}.
nlohmann::json schedule_to_json(const Schedule& schedule);

}  // namespace tandem
