// `tandem plan`: check, rank, re-rank by simulation (planner.h).
#include "plan/planner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "models/accounting.h"

namespace tandem::plan {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool analytic_less(const Ranked& a, const Ranked& b) {
  if (a.analytic.iteration_time_s != b.analytic.iteration_time_s)
    return a.analytic.iteration_time_s < b.analytic.iteration_time_s;
  if (a.analytic.peak_memory_gib != b.analytic.peak_memory_gib) return a.analytic.peak_memory_gib < b.analytic.peak_memory_gib;
  return a.candidate.key() < b.candidate.key();
}

bool simulated_less(const Ranked& a, const Ranked& b) {
  if (a.simulated->iteration_time_s != b.simulated->iteration_time_s)
    return a.simulated->iteration_time_s < b.simulated->iteration_time_s;
  if (a.simulated->peak_memory_gib != b.simulated->peak_memory_gib)
    return a.simulated->peak_memory_gib < b.simulated->peak_memory_gib;
  return a.candidate.key() < b.candidate.key();
}

// Checks and estimates every candidate; fills result.ranked (analytic order) and the rejections.
void rank_analytically(const SearchSpace& space, const PlanOptions& options, PlanResult& result) {
  const auto t0 = Clock::now();
  const std::vector<Candidate> all = enumerate_candidates(space);
  result.enumerated = static_cast<int64_t>(all.size());
  std::unique_ptr<CostModel> model;
  auto last_report = Clock::now();
  Job job;
  std::string detail;
  for (size_t i = 0; i < all.size(); ++i) {
    const Candidate& c = all[i];
    std::optional<std::string> reason = check_candidate(space, c, job, detail);
    Ranked r;
    if (!reason) {
      if (!model) model = std::make_unique<CostModel>(job);
      r.candidate = c;
      ++result.evaluated;
      try {
        r.analytic = model->evaluate(space, c, job);
      } catch (const UserError& e) {   // a rule only the lowering knows
        reason = "lowering: " + numbers_as_n(e.what());
        detail = e.what();
      }
      if (!reason && r.analytic.oom) {
        reason = "memory";
        detail = "peak " + std::to_string(r.analytic.peak_memory_gib) + " GiB exceeds the GPU's " +
                 std::to_string(job.cluster.gpu.hbm_bytes / kBytesPerGiB) + " GiB";
      }
    }
    if (reason) {
      if (result.rejected[*reason]++ == 0) result.rejected_example[*reason] = c.key() + ": " + detail;
    } else {
      result.ranked.push_back(std::move(r));
    }
    if (options.progress && (i & 255) == 0 && Clock::now() - last_report > std::chrono::milliseconds(200)) {
      last_report = Clock::now();
      options.progress(double(i + 1) / double(all.size()),
                       "ranking: " + std::to_string(i + 1) + " of " + std::to_string(all.size()) + " candidates");
    }
  }
  std::sort(result.ranked.begin(), result.ranked.end(), analytic_less);
  for (size_t i = 0; i < result.ranked.size(); ++i) result.ranked[i].analytic_rank = static_cast<int64_t>(i + 1);
  result.probes = model ? model->probes() : 0;
  result.analytic_seconds = seconds_since(t0);
}

std::string rejection_summary(const PlanResult& result) {
  std::string text;
  for (const auto& [reason, count] : result.rejected)
    text += "\n  " + std::to_string(count) + " x " + reason + " (e.g. " + result.rejected_example.at(reason) + ")";
  return text;
}

// Simulates the first K candidates, drops the ones the simulation calls OOM or cannot play,
// re-ranks; a simulation past the timeout leaves its candidate with the analytic estimate.
void rerank_by_simulation(const SearchSpace& space, const PlanOptions& options, PlanResult& result) {
  const auto t0 = Clock::now();
  const size_t k = std::min(result.ranked.size(), static_cast<size_t>(std::max(0, options.top_k)));
  if (k == 0) return;
  std::vector<Job> jobs;
  jobs.reserve(k);
  for (size_t i = 0; i < k; ++i) jobs.push_back(job_for(space, result.ranked[i].candidate));
  std::vector<sim::SimRequest> requests;
  for (const Job& job : jobs) requests.push_back({&job, {}});
  const auto on_done = [&](size_t done) {
    if (options.progress)
      options.progress(double(done) / double(k), "simulating: " + std::to_string(done) + " of " + std::to_string(k));
  };
  std::vector<sim::SimOutcome> outcomes =
      options.simulate_each
          ? options.simulate_each(requests, options.parallel, options.simulation_timeout_s, on_done)
          : sim::simulate_each_in_subprocesses(requests, options.parallel, options.simulation_timeout_s, on_done);
  const auto reject = [&](const std::string& reason, const Ranked& r, const std::string& detail) {
    if (result.rejected[reason]++ == 0) result.rejected_example[reason] = r.candidate.key() + ": " + detail;
  };
  std::vector<Ranked> simulated, rest;
  for (size_t i = 0; i < result.ranked.size(); ++i) {
    Ranked& r = result.ranked[i];
    if (i < k && outcomes[i].error) {
      try {
        std::rethrow_exception(outcomes[i].error);
      } catch (const std::exception& e) {
        reject("simulation: " + numbers_as_n(e.what()), r, e.what());
      }
    } else if (i < k && outcomes[i].result && outcomes[i].result->oom) {
      reject("memory-simulated", r, "simulated peak " + std::to_string(outcomes[i].result->peak_memory_gib) + " GiB");
    } else if (i < k && outcomes[i].result) {
      r.simulated = std::move(outcomes[i].result);
      simulated.push_back(std::move(r));
    } else {
      if (i < k) result.timed_out.push_back(r.candidate.key());
      rest.push_back(std::move(r));
    }
  }
  std::vector<double> analytic, sim;
  for (const Ranked& r : simulated) analytic.push_back(r.analytic.iteration_time_s), sim.push_back(r.simulated->iteration_time_s);
  result.kendall_tau = simulated.size() >= 2 ? kendall_tau(analytic, sim) : 1.0;
  std::stable_sort(simulated.begin(), simulated.end(), simulated_less);
  result.simulated = static_cast<int64_t>(simulated.size());
  result.ranked = std::move(simulated);
  for (Ranked& r : rest) result.ranked.push_back(std::move(r));
  result.simulation_seconds = seconds_since(t0);
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace

double kendall_tau(const std::vector<double>& a, const std::vector<double>& b) {
  TANDEM_CHECK(a.size() == b.size());
  double concordant = 0, discordant = 0, ties_a = 0, ties_b = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = i + 1; j < a.size(); ++j) {
      const double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) ties_a += 1;
      else if (db == 0) ties_b += 1;
      else if ((da > 0) == (db > 0)) concordant += 1;
      else discordant += 1;
    }
  const double denom = std::sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b));
  return denom > 0 ? (concordant - discordant) / denom : 1.0;
}

PlanResult run_plan(const SearchSpace& space, const PlanOptions& options) {
  PlanResult result;
  rank_analytically(space, options, result);
  if (result.ranked.empty())
    throw UserError("no layout of this job runs on " + std::to_string(space.gpus) + " GPUs of " + space.base.cluster.name +
                    " (" + std::to_string(result.enumerated) + " candidates rejected):" + rejection_summary(result));
  rerank_by_simulation(space, options, result);
  if (result.ranked.empty())
    throw UserError("every candidate simulated runs out of memory:" + rejection_summary(result));
  result.reference = job_for(space, result.ranked.front().candidate);
  return result;
}

nlohmann::json candidate_to_json(const SearchSpace& space, const Ranked& r, int64_t rank) {
  const Candidate& c = r.candidate;
  const Job job = job_for(space, c);
  nlohmann::json j;
  j["rank"] = rank;
  j["tensor_model_parallel_size"] = c.tp;
  j["pipeline_model_parallel_size"] = c.pp;
  j["virtual_pipeline_model_parallel_size"] = c.vp > 1 ? nlohmann::json(c.vp) : nlohmann::json(nullptr);
  j["num_layers_per_virtual_pipeline_stage"] =
      c.vp > 1 ? nlohmann::json(job.parallel.num_layers_per_virtual_pipeline_stage) : nlohmann::json(nullptr);
  j["context_parallel_size"] = c.cp;
  j["expert_model_parallel_size"] = c.ep;
  j["expert_tensor_parallel_size"] = c.etp;
  j["data_parallel_size"] = c.dp;
  j["micro_batch_size"] = c.mbs;
  j["global_batch_size"] = job.training.global_batch_size;
  j["num_microbatches"] = job.training.num_microbatches;
  j["sequence_parallel"] = c.sequence_parallel;
  j["recompute_granularity"] =
      c.recompute == RecomputeGranularity::None ? nlohmann::json(nullptr) : nlohmann::json(to_string(c.recompute));
  j["use_distributed_optimizer"] = c.distributed_optimizer;
  j["pipeline_schedule"] = c.schedule;
  j["simulated"] = r.simulated.has_value();
  j["iteration_time_s"] = r.iteration_time_s();
  j["analytic_iteration_time_s"] = r.analytic.iteration_time_s;
  j["analytic_rank"] = r.analytic_rank;
  const double tokens = double(job.training.global_batch_size) * double(job.model.seq_length);
  const double flops = flops_per_iteration(job).model;
  const double t = r.iteration_time_s();
  j["tokens_per_s"] = tokens / t;
  j["model_tflops_per_gpu"] = flops / t / double(job.world_size) / 1e12;
  const double peak = sim::peak_flops(job);
  j["mfu"] = peak > 0 ? flops / t / double(job.world_size) / peak : 0.0;
  j["peak_memory_gib"] = r.simulated ? r.simulated->peak_memory_gib : r.analytic.peak_memory_gib;
  j["oom"] = r.simulated ? r.simulated->oom : r.analytic.oom;
  if (r.simulated) {
    j["breakdown"] = sim::result_to_json(*r.simulated)["breakdown"];
  } else {
    const Estimate& e = r.analytic;
    j["breakdown"] = {{"compute", e.compute},   {"tp_comm", e.tp_comm}, {"cp_comm", e.cp_comm},
                      {"ep_comm", e.ep_comm},   {"pp_comm", e.pp_comm}, {"dp_comm", e.dp_comm},
                      {"pipeline_bubble", e.pipeline_bubble}, {"optimizer", e.optimizer}};
  }
  j["megatron_args"] = joined(megatron_args(c, job));
  return j;
}

nlohmann::json plan_to_json(const SearchSpace& space, const PlanResult& result) {
  nlohmann::json j;
  nlohmann::json candidates = nlohmann::json::array();
  for (size_t i = 0; i < result.ranked.size(); ++i)
    candidates.push_back(candidate_to_json(space, result.ranked[i], static_cast<int64_t>(i + 1)));
  j["best"] = candidates.front();
  j["candidates"] = std::move(candidates);
  j["rejected"] = result.rejected;
  j["enumerated"] = result.enumerated;
  j["evaluated"] = result.evaluated;
  int64_t feasible = result.enumerated;
  for (const auto& [reason, count] : result.rejected) feasible -= count;
  j["feasible"] = feasible;
  j["simulated"] = result.simulated;
  j["kendall_tau"] = result.kendall_tau;
  j["simulation_timed_out"] = result.timed_out;
  j["probes"] = result.probes;
  j["job"] = {{"model_layers", space.base.model.num_layers},
              {"hidden_size", space.base.model.hidden_size},
              {"seq_length", space.base.model.seq_length},
              {"global_batch_size", result.reference.training.global_batch_size},
              {"gpus", space.gpus},
              {"cluster", space.base.cluster.name}};
  return j;
}

std::string plan_to_csv(const nlohmann::json& plan) {
  static const std::vector<std::string> cols = {
      "rank", "tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
      "context_parallel_size", "expert_model_parallel_size", "expert_tensor_parallel_size", "data_parallel_size",
      "micro_batch_size", "sequence_parallel", "recompute_granularity", "use_distributed_optimizer",
      "pipeline_schedule", "simulated", "iteration_time_s", "analytic_iteration_time_s", "analytic_rank",
      "tokens_per_s", "model_tflops_per_gpu", "mfu", "peak_memory_gib", "oom", "megatron_args"};
  std::ostringstream out;
  for (size_t i = 0; i < cols.size(); ++i) out << (i ? "," : "") << cols[i];
  out << "\n";
  for (const nlohmann::json& j : plan.at("candidates")) {
    for (size_t i = 0; i < cols.size(); ++i) {
      const nlohmann::json& v = j.at(cols[i]);
      out << (i ? "," : "");
      if (v.is_null()) continue;
      if (v.is_string()) out << '"' << v.get<std::string>() << '"';
      else out << v.dump();
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace tandem::plan
