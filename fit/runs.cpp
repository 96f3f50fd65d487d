// Run files for `tandem fit` (formats in runs.h).
#include "fit/runs.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "fit/reproduce_sets.h"

namespace tandem::fit {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& where, const std::string& field, const std::string& value,
                       const std::string& reason) {
  throw UserError(where + ": " + field_message(field, value, reason));
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> out;
  for (std::string w; is >> w;) out.push_back(w);
  return out;
}

std::vector<std::string> flags_of(const json& v, const std::string& where, const std::string& field) {
  if (v.is_string()) return split_words(v.get<std::string>());
  if (!v.is_array()) fail(where, field, v.dump(), "expected a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& w : v) {
    if (!w.is_string()) fail(where, field, w.dump(), "expected a string");
    out.push_back(w.get<std::string>());
  }
  return out;
}

double positive(const std::string& text, const std::string& where, const std::string& field) {
  double x = 0;
  try {
    size_t used = 0;
    x = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
  } catch (const std::exception&) {
    fail(where, field, text, "expected a number");
  }
  if (!std::isfinite(x) || x <= 0) fail(where, field, text, "must be a positive number");
  return x;
}

double positive(const json& v, const std::string& where, const std::string& field) {
  if (!v.is_number()) fail(where, field, v.dump(), "expected a number");
  return positive(v.dump(), where, field);
}

int64_t gpu_count(const std::string& text, const std::string& where) {
  const double g = positive(text, where, "gpus");
  if (g != std::floor(g) || g > (1 << 24)) fail(where, "gpus", text, "expected a positive integer");
  return static_cast<int64_t>(g);
}

// A published set (fit/reproduce_sets.h): rows with their family (else the set's "family", else
// the set's file name) and the set's metric.
void read_published_set(RunFile& out) {
  const ReproduceSet set = read_reproduce_set(out.path);
  Metric m = Metric::ModelTflopsPerGpu;
  if (set.metric == "hardware_tflops_per_gpu") m = Metric::HardwareTflopsPerGpu;
  else if (set.metric == "iteration_time_s") m = Metric::IterationTime;
  else if (set.metric == "tokens_per_s_per_gpu") m = Metric::TokensPerSecondPerGpu;
  std::string stem = out.path.substr(out.path.find_last_of('/') + 1);
  stem = stem.substr(0, stem.rfind('.'));
  if (!set.stack.empty()) out.stack = set.stack;
  for (const ReproduceRow& row : set.rows) {
    Run r;
    r.where = row.where;
    r.label = row.label;
    r.family = !row.family.empty() ? row.family : !set.family.empty() ? set.family : stem;
    r.request = row.request;
    r.metric = m;
    r.measured = row.published;
    out.runs.push_back(std::move(r));
  }
}

void read_user_run(const json& row, const std::string& where, Run& r) {
  static const std::set<std::string> known = {"label", "family", "cluster", "gpus", "megatron_args", "step_time_s",
                                              "tokens_per_s", "source", "notes"};
  if (!row.is_object()) fail(where, "run", row.dump().substr(0, 40), "expected an object");
  for (const auto& [k, v] : row.items())
    if (!known.count(k)) fail(where, k, v.dump().substr(0, 40), "unknown field (expected label, family, cluster, gpus, "
                                                                 "megatron_args, step_time_s or tokens_per_s)");
  r.label = row.value("label", where.substr(where.rfind(' ') + 1));
  r.family = row.value("family", r.label);
  if (!row.contains("cluster") || !row["cluster"].is_string()) fail(where, "cluster", row.value("cluster", json()).dump(), "expected a cluster name");
  r.request.cluster = row["cluster"].get<std::string>();
  if (!row.contains("gpus") || !row["gpus"].is_number()) fail(where, "gpus", row.value("gpus", json()).dump(), "expected an integer");
  r.request.gpus = gpu_count(row["gpus"].dump(), where);
  if (!row.contains("megatron_args")) fail(where, "megatron_args", "missing", "the run's Megatron command line");
  r.request.megatron_flags = flags_of(row["megatron_args"], where, "megatron_args");
  const bool time = row.contains("step_time_s"), rate = row.contains("tokens_per_s");
  if (time == rate) fail(where, "step_time_s", time ? "both" : "missing", "give exactly one of step_time_s and tokens_per_s");
  r.metric = time ? Metric::IterationTime : Metric::TokensPerSecond;
  r.measured = positive(row[time ? "step_time_s" : "tokens_per_s"], where, time ? "step_time_s" : "tokens_per_s");
}

void read_user_json(const json& doc, RunFile& out) {
  const json* runs = &doc;
  if (doc.is_object()) {
    for (const auto& [k, v] : doc.items())
      if (k != "runs" && k != "stack" && k != "name" && k != "source" && k != "description")
        fail(out.path, k, v.dump().substr(0, 40), "unknown field (expected runs, stack, name, source, description)");
    if (doc.contains("stack")) out.stack = doc["stack"].get<std::string>();
    if (!doc.contains("runs")) fail(out.path, "runs", "missing", "expected a list of runs");
    runs = &doc["runs"];
  }
  if (!runs->is_array()) fail(out.path, "runs", runs->dump().substr(0, 40), "expected an array of runs");
  for (size_t i = 0; i < runs->size(); ++i) {
    Run r;
    r.where = out.path + ": runs[" + std::to_string(i) + "]";
    read_user_run((*runs)[i], r.where, r);
    out.runs.push_back(std::move(r));
  }
}

// One CSV record: comma-separated, double-quoted fields may hold commas and "" quotes.
std::vector<std::string> csv_fields(const std::string& line, const std::string& where) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') out.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else out.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else if (c != '\r') {
      out.back() += c;
    }
  }
  if (quoted) fail(where, "line", line.substr(0, 40), "unterminated quote");
  return out;
}

void read_user_csv(std::istream& in, RunFile& out) {
  static const std::set<std::string> known = {"label", "family", "cluster", "gpus", "megatron_args", "step_time_s",
                                              "tokens_per_s"};
  std::string line;
  if (!std::getline(in, line)) fail(out.path, "header", "empty file", "expected a header line");
  const std::vector<std::string> header = csv_fields(line, out.path + ": header");
  for (const auto& h : header)
    if (!known.count(h)) fail(out.path + ": header", "column", h, "unknown column (expected label, family, cluster, "
                                                                    "gpus, megatron_args, step_time_s, tokens_per_s)");
  for (const char* need : {"cluster", "gpus", "megatron_args"})
    if (std::find(header.begin(), header.end(), need) == header.end())
      fail(out.path + ": header", "column", need, "missing required column");
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = out.path + ": row " + std::to_string(number);
    const std::vector<std::string> cells = csv_fields(line, where);
    if (cells.size() != header.size())
      fail(where, "columns", std::to_string(cells.size()), "expected " + std::to_string(header.size()) + " as the header");
    json row = json::object();
    for (size_t c = 0; c < header.size(); ++c) {
      if (cells[c].empty()) continue;
      const std::string& h = header[c];
      if (h == "gpus") row[h] = gpu_count(cells[c], where);
      else if (h == "step_time_s" || h == "tokens_per_s") row[h] = positive(cells[c], where, h);
      else row[h] = cells[c];
    }
    Run r;
    r.where = where;
    read_user_run(row, where, r);
    out.runs.push_back(std::move(r));
  }
}

}  // namespace

const char* to_string(Metric m) {
  switch (m) {
    case Metric::IterationTime: return "step time (s)";
    case Metric::TokensPerSecond: return "tokens/s";
    case Metric::TokensPerSecondPerGpu: return "tokens/s per GPU";
    case Metric::ModelTflopsPerGpu: return "model TFLOP/s per GPU";
    case Metric::HardwareTflopsPerGpu: return "hardware TFLOP/s per GPU";
  }
  return "?";
}

bool is_rate(Metric m) { return m != Metric::IterationTime; }

RunFile load_run_file(const std::string& path) {
  RunFile out;
  out.path = path;
  const bool csv = path.size() > 4 && path.substr(path.size() - 4) == ".csv";
  if (csv) {
    std::ifstream in(path);
    if (!in) throw UserError(path + ": cannot open the run file");
    read_user_csv(in, out);
  } else {
    const json doc = read_json_file(path);
    if (doc.is_object() && doc.contains("rows")) {
      read_published_set(out);
    } else {
      read_user_json(doc, out);
    }
  }
  if (out.runs.empty()) throw UserError(path + ": no runs");
  return out;
}

std::vector<Job> resolve_runs(const std::vector<Run>& runs) {
  std::vector<Job> jobs;
  for (const Run& r : runs) {
    try {
      jobs.push_back(load_job(r.request));
    } catch (const UserError& e) {
      throw UserError(r.where + " (" + r.label + "): " + e.what());
    }
  }
  return jobs;
}

}  // namespace tandem::fit
