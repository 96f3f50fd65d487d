// `tandem plan`: which layout to run a job with on N GPUs (plan/planner.h).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/progress.h"
#include "cli/scale_out.h"
#include "cli/table.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "plan/planner.h"
#include "schedules/registry.h"

namespace tandem::cli {
namespace {

void print_plan_help() {
  std::printf(
      "usage: tandem plan [CONFIG.json|PRESET] --cluster C --gpus N [--top K] [--json F] [--csv F] [--show R]\n"
      "                   [--max-tp T] [--max-cp C] [--max-micro-batch B] [--schedules S1,S2] [--jobs J]\n"
      "                   [--stack S] [-- MEGATRON_FLAGS...]\n\n"
      "Enumerates the parallel layouts of the job on N GPUs (TP, PP, virtual stages, CP, EP, expert TP,\n"
      "micro-batch, recompute, distributed optimizer, schedule; DP follows), rejects those that cannot run\n"
      "(with the reason), ranks the rest with an analytic model built from the simulator's compute and\n"
      "collective costs, re-ranks the best K by full simulation and prints the winner's Megatron flags.\n"
      "MEGATRON_FLAGS fix the model, sequence length and global batch; a layout flag among them\n"
      "(--tensor-model-parallel-size, --micro-batch-size, --use-distributed-optimizer, ...) pins that field.\n"
      "A PRESET or CONFIG brings its model and training settings; its layout is re-chosen unless pinned by a flag.\n"
      "  --top K            candidates re-ranked by simulation (default 10; 0: analytic only)\n"
      "  --show R           rows printed (default 10)\n"
      "  --max-tp T         largest TP tried (default: GPUs per node); --max-cp C (default 8)\n"
      "  --max-micro-batch  largest micro-batch tried (default 16)\n"
      "  --schedules        schedules tried beside 1f1b / interleaved (tandem schedule --list)\n"
      "  --jobs J           simulations at a time (default: the machine's cores)\n"
      "  --sim-timeout S    stop a simulation after S seconds; its candidate keeps the analytic estimate\n"
      "                     (default 120; 0: no limit)\n"
      "Under mpirun -n K the re-ranking simulations are split over the K ranks (--jobs at a time on each);\n"
      "rank 0 prints and writes the files a one-process run writes.\n");
}

int64_t integer_option(const JobOptions& o, const std::string& name, int64_t fallback, int64_t lo, int64_t hi) {
  const auto it = o.extra.find(name);
  if (it == o.extra.end()) return fallback;
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size() && v >= lo && v <= hi) return v;
  } catch (const std::exception&) {
  }
  throw UserError(field_message(name, it->second, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi)));
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

plan::SearchSpace space_from(JobOptions& o, bool tell) {
  if (!o.request.gpus) throw UserError("--gpus: required (the GPU count to plan for)");
  plan::SearchSpace s;
  s.base = assemble_job(o.request);
  s.gpus = *o.request.gpus;
  if (s.base.model.num_layers <= 0 || s.base.model.hidden_size <= 0)
    throw UserError("no model: give CONFIG (a preset or job file) or --num-layers/--hidden-size/... after --");
  if (s.base.training.global_batch_size <= 0)
    throw UserError("--global-batch-size: required (layouts are compared at one global batch)");
  if (s.base.model.seq_length <= 0) throw UserError("--seq-length: required");
  if (tell && s.base.training.params_dtype == DType::FP32)
    std::fprintf(stderr, "tandem plan: note: training in fp32 (Megatron's default); pass --bf16 or --fp16 for mixed precision\n");
  s.pinned = plan::pinned_flags(o.request.megatron_flags);
  s.max_tp = integer_option(o, "--max-tp", 0, 1, 1 << 20);
  s.max_cp = integer_option(o, "--max-cp", 8, 1, 1 << 20);
  s.max_micro_batch = integer_option(o, "--max-micro-batch", 16, 1, 1 << 20);
  if (o.extra.count("--schedules")) {
    for (const std::string& name : split_commas(o.extra.at("--schedules"))) {
      try {
        find_schedule(name);
      } catch (const UserError& e) {
        throw UserError("--schedules = " + o.extra.at("--schedules") + ": " + e.what());
      }
      s.extra_schedules.push_back(name);
    }
  }
  return s;
}

std::string layout_text(const nlohmann::json& c) {
  std::string t = "TP" + c["tensor_model_parallel_size"].dump() + " PP" + c["pipeline_model_parallel_size"].dump();
  if (!c["virtual_pipeline_model_parallel_size"].is_null()) t += " VP" + c["virtual_pipeline_model_parallel_size"].dump();
  if (c["context_parallel_size"].get<int64_t>() > 1) t += " CP" + c["context_parallel_size"].dump();
  if (c["expert_model_parallel_size"].get<int64_t>() > 1) t += " EP" + c["expert_model_parallel_size"].dump();
  t += " DP" + c["data_parallel_size"].dump() + " MBS" + c["micro_batch_size"].dump();
  return t;
}

void print_plan(const plan::SearchSpace& space, const plan::PlanResult& r, const nlohmann::json& j, size_t show) {
  Table t({"rank", "layout", "recompute", "dist-opt", "schedule", "iteration (s)", "by", "TFLOP/s/GPU", "MFU", "memory (GiB)"});
  const auto& cands = j["candidates"];
  for (size_t i = 0; i < std::min(show, cands.size()); ++i) {
    const auto& c = cands[i];
    t.add_row({std::to_string(i + 1), layout_text(c),
               c["recompute_granularity"].is_null() ? "none" : c["recompute_granularity"].get<std::string>(),
               c["use_distributed_optimizer"].get<bool>() ? "yes" : "no", c["pipeline_schedule"].get<std::string>(),
               fixed(c["iteration_time_s"].get<double>(), 3), c["simulated"].get<bool>() ? "sim" : "model",
               fixed(c["model_tflops_per_gpu"].get<double>(), 1), fixed(100 * c["mfu"].get<double>(), 1) + "%",
               fixed(c["peak_memory_gib"].get<double>(), 1)});
  }
  std::printf("Plan: %s on %lld GPUs of %s, sequence %lld, global batch %lld\n\n%s\n",
              space.base.model.name.empty() ? "the job" : space.base.model.name.c_str(), static_cast<long long>(space.gpus),
              space.base.cluster.name.c_str(), static_cast<long long>(space.base.model.seq_length),
              static_cast<long long>(j["job"]["global_batch_size"].get<int64_t>()), t.render().c_str());
  std::vector<std::pair<std::string, std::string>> pairs = {
      {"candidates", with_commas(r.enumerated) + " enumerated, " + with_commas(j["feasible"].get<int64_t>()) + " can run"},
      {"analytic ranking", fixed(r.analytic_seconds, 2) + " s: " +
                               with_commas(static_cast<int64_t>(double(r.enumerated) / std::max(1e-9, r.analytic_seconds))) +
                               " candidates/s checked, " + with_commas(r.evaluated) + " timed by the model (" +
                               std::to_string(r.probes) + " layer probes)"},
      {"re-ranked by simulation", std::to_string(r.simulated) + " in " + fixed(r.simulation_seconds, 1) +
                                      " s; Kendall tau analytic vs simulated " + fixed(r.kendall_tau, 3)}};
  if (!r.timed_out.empty())
    pairs.push_back({"simulation timed out", std::to_string(r.timed_out.size()) + " (ranked by the analytic model)"});
  for (const auto& [reason, count] : r.rejected) pairs.push_back({"rejected: " + reason, with_commas(count)});
  std::printf("%s\n", render_pairs(pairs).c_str());
  std::printf("Best: %s (%s)\n  -- %s\n", layout_text(j["best"]).c_str(),
              j["best"]["simulated"].get<bool>() ? "simulated" : "analytic estimate",
              j["best"]["megatron_args"].get<std::string>().c_str());
  std::printf("Note: the analytic model is approximate (no link sharing, balanced MoE routing); the simulated rows are the\n"
              "simulator's figures. --json / --csv hold every candidate that can run, ranked.\n");
}

int run_plan_command(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--") break;
    if (a == "--help" || a == "-h") return print_plan_help(), 0;
  }
  JobOptions o = parse_job_options(args, {"--top", "--csv", "--show", "--max-tp", "--max-cp", "--max-micro-batch",
                                          "--schedules", "--jobs", "--sim-timeout"});
  ScaleOut scale;
  const plan::SearchSpace space = space_from(o, scale.root());
  plan::PlanOptions options;
  options.simulate_each = [&scale](const std::vector<sim::SimRequest>& requests, int parallel, double timeout_s,
                                   const std::function<void(size_t)>& on_done) {
    return scale.simulate_each(requests, parallel, timeout_s, on_done);
  };
  options.top_k = static_cast<int>(integer_option(o, "--top", 10, 0, 100000));
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  options.parallel = static_cast<int>(integer_option(o, "--jobs", std::max(1L, cores), 1, 64));
  options.simulation_timeout_s = static_cast<double>(integer_option(o, "--sim-timeout", 120, 0, 1 << 20));
  const size_t show = static_cast<size_t>(integer_option(o, "--show", 10, 1, 1000000));
  std::optional<ProgressBar> bar;
  if (scale.root()) {
    bar.emplace(100, "%");
    options.progress = [&bar](double fraction, const std::string& what) {
      bar->show(static_cast<size_t>(100 * fraction), what);
    };
  }
  const plan::PlanResult result = plan::run_plan(space, options);
  if (!scale.root()) return 0;
  bar->clear();
  nlohmann::json j = plan::plan_to_json(space, result);
  j["analytic_seconds"] = result.analytic_seconds;
  j["candidates_per_second"] = double(result.enumerated) / std::max(1e-9, result.analytic_seconds);
  j["evaluations_per_second"] = double(result.evaluated) / std::max(1e-9, result.analytic_seconds);
  j["simulation_seconds"] = result.simulation_seconds;
  print_plan(space, result, j, show);
  if (o.json_out) write_file_atomically("--json", *o.json_out, j.dump(1) + "\n");
  if (o.extra.count("--csv")) write_file_atomically("--csv", o.extra.at("--csv"), plan::plan_to_csv(j));
  return 0;
}

}  // namespace

TANDEM_REGISTER_COMMAND(plan, "plan", "which parallel layout to run a job with on N GPUs (ranked, re-ranked by simulation)",
                        run_plan_command)

}  // namespace tandem::cli
