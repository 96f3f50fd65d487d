// `tandem reproduce [SET.json] [--stack NAME|FILE] [--json FILE] [--check] [--resolve] [--family NAME]`
// Runs published training runs through the simulator and prints published vs simulated figures,
// with the error per set and per model family (set format: fit/reproduce_sets.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/table.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "core/parallel_grid.h"
#include "fit/reproduce_sets.h"
#include "models/accounting.h"
#include "program/program.h"

namespace tandem::cli {
namespace {

using fit::ErrorSummary;
using fit::ReproduceRow;
using fit::ReproduceSet;
using fit::default_reproduce_sets;
using fit::read_reproduce_set;
using fit::throughput_error;

using json = nlohmann::json;

struct RunOptions {
  bool resolve_only = false;          // no simulation: resolve every row, peak memory from the programs
  std::optional<std::string> stack;   // --stack: replaces every set's stack
  std::string family;                 // "" = every family
};

// Peak memory over the pipeline ranks' programs (the simulator's figure without running it).
double program_peak_bytes(const Job& job) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  double peak = 0;
  for (int64_t r : class_representatives(job, grid)) peak = std::max(peak, lower_rank(job, grid, schedule, r).peak_bytes());
  return peak;
}

double simulated_metric(const std::string& metric, const sim::SimResult& r, const Job& job) {
  if (metric == "hardware_tflops_per_gpu") return r.hardware_tflops_per_gpu;
  if (metric == "model_tflops_per_gpu") return r.model_tflops_per_gpu;
  if (metric == "tokens_per_s_per_gpu") return r.tokens_per_s / double(job.world_size);
  TANDEM_CHECK(metric == "iteration_time_s");
  return r.iteration_time_s;
}

// The peak-memory column's verdict: a row marked expected_oom says so either way.
std::string oom_verdict(bool oom, bool expected) {
  if (oom) return expected ? " OOM (expected)" : " OOM";
  return expected ? " fits (marked expected_oom)" : "";
}

std::string percent(double x) { return (x >= 0 ? "+" : "") + fixed(100 * x, 1) + "%"; }

// Layout facts of a row, for grouping errors afterwards (experiments/reproduce/residuals.py).
json row_layout(const Job& job) {
  const auto& p = job.parallel;
  return {{"tp", p.tensor_model_parallel_size}, {"pp", p.pipeline_model_parallel_size},
          {"cp", p.context_parallel_size}, {"vp", p.virtual_pipeline_model_parallel_size},
          {"ep", p.expert_model_parallel_size}, {"dp", p.data_parallel_size},
          {"tp_comm_overlap", p.tp_comm_overlap && p.tensor_model_parallel_size > 1},
          {"seq_length", job.model.seq_length}, {"micro_batch_size", job.training.micro_batch_size},
          {"global_batch_size", job.training.global_batch_size},
          {"parameters_billions", double(parameter_count(job.model).total) / 1e9}};
}

json run_row(const ReproduceSet& set, const ReproduceRow& row, const RunOptions& opts, Table& table,
             ErrorSummary& summary, std::map<std::string, ErrorSummary>& by_family) {
  JobRequest request = row.request;
  request.stack = opts.stack ? opts.stack : set.stack.empty() ? std::nullopt : std::optional<std::string>(set.stack);
  const Job job = load_job(request);
  json out = {{"label", row.label}, {"family", row.family}, {"precision", row.precision}, {"gpus", job.world_size},
              {"published", row.published}, {"layout", row_layout(job)}};
  const double hbm = job.cluster.gpu.hbm_bytes;
  const bool oom_expected = !row.expected_oom.empty();
  if (oom_expected) out["expected_oom"] = row.expected_oom;
  if (opts.resolve_only) {
    const double peak = program_peak_bytes(job);
    const bool oom = hbm > 0 && peak > hbm;
    summary.oom += oom && !oom_expected;
    summary.oom_expected += oom && oom_expected;
    summary.oom_mark_stale += !oom && oom_expected;
    table.add_row({row.label, row.family, with_commas(job.world_size), fixed(row.published, 2), "-", "-", "-", "-",
                   fixed(peak / kBytesPerGiB, 1) + oom_verdict(oom, oom_expected)});
    out["peak_memory_gib"] = peak / kBytesPerGiB;
    out["oom"] = oom;
    return out;
  }
  const sim::SimResult r = sim::simulate_in_subprocess(job, {});
  const double simulated = simulated_metric(set.metric, r, job);
  const double error = throughput_error(set.metric, simulated, row.published);
  summary.add(error, r.oom && !oom_expected);
  summary.oom_expected += r.oom && oom_expected;
  if (!row.family.empty()) by_family[row.family].add(error, r.oom && !oom_expected);
  table.add_row({row.label, row.family, with_commas(job.world_size), fixed(row.published, 2), fixed(simulated, 2),
                 percent(error), fixed(r.iteration_time_s, 2), fixed(100 * r.mfu, 1) + "%",
                 fixed(r.peak_memory_gib, 1) + oom_verdict(r.oom, oom_expected)});
  out.update({{"simulated", simulated}, {"relative_error", error}, {"iteration_time_s", r.iteration_time_s},
              {"mfu", r.mfu}, {"peak_memory_gib", r.peak_memory_gib}, {"oom", r.oom}, {"stack", r.stack},
              {"breakdown", sim::result_to_json(r)["breakdown"]}});
  return out;
}

std::string summary_text(const ErrorSummary& s) {
  return std::to_string(s.within_10) + " of " + std::to_string(s.rows) + " rows within 10%, mean absolute error " +
         fixed(100 * s.mean_abs(), 1) + "%, signed mean " + percent(s.mean_signed()) + ", max " +
         fixed(100 * s.max_abs, 1) + "%" + (s.oom ? ", " + std::to_string(s.oom) + " predicted OOM" : "");
}

void print_families(const std::map<std::string, ErrorSummary>& by_family, const char* title) {
  if (by_family.empty()) return;
  Table t({"family", "rows", "within 10%", "mean |error|", "signed mean", "max |error|", "OOM"});
  for (const auto& [f, s] : by_family)
    t.add_row({f, std::to_string(s.rows), std::to_string(s.within_10), fixed(100 * s.mean_abs(), 1) + "%",
               percent(s.mean_signed()), fixed(100 * s.max_abs, 1) + "%", std::to_string(s.oom)});
  std::printf("%s\n%s\n", title, t.render().c_str());
}

json run_set(const std::string& path, const RunOptions& opts, bool& all_good,
             std::map<std::string, ErrorSummary>& all_families) {
  const ReproduceSet set = read_reproduce_set(path);
  const std::string stack = opts.stack ? *opts.stack : set.stack.empty() ? "the cluster's default" : set.stack;
  std::printf("%s\n  %s\n  metric: %s (error: simulated / published throughput - 1; negative = simulated slower)\n"
              "  stack: %s\n  assumptions: %s\n",
              set.name.c_str(), set.source.c_str(), set.metric.c_str(), stack.c_str(), set.assumptions.c_str());
  for (const auto& [f, a] : set.family_assumptions)
    if (!a.empty()) std::printf("  %s: %s\n", f.c_str(), a.c_str());
  if (set.skipped) std::printf("  %d published rows of this source are left out, each with its reason in the set file\n", set.skipped);
  std::printf("\n");
  Table table({"run", "family", "GPUs", "published", "simulated", "error", "iter s", "MFU", "peak GiB"});
  ErrorSummary summary;
  std::map<std::string, ErrorSummary> by_family;
  json rows = json::array();
  const bool progress = isatty(fileno(stderr)) != 0;   // a terminal: one line of progress, rewritten
  for (size_t i = 0; i < set.rows.size(); ++i) {
    if (!opts.family.empty() && set.rows[i].family != opts.family) continue;
    if (progress)
      std::fprintf(stderr, "\r%s: row %zu of %zu\033[K", std::filesystem::path(path).stem().c_str(), i + 1, set.rows.size());
    rows.push_back(run_row(set, set.rows[i], opts, table, summary, by_family));
  }
  if (progress) std::fprintf(stderr, "\r\033[K");
  std::printf("%s", table.render().c_str());
  for (const auto& row : set.rows)
    if (!row.expected_oom.empty()) std::printf("  %s: expected OOM: %s\n", row.label.c_str(), row.expected_oom.c_str());
  if (opts.resolve_only) {
    std::printf("  %zu rows resolved, %d predicted OOM", rows.size(), summary.oom);
    if (summary.oom_expected) std::printf(", %d more as their expected_oom says", summary.oom_expected);
    if (summary.oom_mark_stale) std::printf(", %d marked expected_oom that fit (remove the mark)", summary.oom_mark_stale);
    std::printf("\n\n");
    all_good = all_good && summary.oom == 0 && summary.oom_mark_stale == 0;
    return {{"set", set.name}, {"path", path}, {"stack", stack}, {"rows", rows}, {"oom", summary.oom}};
  }
  std::printf("  %s%s\n\n", summary_text(summary).c_str(),
              summary.oom_expected ? (", " + std::to_string(summary.oom_expected) + " OOM as expected_oom says").c_str() : "");
  if (by_family.size() > 1) print_families(by_family, "  by family:");
  for (const auto& [f, s] : by_family) {
    ErrorSummary& all = all_families[f];
    all.rows += s.rows, all.within_10 += s.within_10, all.oom += s.oom;
    all.sum_abs += s.sum_abs, all.sum_signed += s.sum_signed, all.max_abs = std::max(all.max_abs, s.max_abs);
  }
  all_good = all_good && summary.oom == 0 && summary.within_10 == summary.rows && summary.mean_abs() <= 0.05;
  return {{"set", set.name}, {"path", path}, {"stack", stack}, {"rows", rows}, {"mean_absolute_error", summary.mean_abs()},
          {"signed_mean_error", summary.mean_signed()}, {"max_absolute_error", summary.max_abs},
          {"within_10_percent", summary.within_10}, {"oom", summary.oom}};
}

int run_reproduce(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(args, {"--family"}, {"--check", "--resolve", "--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) {
    std::printf("usage: tandem reproduce [SET.json] [--stack NAME|FILE] [--json FILE] [--check] [--resolve]\n"
                "                        [--family NAME]\n"
                "Without SET, every set in experiments/reproduce/. Prints each row's published and simulated\n"
                "figure and the throughput error (negative: simulated slower), per set and per model family.\n"
                "--check exits 1 unless every row is within 10%%, each set's mean absolute error is at most 5%%\n"
                "and no row is predicted out of memory. --resolve simulates nothing: it resolves every row's job\n"
                "and lowers its programs, and exits 1 if a row does not resolve or is predicted out of memory.\n"
                "--family NAME runs only that family's rows. --stack replaces the software stack each set names.\n");
    return 0;
  }
  if (opts.request.cluster || opts.request.gpus || !opts.request.megatron_flags.empty() ||
      !opts.request.stragglers.empty())
    throw UserError("tandem reproduce: --cluster, --gpus, --straggler and Megatron flags come from the set files, not "
                    "the command line");
  RunOptions run;
  run.resolve_only = opts.extra.count("--resolve") > 0;
  if (opts.extra.count("--family")) run.family = opts.extra.at("--family");
  run.stack = opts.request.stack;
  const std::vector<std::string> sets =
      opts.request.config_file ? std::vector<std::string>{*opts.request.config_file} : default_reproduce_sets();
  bool all_good = true;
  std::map<std::string, ErrorSummary> families;
  json out = json::array();
  for (const auto& s : sets) out.push_back(run_set(s, run, all_good, families));
  if (!run.resolve_only && sets.size() > 1) print_families(families, "All sets, by family:");
  if (opts.json_out) write_file_atomically("--json", *opts.json_out, out.dump(2) + "\n");
  return ((opts.extra.count("--check") || run.resolve_only) && !all_good) ? 1 : 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(reproduce, "reproduce", "published throughput vs simulated, row by row",
                        tandem::cli::run_reproduce)
