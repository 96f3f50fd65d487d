#include "schedules/grid_check.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "core/check.h"
#include "schedules/analysis.h"
#include "schedules/validate.h"

namespace tandem {

std::vector<GridPoint> schedule_grid(const ScheduleInfo& info) {
  std::vector<int> chunk_values;
  for (int v = 1; v <= 4; ++v)
    if (v >= info.chunks.min && v <= info.chunks.max) chunk_values.push_back(v);
  // One value just outside the accepted range, to keep its rejection under test.
  if (info.chunks.max < 4) chunk_values.push_back(info.chunks.max + 1);
  else if (info.chunks.min > 1) chunk_values.push_back(info.chunks.min - 1);
  std::sort(chunk_values.begin(), chunk_values.end());
  std::vector<GridPoint> grid;
  for (int p : {2, 3, 4, 8, 16}) {
    for (int m = 1; m <= 4 * p; ++m) {
      for (int v : chunk_values) {
        grid.push_back(GridPoint{info.name, ScheduleParams{p, m, v, 0}});
        if (info.name == "interleaved" && m % p != 0 && m > p)
          grid.push_back(GridPoint{info.name, ScheduleParams{p, m, v, m}});
      }
    }
  }
  return grid;
}

GridOutcome run_grid_point(const GridPoint& point) {
  GridOutcome out;
  out.point = point;
  Schedule schedule;
  try {
    schedule = build_schedule(point.schedule, point.params);
  } catch (const UserError& e) {
    out.rejection = e.what();
    return out;
  }
  out.accepted = true;
  const ValidationReport report = validate_schedule(schedule);
  out.warnings = report.warnings.size();
  for (size_t i = 0; i < std::min<size_t>(report.errors.size(), 3); ++i)
    out.errors.push_back(report.errors[i].message);
  if (!report.ok()) return out;
  const ScheduleAnalysis a = analyze_schedule(schedule, ActionCosts{});
  out.makespan = a.makespan;
  out.bubble_fraction = a.bubble_fraction;
  out.peak_activations = a.peak_activations;
  return out;
}

std::vector<GridOutcome> run_grid(const std::vector<std::string>& schedules) {
  std::vector<GridOutcome> out;
  for (const std::string& name : schedules)
    for (const GridPoint& point : schedule_grid(find_schedule(name)))
      out.push_back(run_grid_point(point));
  return out;
}

std::string golden_key(const GridPoint& point) {
  const ScheduleParams& p = point.params;
  std::string key = point.schedule + " p=" + std::to_string(p.pp) + " m=" +
                    std::to_string(p.microbatches) + " v=" + std::to_string(p.chunks);
  if (p.group_size > 0) key += " g=" + std::to_string(p.group_size);
  return key;
}

namespace {

// Rounded so that goldens do not churn on the last bits of a double.
double rounded(double x) { return std::round(x * 1e9) / 1e9; }

nlohmann::json golden_entry(const GridOutcome& o) {
  if (!o.accepted) return nlohmann::json{{"accepted", false}};
  nlohmann::json peaks = nlohmann::json::array();
  for (double p : o.peak_activations) peaks.push_back(rounded(p));
  return nlohmann::json{{"makespan", rounded(o.makespan)},
                        {"bubble_fraction", rounded(o.bubble_fraction)},
                        {"peak_activations", peaks}};
}

bool close(double a, double b, double tol) {
  return std::fabs(a - b) <= tol * std::max({1.0, std::fabs(a), std::fabs(b)}) + 1e-9;
}

std::string mismatch(const nlohmann::json& want, const nlohmann::json& got, double tol) {
  if (want.value("accepted", true) != got.value("accepted", true))
    return want.value("accepted", true) ? "now rejected, golden accepts it"
                                         : "now accepted, golden rejects it";
  if (!want.value("accepted", true)) return "";
  for (const char* field : {"makespan", "bubble_fraction"})
    if (!close(want.at(field).get<double>(), got.at(field).get<double>(), tol))
      return std::string(field) + " " + got.at(field).dump() + ", golden " + want.at(field).dump();
  const auto& wp = want.at("peak_activations");
  const auto& gp = got.at("peak_activations");
  bool same = wp.size() == gp.size();
  for (size_t i = 0; same && i < wp.size(); ++i) same = close(wp[i].get<double>(), gp[i].get<double>(), tol);
  return same ? "" : "peak_activations " + gp.dump() + ", golden " + wp.dump();
}

}  // namespace

nlohmann::json outcomes_to_golden(const std::vector<GridOutcome>& outcomes) {
  nlohmann::json entries = nlohmann::json::object();
  for (const GridOutcome& o : outcomes)
    if (!o.accepted || o.valid()) entries[golden_key(o.point)] = golden_entry(o);
  return nlohmann::json{{"format", 1},
                        {"costs", "unit: F = B = W = 1, full backward = 2"},
                        {"entries", entries}};
}

std::string golden_text(const nlohmann::json& golden) {
  std::string out = "{\n";
  for (auto& [key, value] : golden.items()) {
    if (key == "entries") continue;
    out += " " + nlohmann::json(key).dump() + ": " + value.dump() + ",\n";
  }
  out += " \"entries\": {\n";
  const nlohmann::json& entries = golden.at("entries");
  size_t i = 0;
  for (auto& [key, value] : entries.items())
    out += "  " + nlohmann::json(key).dump() + ": " + value.dump() + (++i < entries.size() ? ",\n" : "\n");
  return out + " }\n}\n";
}

GoldenComparison compare_with_golden(const std::vector<GridOutcome>& outcomes,
                                     const nlohmann::json& golden, double tolerance) {
  GoldenComparison out;
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& entries = golden.contains("entries") ? golden.at("entries") : empty;
  for (const GridOutcome& o : outcomes) {
    const std::string key = golden_key(o.point);
    if (o.accepted && !o.valid()) {
      out.problems.push_back(key + ": invalid schedule: " + o.errors.front());
      continue;
    }
    if (!entries.contains(key)) {
      out.problems.push_back(key + ": no golden value (regenerate the goldens)");
      continue;
    }
    ++out.compared;
    const std::string diff = mismatch(entries.at(key), golden_entry(o), tolerance);
    if (!diff.empty()) out.problems.push_back(key + ": " + diff);
  }
  return out;
}

}  // namespace tandem
