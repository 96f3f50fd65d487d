#pragma once
// The planner's analytic model: an iteration time for a candidate layout in microseconds of host
// time, from the same compute and communication costs the simulator uses.
//
// Compute. For each distinct shard of a layer (TP, CP, EP, ETP, micro-batch, recompute, sequence
// parallelism: a "probe"), one decoder layer of each kind (dense, MoE), the embedding and the head
// are lowered by program/lower_rank exactly as the simulator lowers them (pipeline 1, one
// microbatch) and every compute instruction is timed by the simulator's ComputeModel with the
// job's stack (kernel time; the host's launch time bounds the iteration from below, as the
// simulator's host clock does). Probes are cached: thousands of candidates share a few dozen of them.
// Communication. Each tensor-, context- and expert-parallel collective of the probe is costed in
// closed form (collective_cost.h) and counted as exposed by the rules the simulator plays:
// TP all-gathers for weight gradients and (with async TP) the input-gradient reductions run beside
// GEMMs; --tp-comm-overlap pipelines the rest in TP chunks (one chunk exposed); a CP ring step
// hides behind the attention of the previous step; MoE all-to-alls are exposed.
// Per stage and microbatch u_s = its layers' forward + backward (+ embedding on the first, head on
// the last stage). Then, for m microbatches, PP stages and v virtual stages per rank:
//   pipeline   m max_s u_s + (sum_s u_s - max_s u_s) / v     (1F1B and interleaved fill and drain;
//              other schedules: their unit-cost bubble from schedules/analysis, scaled)
//   p2p        2 (p - 1) message times on the fill path, + 2 m v per stage without --overlap-p2p
//   DP         gradient reduce-scatter (all-reduce without the distributed optimizer) over DP x CP
//              and the expert-DP group, overlapped with the last microbatch's backward when
//              --overlap-grad-reduce (one bucket always exposed), compute beside it slowed by the
//              stack's nccl_sm_fraction; parameter all-gather likewise against the first forward
//   optimizer  the probe's optimizer step per parameter x this rank's (sharded) parameters
// Memory: models/accounting's per-rank peak (the simulator's Alloc/Free peak for 1F1B, an upper
// bound with full recompute), OOM above the GPU's memory.
// Approximate: no link sharing between concurrent collectives, no stragglers, balanced MoE
// routing; the planner re-ranks its best candidates by full simulation.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "backends/sim/compute_model.h"
#include "plan/collective_cost.h"
#include "plan/space.h"

namespace tandem::plan {

struct Estimate {
  double iteration_time_s = 0;
  // Seconds, as the simulator's breakdown names them (the bottleneck stage's).
  double compute = 0, tp_comm = 0, cp_comm = 0, ep_comm = 0, pp_comm = 0, dp_comm = 0, pipeline_bubble = 0,
         optimizer = 0;
  double peak_memory_gib = 0;
  bool oom = false;
};

class CostModel {
 public:
  // `reference`: any resolved candidate job of the space (its GPU, stack and precision are used).
  explicit CostModel(const Job& reference);
  ~CostModel();

  // The candidate's estimate; `job` is its resolved job (check_candidate).
  Estimate evaluate(const SearchSpace& space, const Candidate& c, const Job& job);
  size_t probes() const { return probes_.size(); }

  struct Probe;

 private:
  const Probe& probe(const SearchSpace& space, const Candidate& c);
  double bubble_units(const Candidate& c, int64_t microbatches);

  sim::ComputeModel compute_;
  LinkRates links_;
  double nccl_sm_fraction_ = 0;
  std::unordered_map<std::string, std::unique_ptr<Probe>> probes_;
  std::unordered_map<std::string, double> bubbles_;
};

}  // namespace tandem::plan
