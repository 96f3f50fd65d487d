#pragma once
// `tandem plan`: every layout of a job on N GPUs (space.h) checked, ranked by the analytic model
// (cost_model.h), the best K re-ranked by full simulation (backends/sim), with the Kendall tau
// between the two orders.
//
// Ranking: the K fastest candidates by the analytic model that it does not call OOM are simulated;
// those the simulation finds OOM are rejected ("memory-simulated"), as are those it cannot play
// ("simulation: ..."); the others lead the ranking in simulated order; the rest follow in analytic
// order (a simulation stopped by the timeout leaves its candidate there, listed in
// "simulation_timed_out"). Ties: lower peak memory, then key.
// JSON (scripts depend on it): {"best": C, "candidates": [C, ...] (ranked), "rejected": {reason:
// count}, "enumerated", "evaluated" (timed by the analytic model), "feasible" (ranked candidates), "simulated", "simulation_timed_out", "kendall_tau", "analytic_seconds",
// "candidates_per_second", "simulation_seconds", "probes", "job": {...}} where C has Megatron's
// argument names (tensor_model_parallel_size, pipeline_model_parallel_size,
// virtual_pipeline_model_parallel_size (null without interleaving), context_parallel_size,
// expert_model_parallel_size, expert_tensor_parallel_size, data_parallel_size, micro_batch_size,
// global_batch_size, num_microbatches, sequence_parallel, recompute_granularity (null for none),
// use_distributed_optimizer, pipeline_schedule), then rank, iteration_time_s (simulated when
// "simulated", else analytic), analytic_iteration_time_s, analytic_rank, tokens_per_s,
// model_tflops_per_gpu, mfu, peak_memory_gib, oom, breakdown, simulated, megatron_args.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "backends/sim/simulator.h"
#include "plan/cost_model.h"
#include "plan/space.h"

namespace tandem::plan {

struct PlanOptions {
  int top_k = 10;        // candidates re-ranked by simulation (0: none)
  int parallel = 1;      // simulations at a time (forked processes)
  double simulation_timeout_s = 0;   // > 0: a simulation running longer is stopped (candidate stays analytic)
  // Called now and then with (fraction done, message); may be empty.
  std::function<void(double, const std::string&)> progress;
  // Runs the re-ranking simulations, one outcome per request in order (the signature of
  // sim::simulate_each_in_subprocesses, used when empty; the CLI passes its MPI scale-out).
  std::function<std::vector<sim::SimOutcome>(const std::vector<sim::SimRequest>&, int, double,
                                             const std::function<void(size_t)>&)>
      simulate_each;
};

struct Ranked {
  Candidate candidate;
  Estimate analytic;
  int64_t analytic_rank = 0;            // 1-based, among feasible candidates
  std::optional<sim::SimResult> simulated;
  double iteration_time_s() const { return simulated ? simulated->iteration_time_s : analytic.iteration_time_s; }
};

struct PlanResult {
  std::vector<Ranked> ranked;                  // best first
  std::map<std::string, int64_t> rejected;     // reason -> count
  std::map<std::string, std::string> rejected_example;   // reason -> one candidate key and detail
  int64_t enumerated = 0;
  int64_t evaluated = 0;                       // candidates the analytic model timed (the rest fail a rule first)
  int64_t simulated = 0;
  std::vector<std::string> timed_out;          // keys of candidates whose simulation hit the timeout
  double kendall_tau = 0;                      // analytic vs simulated order of the simulated ones
  double analytic_seconds = 0;                 // host time: checking + ranking every candidate
  double simulation_seconds = 0;
  size_t probes = 0;
  Job reference;                               // the best candidate's job (for flags and figures)
};

// UserError when no candidate can run (the reasons are in the message).
PlanResult run_plan(const SearchSpace& space, const PlanOptions& options);

// Kendall's tau-b between two score lists (equal length >= 2; 1 = same order).
double kendall_tau(const std::vector<double>& a, const std::vector<double>& b);

nlohmann::json candidate_to_json(const SearchSpace& space, const Ranked& r, int64_t rank);
nlohmann::json plan_to_json(const SearchSpace& space, const PlanResult& result);
// One row per ranked candidate of plan_to_json's document, its columns in a fixed order.
std::string plan_to_csv(const nlohmann::json& plan);

}  // namespace tandem::plan
