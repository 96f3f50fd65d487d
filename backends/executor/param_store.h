#pragma once
// The parameters of one rank as real tensors, organised exactly as the program sees them.
//
// The lowering names every parameter tensor by (layer, slot) = param_key and groups them into
// data-parallel buckets per model chunk (program/lower_params.cpp). ParamStore takes that list
// (lower::rank_parameters, program/model_layout.h) and gives each entry real tensors:
//   column-parallel weights W [in, out/t] (+ bias [out/t]), row-parallel W [in/t, out] (+ bias
//   [out], whole on every TP rank), norms gamma [h] (+ beta [h]), word embedding and output layer
//   [V/t, h] (used with WeightLayout::OutIn), positions [P, h], router [h, E], local experts
//   [E/EP, h, cols/ETP] and [E/EP, f/ETP, h].
// Values and gradients of one bucket live in one flat buffer each, in bucket order (Megatron's
// _ParamAndGradBuffer): a bucket all-reduce / reduce-scatter / all-gather works in place. With
// the distributed optimizer the buffer is padded to dp * shard and this rank owns
// [dp_rank * shard, (dp_rank + 1) * shard); optimizer state exists for that range only.
//
// Initial values do not depend on the layout: every full tensor is drawn from a generator
// seeded by (seed, tensor name) and each rank keeps its shard (init_rng.h). Megatron's init:
// normal(0, std) for weights and embeddings, std / sqrt(2 L) for the output projections of
// residual branches (proj, fc2), ones for norm gains, zeros for biases.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/executor/device.h"
#include "core/job.h"
#include "core/parallel_grid.h"
#include "core/schedule.h"
#include "program/model_layout.h"

namespace tandem::exec {

// How a rank's shard is cut from the full tensor [R, C] (1-D tensors are [1, C]).
enum class ShardKind { Replicated, Rows, Columns, GatedColumns };

// The cut of one (expert's) full tensor [rows, cols] into part `part` of `parts`. GatedColumns
// keeps the same column block of both halves ([gate | up] of a SwiGLU fc1).
struct ShardRule {
  int64_t rows = 1, cols = 1;
  ShardKind kind = ShardKind::Replicated;
  int64_t parts = 1, part = 0;
  int64_t local_rows() const { return kind == ShardKind::Rows ? rows / parts : rows; }
  int64_t local_cols() const { return kind == ShardKind::Columns || kind == ShardKind::GatedColumns ? cols / parts : cols; }
  // Flat index in the full tensor of element (r, c) of the shard.
  int64_t full_index(int64_t r, int64_t c) const;
  // The shard [local_rows, local_cols] of `full` [rows, cols].
  std::vector<float> cut(const std::vector<float>& full) const;
};

struct Param {
  std::string name;           // layout-independent, e.g. "layers.3.qkv.weight", "embedding.word"
  int64_t key = 0;            // lower::param_key(layer, slot)
  int32_t layer = -1;
  lower::ParamSlot slot = lower::ParamSlot::InputNorm;
  int chunk = 0;
  bool bias = false;          // a bias or a LayerNorm beta
  bool tp_replicated = false; // whole on every TP rank
  bool sp_grad_sync = false;  // summed over TP after the backward (the lowering's tp_replicated)
  bool expert = false;
  bool shared_copy = false;   // the word embedding's copy on a rank without the first stage
  bool mirror_copy = false;   // a stage held twice (DualPipe): the copy not counted in the norm
  bool no_weight_decay = false;
  Shape shape;                // local
  // Initial value: full tensor rows x cols per expert (experts = 1 for dense), cut by shard.
  enum class Init { Normal, ScaledNormal, Ones, Zeros } init = Init::Normal;
  int64_t full_rows = 1, full_cols = 1, experts = 1, first_expert = 0;
  ShardKind shard = ShardKind::Replicated;
  int64_t parts = 1, part = 0;
  DeviceTensor value, grad;   // views into the bucket buffers

  ShardRule rule() const { return ShardRule{full_rows, full_cols, shard, parts, part}; }
  // Name of expert e's full tensor (the name itself for dense tensors).
  std::string full_name(int64_t local_expert) const {
    return expert ? name + "." + std::to_string(first_expert + local_expert) : name;
  }
};

// An AdamW range: elements [begin, end) of one parameter, with its optimizer state.
struct OptimSegment {
  Param* param = nullptr;
  int64_t begin = 0, end = 0;
  DeviceTensor exp_avg, exp_avg_sq;
  bool in_norm = true;        // counted in the global gradient norm on this rank
};

struct ParamBucket {
  int chunk = 0;
  int index = 0;              // the program's bucket index (Instruction::step of dp-grad)
  bool expert = false;
  ParallelGroup group = ParallelGroup::DpCp;
  int64_t dp = 1, dp_rank = 0;
  int64_t elements = 0;       // unpadded
  int64_t shard = 0;          // elements per DP rank (distributed optimizer), else elements
  DeviceTensor values, grads; // [dp * shard] or [elements]
  std::vector<Param*> params; // in buffer order
  std::vector<OptimSegment> segments;   // the range this rank updates
};

class ParamStore {
 public:
  ParamStore(Device& device, const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank);

  // Draws every tensor from (seed, name) and keeps this rank's shard; zeroes optimizer state.
  void initialize(int64_t seed, double init_std);
  void zero_grads();

  // The tensor of (layer, slot): the weight, or with bias = true its bias (nullptr if none).
  Param* find(int32_t layer, lower::ParamSlot slot, bool bias = false);
  Param& get(int32_t layer, lower::ParamSlot slot, bool bias = false);
  ParamBucket& bucket(int chunk, int index);
  std::vector<std::unique_ptr<Param>>& params() { return params_; }
  std::vector<std::vector<ParamBucket>>& buckets() { return buckets_; }
  bool distributed_optimizer() const { return distributed_; }

 private:
  void add_tensor(const lower::ParamTensor& t, int chunk);
  void build_buckets();

  Device& device_;
  const Job& job_;
  const ParallelGrid& grid_;
  int64_t rank_;
  bool distributed_ = false;
  const Schedule& schedule_;
  lower::RankParameters layout_;   // the lowering's tensors and buckets of this rank
  std::vector<std::unique_ptr<Param>> params_;
  std::vector<std::vector<ParamBucket>> buckets_;   // [chunk][index]
};

}  // namespace tandem::exec
