// `tandem reproduce [SET.json ...] [--stack NAME|FILE] [--json FILE] [--check]`
// Runs published training runs through the simulator and prints published vs simulated figures.
// A set (experiments/reproduce/*.json) names a cluster, a metric, the Megatron flags common to its
// rows and, per row, the GPU count, the row's flags and the published figure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/sim_report.h"
#include "cli/table.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::cli {
namespace {

using json = nlohmann::json;

struct SetSummary {
  int rows = 0, within_10 = 0;
  double sum_abs_error = 0, max_abs_error = 0;
};

std::vector<std::string> strings_at(const json& doc, const char* key, const std::string& where) {
  std::vector<std::string> out;
  if (!doc.contains(key)) return out;
  if (!doc[key].is_array()) throw UserError(where + "." + key + ": expected an array of strings");
  for (const auto& v : doc[key]) {
    if (!v.is_string()) throw UserError(where + "." + key + ": expected an array of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

double simulated_metric(const std::string& metric, const sim::SimResult& r, const std::string& where) {
  if (metric == "hardware_tflops_per_gpu") return r.hardware_tflops_per_gpu;
  if (metric == "model_tflops_per_gpu") return r.model_tflops_per_gpu;
  if (metric == "iteration_time_s") return r.iteration_time_s;
  throw UserError(where + ".metric = " + metric +
                  ": expected hardware_tflops_per_gpu, model_tflops_per_gpu or iteration_time_s");
}

json run_row(const json& set, const json& row, const std::string& where, const std::optional<std::string>& stack,
            Table& table, SetSummary& summary) {
  JobRequest req;
  req.cluster = set.value("cluster", std::string(kDefaultCluster));
  req.stack = stack;
  if (!row.contains("gpus") || !row["gpus"].is_number_integer()) throw UserError(where + ".gpus: expected an integer");
  req.gpus = row["gpus"].get<int64_t>();
  req.megatron_flags = strings_at(set, "common_flags", where);
  for (auto& f : strings_at(row, "flags", where)) req.megatron_flags.push_back(f);
  const std::string metric = set.value("metric", std::string("model_tflops_per_gpu"));
  const std::string published_key = metric == "iteration_time_s" ? "iteration_time_s" : "tflops_per_gpu";
  const double published = row.at("published").at(published_key).get<double>();
  const Job job = load_job(req);
  const sim::SimResult r = sim::simulate_in_subprocess(job, {});
  const double simulated = simulated_metric(metric, r, where);
  const double error = (simulated - published) / published;
  summary.rows++;
  summary.within_10 += std::fabs(error) <= 0.10;
  summary.sum_abs_error += std::fabs(error);
  summary.max_abs_error = std::max(summary.max_abs_error, std::fabs(error));
  const std::string label = row.value("label", std::string("?"));
  table.add_row({label, with_commas(job.world_size), fixed(published, 1), fixed(simulated, 1),
                 (error >= 0 ? "+" : "") + fixed(100 * error, 1) + "%", fixed(r.iteration_time_s, 2),
                 fixed(100 * r.mfu, 1) + "%", fixed(r.peak_memory_gib, 1)});
  return {{"label", label}, {"gpus", job.world_size}, {"published", published}, {"simulated", simulated},
          {"relative_error", error}, {"iteration_time_s", r.iteration_time_s}, {"mfu", r.mfu},
          {"peak_memory_gib", r.peak_memory_gib}, {"stack", r.stack}};
}

// The stack a set runs with: --stack, else the set's "stack", else its cluster's default.
std::optional<std::string> set_stack(const json& set, const std::optional<std::string>& override_stack) {
  if (override_stack) return override_stack;
  if (set.contains("stack")) return set["stack"].get<std::string>();
  return std::nullopt;
}

json run_set(const std::string& path, const std::optional<std::string>& override_stack, bool& all_good) {
  const json set = read_json_file(path);
  const std::string metric = set.value("metric", std::string("model_tflops_per_gpu"));
  const std::optional<std::string> stack = set_stack(set, override_stack);
  std::printf("%s\n  %s\n  metric: %s; stack: %s; assumptions: %s\n\n", set.value("name", path).c_str(),
              set.value("source", std::string("")).c_str(), metric.c_str(),
              stack.value_or("the cluster's default").c_str(), set.value("assumptions", std::string("none stated")).c_str());
  Table table({"run", "GPUs", "published", "simulated", "error", "iter s", "MFU", "peak GiB"});
  SetSummary summary;
  json rows = json::array();
  const auto& list = set.at("rows");
  for (size_t i = 0; i < list.size(); ++i) {
    std::fprintf(stderr, "\r%s: row %zu of %zu\033[K", std::filesystem::path(path).stem().c_str(), i + 1, list.size());
    rows.push_back(run_row(set, list[i], path + ": rows[" + std::to_string(i) + "]", stack, table, summary));
  }
  std::fprintf(stderr, "\r\033[K");
  const double mae = summary.rows ? summary.sum_abs_error / summary.rows : 0;
  std::printf("%s  %d of %d rows within 10%%, mean absolute error %.1f%%, max %.1f%%\n\n", table.render().c_str(),
              summary.within_10, summary.rows, 100 * mae, 100 * summary.max_abs_error);
  all_good = all_good && summary.within_10 == summary.rows && mae <= 0.05;
  return {{"set", set.value("name", path)}, {"stack", stack.value_or("")}, {"rows", rows}, {"mean_absolute_error", mae},
          {"max_absolute_error", summary.max_abs_error}, {"within_10_percent", summary.within_10}};
}

int run_reproduce(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(args, {}, {"--check", "--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) {
    std::printf("usage: tandem reproduce [SET.json] [--stack NAME|FILE] [--json FILE] [--check]\n"
                "Without SET, every set in experiments/reproduce/. --check exits 1 unless every row is\n"
                "within 10%% and each set's mean absolute error is at most 5%%. --stack replaces the stack\n"
                "each set names (its \"stack\" field).\n");
    return 0;
  }
  std::vector<std::string> sets;
  if (opts.request.config_file) {
    sets.push_back(*opts.request.config_file);
  } else {
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(data_dir()) / "experiments" / "reproduce"))
      if (e.path().extension() == ".json") sets.push_back(e.path().string());
    std::sort(sets.begin(), sets.end());
  }
  bool all_good = true;
  json out = json::array();
  for (const auto& s : sets) out.push_back(run_set(s, opts.request.stack, all_good));
  if (opts.json_out) write_file_atomically("--json", *opts.json_out, out.dump(2) + "\n");
  return (opts.extra.count("--check") && !all_good) ? 1 : 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(reproduce, "reproduce", "published throughput vs simulated, row by row",
                        tandem::cli::run_reproduce)
