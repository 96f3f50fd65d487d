// `tandem sweep SPEC.json`: every point of a sweep simulated, results as JSON and CSV (sweep/sweep.h).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/progress.h"
#include "cli/scale_out.h"
#include "cli/table.h"
#include "core/check.h"
#include "sweep/sweep.h"

namespace tandem::cli {
namespace {

using nlohmann::json;

void print_sweep_help() {
  std::printf(
      "usage: tandem sweep SPEC.json [--out PREFIX] [--jobs N]\n\n"
      "Simulates every point of a sweep (a base job and axes of values; format in README) and writes\n"
      "one row per point to PREFIX.json and PREFIX.csv: the point's values, iteration time, tokens/s,\n"
      "MFU, peak memory, OOM, the time breakdown and the WAN's bytes, exposure and cost (several\n"
      "datacenters; the axis \"--dc-placement\" chooses which dimension crosses). Points already in\n"
      "PREFIX.json are kept and not simulated again, so an interrupted sweep resumes; the files are\n"
      "rewritten after every batch (temporary name, then rename), so a finished point is never lost.\n"
      "A point that does not resolve or simulate becomes an error row. Exit status 1 when some point\n"
      "failed, 2 on a bad spec.\n"
      "  --out PREFIX  output files PREFIX.json, PREFIX.csv (default: the spec's path without .json,\n"
      "                plus -results)\n"
      "  --jobs N      simulations run at once (default 2; per rank under mpirun)\n"
      "Under mpirun -n K the points are split over the K ranks (each runs --jobs at once) and rank 0\n"
      "writes the same files a one-process run writes.\n");
}

struct SweepArgs {
  std::string spec;
  std::optional<std::string> out;
  int jobs = 2;
};

SweepArgs parse_sweep_args(const std::vector<std::string>& args) {
  SweepArgs a;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& w = args[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UserError(w + ": missing value");
      return args[++i];
    };
    if (w == "--out") a.out = value();
    else if (w == "--jobs") {
      const std::string v = value();
      try {
        a.jobs = std::stoi(v);
      } catch (const std::exception&) {
        a.jobs = 0;
      }
      if (a.jobs < 1 || a.jobs > 64) throw UserError(field_message("--jobs", v, "must be an integer from 1 to 64"));
    } else if (!w.empty() && w[0] == '-') throw UserError(field_message("option", w, "unknown (see tandem sweep --help)"));
    else if (a.spec.empty()) a.spec = w;
    else throw UserError(field_message("SPEC", w, "one spec file only"));
  }
  if (a.spec.empty()) throw UserError("tandem sweep: missing SPEC.json (see tandem sweep --help)");
  return a;
}

std::string default_prefix(const std::string& spec) {
  const std::string stem = spec.size() > 5 && spec.substr(spec.size() - 5) == ".json" ? spec.substr(0, spec.size() - 5) : spec;
  return stem + "-results";
}

// Simulates a batch of points (split over the MPI ranks, if any); a point that fails gets an error row.
std::vector<json> run_batch(const sweep::Spec& spec, const std::vector<const sweep::Point*>& batch, int jobs,
                            ScaleOut& scale) {
  std::vector<json> rows(batch.size());
  std::vector<Job> resolved;
  std::vector<size_t> which;
  for (size_t k = 0; k < batch.size(); ++k) {
    try {
      resolved.push_back(sweep::job_for(spec, *batch[k]));
      which.push_back(k);
    } catch (const UserError& e) {
      rows[k] = sweep::error_row(*batch[k], e.what());
    }
  }
  std::vector<sim::SimRequest> requests;
  for (const Job& job : resolved) requests.push_back({&job, {}});
  const std::vector<sim::SimOutcome> outcomes = scale.simulate_each(requests, jobs);
  for (size_t r = 0; r < which.size(); ++r) {
    const size_t k = which[r];
    if (outcomes[r].result) {
      rows[k] = sweep::result_row(*batch[k], resolved[r], *outcomes[r].result);
      continue;
    }
    try {
      std::rethrow_exception(outcomes[r].error);
    } catch (const std::exception& e) {
      rows[k] = sweep::error_row(*batch[k], e.what());
    }
  }
  return rows;
}

void write_outputs(const sweep::Spec& spec, const std::string& prefix, const std::map<std::string, json>& done) {
  std::vector<json> rows;
  for (const sweep::Point& p : spec.points)
    if (auto it = done.find(p.key()); it != done.end()) rows.push_back(it->second);
  write_file_atomically("--out", prefix + ".json", sweep::to_json(spec, rows).dump(1) + "\n");
  write_file_atomically("--out", prefix + ".csv", sweep::to_csv(spec, rows));
}

void print_summary(const sweep::Spec& spec, const std::map<std::string, json>& done) {
  std::vector<std::string> header = spec.axes;
  for (const char* h : {"iter s", "tokens/s/GPU", "MFU", "peak GiB", ""}) header.push_back(h);
  Table table(header);
  for (const sweep::Point& p : spec.points) {
    const json& row = done.at(p.key());
    std::vector<std::string> cells;
    for (const std::string& a : spec.axes)
      cells.push_back(p.values.contains(a) ? (p.values.at(a).is_string() ? p.values.at(a).get<std::string>() : p.values.at(a).dump()) : "");
    if (row.at("status") == "ok") {
      cells.push_back(fixed(row.at("iteration_time_s").get<double>(), 3));
      cells.push_back(fixed(row.at("tokens_per_s_per_gpu").get<double>(), 1));
      cells.push_back(fixed(100 * row.at("mfu").get<double>(), 1) + "%");
      cells.push_back(fixed(row.at("peak_memory_gib").get<double>(), 1));
      cells.push_back(row.at("oom").get<bool>() ? "OOM" : "");
    } else {
      cells.insert(cells.end(), {"-", "-", "-", "-", "error: " + row.at("error").get<std::string>()});
    }
    table.add_row(cells);
  }
  std::printf("%s", table.render().c_str());
}

int run_sweep(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") return print_sweep_help(), 0;
  const SweepArgs a = parse_sweep_args(args);
  const sweep::Spec spec = sweep::load_spec(a.spec);
  const std::string prefix = a.out ? *a.out : default_prefix(a.spec);
  std::error_code ec;
  if (std::filesystem::equivalent(prefix + ".json", a.spec, ec))
    throw UserError(field_message("--out", prefix, "would overwrite the spec " + a.spec + " (" + prefix + ".json)"));
  std::map<std::string, json> done;
  for (json& row : sweep::read_rows(prefix + ".json", spec)) {
    const std::string key = row.at("point").dump();
    done[key] = std::move(row);
  }
  std::vector<const sweep::Point*> todo;
  for (const sweep::Point& p : spec.points)
    if (!done.count(p.key())) todo.push_back(&p);
  const size_t kept = spec.points.size() - todo.size();
  ScaleOut scale;
  const size_t per_batch = static_cast<size_t>(a.jobs) * static_cast<size_t>(scale.size());
  std::optional<ProgressBar> bar;
  if (scale.root()) bar.emplace(todo.size(), "points"), bar->show(0, "");
  for (size_t start = 0; start < todo.size(); start += per_batch) {
    const size_t end = std::min(todo.size(), start + per_batch);
    const std::vector<const sweep::Point*> batch(todo.begin() + static_cast<long>(start), todo.begin() + static_cast<long>(end));
    const std::vector<json> rows = run_batch(spec, batch, a.jobs, scale);
    for (size_t k = 0; k < batch.size(); ++k) done[batch[k]->key()] = rows[k];
    if (!scale.root()) continue;
    write_outputs(spec, prefix, done);
    bar->show(end, batch.back()->key());
  }
  size_t errors = 0;
  for (const auto& [key, row] : done) errors += row.at("status") == "error" ? 1 : 0;
  if (!scale.root()) return errors ? 1 : 0;
  bar->clear();
  if (todo.empty()) write_outputs(spec, prefix, done);
  print_summary(spec, done);
  std::printf("%zu points (%zu simulated now%s, %zu kept from %s.json), %zu failed; wrote %s.json and %s.csv\n",
              spec.points.size(), todo.size(),
              scale.size() > 1 ? (" on " + std::to_string(scale.size()) + " MPI ranks").c_str() : "", kept,
              prefix.c_str(), errors, prefix.c_str(), prefix.c_str());
  return errors ? 1 : 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(sweep, "sweep", "simulate every point of a sweep; results as JSON and CSV",
                        tandem::cli::run_sweep)
