#pragma once
// The simulator's entry point: play one training iteration of a job on a SimGrid platform built
// from its cluster, and report time, throughput, utilisation, memory and where the time went.
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "backends/sim/moe_routing.h"
#include "core/job.h"

namespace tandem::sim {

struct Stack;

struct SimOptions {
  // The software stack (backends/sim/stack.h) to use instead of the job's (tandem fit's candidates).
  std::shared_ptr<const Stack> stack;
  // Compute-time sensitivities (tandem fit): for each of these stacks, the critical rank's compute
  // time had its compute instructions been timed with that stack's compute model instead (same
  // programs, same schedule, no replay): SimResult::sensitivity_busy_s.
  std::vector<std::shared_ptr<const Stack>> sensitivity_stacks;
  bool all_ranks = false;                 // faithful mode: play every rank, no symmetry reduction
  // A reduced run plays only tensor-parallel rank 0 where the other tp ranks are exact copies
  // (executor.h, narrow_to_tensor_rank_zero); false plays every tp rank of the replica, for checking.
  bool tensor_parallel_copies = true;
  // Under balanced MoE routing the expert-parallel ranks are symmetric: a reduced run plays one
  // data-parallel slice and the expert-parallel all-to-alls one-sided (replica_layout); false
  // widens the played block until it holds whole expert-parallel groups, for checking.
  bool expert_parallel_copies = true;
  // DualPipe's F&B pairs cut at their expert-parallel communication and merged (fused_pairs.h);
  // false plays each pair's forward then its backward, for checking.
  bool overlap_fused_pairs = true;
  std::optional<std::string> profile;     // measured per-op profile replacing the analytical compute model
  std::optional<std::string> trace_path;  // Chrome-trace JSON of the played ranks
  std::optional<std::string> op_trace_path;  // per-rank op trace (kind, shapes, group, bytes)
  // Called now and then with (fraction done in [0, 1], message); may be empty.
  std::function<void(double, const std::string&)> progress;
  // With several datacenters: also simulate the same job (same placement) on an ideal WAN, in a
  // forked child, for WanReport::ideal_iteration_s (about doubles the time of such a run).
  bool wan_baseline = true;
};

// Seconds of one iteration attributed to each cause, on the critical rank (the slowest played
// rank); they add up to iteration_time_s. The compute stream's busy time is compute (optimizer
// for the optimizer phase); each stretch it sits idle goes to what it waited for, followed back
// along the chain of causes: a collective's own duration to its group's field (tp, cp, ep, dp;
// optimizer-phase ones such as the gradient norm to optimizer), a pipeline receive's transfer to
// pp_comm and its wait for the sender to pipeline_bubble.
struct Breakdown {
  double compute = 0;          // compute kernels (incl. recompute)
  double tp_comm = 0;          // exposed (not overlapped) tensor-parallel communication
  double cp_comm = 0;
  double ep_comm = 0;
  double pp_comm = 0;          // exposed pipeline send/recv beyond the bubble
  double dp_comm = 0;          // exposed data-parallel gradient / parameter communication
  double pipeline_bubble = 0;  // idle waiting for pipeline neighbours
  double optimizer = 0;
};

struct RankResult {
  int64_t rank = 0;
  double busy_s = 0;           // compute time
  double peak_memory_bytes = 0;
  int64_t symmetry_class = 0;
  double finish_s = 0;         // when its last instruction finished (s)
  Breakdown breakdown;         // of its compute stream over [0, finish_s]; sums to finish_s
  double peer_wait_s = 0;      // of its collectives' exposed seconds: waiting for the last member to start
};

// Who waits for whom: rows of per-rank seconds over one iteration, for the slowest played rank
// (most compute seconds), the critical rank, and means over the slowest rank's peers and the rest.
// compute + pipeline + collectives + data_parallel + optimizer + idle_at_end = iteration time.
struct WaitRow {
  std::string who;             // "slowest", "critical", "pipeline peers", "data-parallel peers",
                               // "tensor/context-parallel peers", "others"
  int64_t rank = -1;           // the rank, or -1 for a mean over `count` ranks
  int64_t count = 1;
  double busy_s = 0;           // compute kernels on every stream
  double compute_s = 0;        // compute stream: compute kernels (breakdown.compute)
  double pipeline_s = 0;       // pipeline bubble + exposed pipeline send/receive
  double collectives_s = 0;    // exposed TP, CP and EP communication
  double data_parallel_s = 0;  // exposed data-parallel communication
  double optimizer_s = 0;
  double peer_wait_s = 0;      // of collectives + data_parallel + optimizer: waiting for a late member
  double idle_at_end_s = 0;    // iteration time - the rank's finish
};

// How much the simulation played (for benchmarks and reports; not part of the JSON).
struct SimCounts {
  int64_t instructions = 0;          // over played ranks
  int64_t network_operations = 0;    // operations played with SimGrid flows
  int64_t flows = 0;                 // SimGrid communications of played ranks
  int64_t ghost_flows = 0;           // SimGrid communications standing for unplayed ranks
  int64_t analytic_collectives = 0;  // collectives inside one node, costed without flows
};

// Traffic between datacenters in one iteration (jobs on more than one datacenter).
struct WanReport {
  std::string placement;   // ParallelConfig::dc_placement: rank-order, pp, dp or ep
  double bytes = 0;        // sent between datacenters by all ranks, all directions
  std::vector<std::vector<double>> bytes_by_direction;  // [from datacenter][to datacenter], bytes
  // Seconds of the critical rank's iteration its compute stream waited on communication with flows
  // between datacenters: the part of the breakdown's exposed communication (tp/cp/ep/pp/dp_comm,
  // optimizer-phase collectives) charged to such operations, from when the exchange could begin
  // (a receive's sender had posted, a collective's members had all started it). Waits for
  // the peers themselves are not counted, so a bubble lengthened by WAN hops upstream is not
  // either: cost_s is the whole figure.
  double exposed_s = 0;
  // The iteration time of the same job and placement on an ideal WAN (no latency, bandwidth
  // 1e15 bytes/s), when SimOptions::wan_baseline; cost_s = iteration time - that: everything the
  // WAN costs, bubbles included. Both -1 when not computed.
  double ideal_iteration_s = -1;
  double cost_s = -1;
};

struct SimResult {
  double iteration_time_s = 0;
  double tokens_per_s = 0;
  double model_tflops_per_gpu = 0;      // Megatron's model FLOPs (no recompute) / time / GPUs
  double hardware_tflops_per_gpu = 0;   // with recompute
  double mfu = 0;                       // model TFLOP/s / peak (job dtype)
  double hfu = 0;
  double peak_memory_gib = 0;           // max over ranks, from the program's Alloc/Free
  bool oom = false;                     // some rank exceeds the GPU's memory
  Breakdown breakdown;                  // of the critical rank
  int64_t critical_rank = 0;            // the played rank that finishes last (smallest on ties)
  int64_t ranks_played = 0;             // actors simulated
  int64_t symmetry_classes = 0;
  bool symmetry_reduced = false;        // true when not every rank was played
  double wall_seconds = 0;              // host time the simulation took (not in the JSON)
  SimCounts counts;                     // not in the JSON
  std::vector<RankResult> ranks;        // played ranks
  std::vector<WaitRow> waits;           // who waits for whom (rows as in WaitRow::who that have ranks)
  // [SimOptions::sensitivity_stacks]: the critical rank's busy seconds under each of those stacks
  // (its busy_s x the ratio of its compute instructions' model times); empty when none asked.
  std::vector<double> sensitivity_busy_s;
  std::string stack;                    // software stack the compute and NCCL efficiencies came from
  std::vector<std::string> notes;       // approximations the user should know about
  std::optional<RoutingSummary> moe_routing;   // MoE jobs: the routing model and its imbalance
  std::optional<WanReport> wan;         // jobs on more than one datacenter
};

// The dense peak MFU refers to (FP8 when the job trains in FP8, FP32 for FP32 jobs, else BF16/FP16);
// `which` (optional) gets its name.
double peak_flops(const Job& job, std::string* which = nullptr);

// Busy seconds of the critical rank (its RankResult), or compute + optimizer when it is not listed.
double critical_busy_s(const SimResult& result);

// UserError for a job the simulator cannot play (e.g. unknown GPU model file). SimGrid allows one
// engine per process: call simulate() at most once per process (or use simulate_in_subprocess).
// `job` must be resolved (core/job_loader.h).
SimResult simulate(const Job& job, const SimOptions& options = {});

// simulate() in a forked child process, for callers that simulate several jobs (tandem reproduce).
// Same result, wall_seconds and counts included; a UserError in the child is rethrown as UserError,
// other failures as std::runtime_error. Traces and progress work as in simulate().
SimResult simulate_in_subprocess(const Job& job, const SimOptions& options = {});

// Several simulate() calls, each in a forked child, at most `parallel` at a time (the caller stays
// single-threaded); results in the order of `requests`. The first failure is rethrown once the
// running children are done.
struct SimRequest {
  const Job* job = nullptr;
  SimOptions options;
};
std::vector<SimResult> simulate_many_in_subprocesses(const std::vector<SimRequest>& requests, int parallel);

// The same, one outcome per request, failures kept apart: the result, or the error the child
// reported, or timed_out when it ran longer than timeout_s (> 0) and was killed. on_done (optional)
// is called with the number of requests finished so far.
struct SimOutcome {
  std::optional<SimResult> result;
  std::exception_ptr error;
  bool timed_out = false;
};
std::vector<SimOutcome> simulate_each_in_subprocesses(const std::vector<SimRequest>& requests, int parallel,
                                                      double timeout_s = 0,
                                                      const std::function<void(size_t)>& on_done = {});
// An outcome as text (JSON: the result with its host time and counts, or the error, UserError kept
// apart) and back: how a child process answers, and how MPI ranks exchange outcomes.
std::string outcome_to_text(const SimOutcome& outcome);
SimOutcome outcome_from_text(const std::string& text);

// JSON fields documented in README: iteration_time_s, tokens_per_s, model_tflops_per_gpu,
// hardware_tflops_per_gpu, mfu, hfu, peak_memory_gib, oom, breakdown{compute, tp_comm, cp_comm,
// ep_comm, pp_comm, dp_comm, pipeline_bubble, optimizer}, critical_rank, ranks_played,
// symmetry_classes, symmetry_reduced, ranks[{rank, busy_s, peak_memory_gib, symmetry_class, finish_s,
// breakdown{...}, peer_wait_s}], waits[{who, rank, count, busy_s, compute_s, pipeline_s, collectives_s,
// data_parallel_s, optimizer_s, peer_wait_s, idle_at_end_s}],
// sensitivity_busy_s (only when asked),
// notes, and for MoE jobs moe_routing{model, max_over_mean, dropped_copies, dropped_fraction,
// layers[{layer, max_over_mean, max_load, mean_load, dropped}]} (moe_routing.h); with more than one
// datacenter dc_placement, wan_bytes, wan_bytes_by_direction{"A->B": bytes}, wan_exposed_s and,
// when computed, wan_ideal_iteration_time_s and wan_cost_s (WanReport). Deterministic: no host time in it, so equal inputs give byte-identical dumps.
nlohmann::json result_to_json(const SimResult& result);
nlohmann::json breakdown_to_json(const Breakdown& breakdown);   // {compute, tp_comm, ...}
Breakdown breakdown_from_json(const nlohmann::json& json);
// The inverse of result_to_json (wall_seconds and counts stay 0).
SimResult result_from_json(const nlohmann::json& json);

}  // namespace tandem::sim
