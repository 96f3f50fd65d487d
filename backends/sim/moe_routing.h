#pragma once
// The MoE routing model of the simulator: how many token copies each expert receives in each
// (MoE layer, micro-batch), and what that does to the routed instructions of a rank's program.
//
// The lowering (program/lower_moe.cpp) emits every size that depends on routing as its expected
// value under balanced routing and marks it `routed`. This model redraws those sizes:
//
//   balanced  every expert gets tokens x topk / E copies from every source rank (exact split,
//             fractional: the lowering's expected sizes)
//   zipf      expert popularity p(e) ~ 1 / rank(e)^s, where rank is a per-layer permutation of
//             the experts drawn from the seed (which expert is hot differs per layer). Each
//             source rank draws its tokens x topk copies from p as a multinomial (conditional
//             binomials in expert order), then no expert takes more than `tokens` copies of one
//             source (top-k picks distinct experts); excess copies go to the most popular experts
//             with room. Every draw uses a counter-based generator keyed by (seed, layer,
//             micro-batch, source, expert), so results are byte-identical between runs and do
//             not depend on the order in which they are asked for.
//   trace     loads recorded from a real run (format below); every source rank routes as the
//             recorded rank did, scaled to its own copies (largest remainder) if they differ.
//
// Sources: the ranks of one expert-parallel group, by EP coordinate j = 0..EP-1. A rank's
// draw depends on its EP coordinate only (not on tp, cp or which data-parallel replica it is
// in): every expert-parallel group routes alike, which keeps the symmetry reduction exact
// (ranks that differ in the EP coordinate are different symmetry classes).
//
// Capacity (Megatron's --moe-expert-capacity-factor, moe_utils.get_capacity and
// topk_softmax_with_capacity): the router of each source computes
//   capacity = ceil(tokens x topk / E x capacity_factor)
// over its local tokens, and drops per expert the copies beyond capacity (drop policy "probs":
// the lowest routing weights; which copies is immaterial here, only how many). Dropped copies are
// neither sent, computed nor combined. Padding every expert to capacity
// (--moe-pad-expert-input-to-capacity) is not modelled.
//
// Expert placement: EP rank j holds experts [j E/EP, (j+1) E/EP) (Megatron's contiguous split).
// After dispatch, local expert e of EP rank j processes ETP x sum over sources of their kept
// copies for e (the expert-TP group gathers its members' tokens).
//
// Trace file (JSON), written by `tandem train --record-routing FILE`:
//   { "format": "tandem-moe-routing-trace", "experts": E, "topk": k,
//     "tokens": T,                       (optional: tokens per router call of the recorded rank)
//     "layers": [ [ [c_0, ..., c_{E-1}],   MoE layer 0 (first MoE layer of the model), micro-batch 0
//                   [ ... ], ... ],        micro-batch 1, ...
//                 ... ] }                  one entry per MoE layer, in layer order (MTP last)
// c_e = token copies the router sent to expert e before capacity dropping (sum = T x k). A job
// with more micro-batches than the trace reuses them cyclically.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/job.h"
#include "core/parallel_grid.h"
#include "program/program.h"

namespace tandem::sim {

class ComputeModel;

// One (MoE layer, micro-batch) of one expert-parallel group.
struct RoutingDraw {
  std::vector<double> sent;    // [EP x EP] kept copies source i sends to the experts of EP rank j
  std::vector<double> kept;    // [E] kept copies per expert, summed over the EP sources (no ETP factor)
  std::vector<double> routed;  // [E] copies per expert before capacity dropping
  double dropped = 0;          // copies dropped by capacity, summed over the sources
};

// Imbalance of one MoE layer over the iteration (one expert-parallel group).
struct LayerImbalance {
  int64_t layer = 0;               // global decoder layer
  double max_over_mean = 1;        // max over micro-batches of max_e routed(e) / mean_e routed(e)
  double max_load = 0;             // copies: the largest routed(e) of any micro-batch
  double mean_load = 0;            // copies: mean_e routed(e)
  double dropped = 0;              // copies dropped by capacity, summed over micro-batches
};

struct RoutingSummary {
  std::string model;               // balanced | zipf | trace
  std::vector<LayerImbalance> layers;
  double max_over_mean = 1;        // max over layers
  double dropped_fraction = 0;     // dropped / routed copies over the iteration
  double dropped_copies = 0;       // per expert-parallel group and iteration
};

class MoeRoutingModel {
 public:
  // The job's routing model (training.moe_routing). UserError naming --moe-routing-trace and
  // the file for a missing, malformed or mismatched trace. `job` must be resolved and MoE.
  MoeRoutingModel(const Job& job, const ParallelGrid& grid);

  MoeRouting kind() const { return kind_; }
  // True when every draw equals the lowering's expected sizes (balanced, no capacity drops):
  // the programs need no change.
  bool is_expected() const { return expected_; }
  const std::vector<int64_t>& moe_layers() const { return moe_layers_; }
  int64_t tokens() const { return tokens_; }       // tokens per router call of one rank (n / r)
  int64_t copies() const { return tokens_ * topk_; }
  int64_t experts() const { return experts_; }
  int64_t ep() const { return ep_; }
  int64_t etp() const { return etp_; }
  double capacity() const { return capacity_; }    // copies per expert per source; 0: dropless
  double bytes_per_row() const { return bytes_per_row_; }   // one token copy of h elements
  size_t ordinal(int64_t layer) const;              // MoE layer ordinal of a global layer (CHECK)

  // Copies per expert that EP source `source` routes in (layer, microbatch), before capacity.
  std::vector<double> source_loads(int64_t layer, int64_t microbatch, int64_t source) const;
  // The whole group's draw for (layer, microbatch), cached (the simulator is single-threaded).
  const RoutingDraw& draw(int64_t layer, int64_t microbatch) const;
  // Summary over all MoE layers and the job's micro-batches.
  RoutingSummary summary() const;
  // all_to_all_bytes(*this, x), made once per (layer, microbatch, direction) and shared by every
  // program's note that plays it.
  std::shared_ptr<const std::vector<double>> shared_all_to_all_bytes(const Instruction& x) const;

 private:
  std::vector<double> zipf_loads(int64_t layer, int64_t microbatch, int64_t source) const;
  std::vector<double> trace_loads(int64_t layer, int64_t microbatch) const;
  void load_trace(const std::string& path);

  MoeRouting kind_ = MoeRouting::Balanced;
  double zipf_s_ = 1;
  uint64_t seed_ = 0;
  int64_t tokens_ = 0, topk_ = 1, experts_ = 1, ep_ = 1, etp_ = 1, microbatches_ = 1;
  double capacity_ = 0;
  double bytes_per_row_ = 0;
  bool expected_ = true;
  std::vector<int64_t> moe_layers_;                       // global layer ids, ascending
  std::map<int64_t, size_t> ordinal_;                     // global layer -> MoE layer ordinal
  std::vector<std::vector<std::vector<double>>> trace_;   // [ordinal][microbatch][E]
  mutable std::map<std::pair<int64_t, int64_t>, RoutingDraw> draws_;
  mutable std::map<std::tuple<int64_t, int64_t, bool>, std::shared_ptr<const std::vector<double>>> peer_bytes_;
};

// Redraws the routed instructions of `base` (a program of a rank with EP coordinate `ep_rank`)
// from the model: permute/unpermute/activation sizes, expert-TP gathers, per-expert GEMM rows,
// FLOPs and HBM bytes, and the saved-activation buffers of MoE layers (so imbalance shows in
// peak memory). All-to-all(v) bytes become this rank's real sends. What the executor needs
// beyond sizes travels in each instruction's CostNote: the rows per local expert of a grouped
// GEMM, and the per-peer bytes of an all-to-all (all_to_all_bytes()).
RankProgram apply_routing(const RankProgram& base, const Job& job, const ParallelGrid& grid,
                            const MoeRoutingModel& model, int64_t ep_rank);

// Bytes EP rank i sends to EP rank j in a routed AllToAllV (row-major EP x EP, by EP coordinate),
// from its site: dispatch / combine-grad go to the experts, combine / dispatch-grad come back.
std::vector<double> all_to_all_bytes(const MoeRoutingModel& model, const Instruction& x);

// Time factor of a grouped expert GEMM with unequal groups over the same GEMM with `x.m` rows in
// every group (x as redrawn: m = rounded mean rows): the GPU runs one grouped GEMM whose CTAs
// share waves, so its time follows the total rows and tile quantisation of each group; a weight
// gradient (reduction over the rows) is at least as long as its largest group alone.
double grouped_gemm_factor(const ComputeModel& model, const Instruction& x, const std::vector<int64_t>& rows);

nlohmann::json summary_to_json(const RoutingSummary& summary);
RoutingSummary summary_from_json(const nlohmann::json& json);

}  // namespace tandem::sim
