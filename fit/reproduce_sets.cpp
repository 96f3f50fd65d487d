// Reading `tandem reproduce` set files (format in cli/reproduce_sets.h).
#include "fit/reproduce_sets.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem::fit {
namespace {

using json = nlohmann::json;

std::vector<std::string> strings_at(const json& doc, const char* key, const std::string& where) {
  std::vector<std::string> out;
  if (!doc.contains(key)) return out;
  if (!doc[key].is_array()) throw UserError(where + "." + key + ": expected an array of strings, got " + doc[key].dump());
  for (const auto& v : doc[key]) {
    if (!v.is_string()) throw UserError(where + "." + key + ": expected an array of strings, got " + v.dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string string_at(const json& doc, const char* key, const std::string& where, const std::string& fallback) {
  if (!doc.contains(key)) return fallback;
  if (!doc[key].is_string()) throw UserError(where + "." + key + " = " + doc[key].dump() + ": expected a string");
  return doc[key].get<std::string>();
}

void reject_unknown_keys(const json& doc, const std::string& where, const std::vector<std::string>& known) {
  for (const auto& [k, v] : doc.items()) {
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    std::string list;
    for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
    throw UserError(where + "." + k + ": unknown field (expected " + list + ")");
  }
}

std::string published_key(const std::string& metric, const std::string& where) {
  if (metric == "hardware_tflops_per_gpu" || metric == "model_tflops_per_gpu") return "tflops_per_gpu";
  if (metric == "tokens_per_s_per_gpu" || metric == "iteration_time_s") return metric;
  throw UserError(where + ".metric = " + metric +
                  ": expected hardware_tflops_per_gpu, model_tflops_per_gpu, tokens_per_s_per_gpu or iteration_time_s");
}

struct Family {
  std::string model;
  std::vector<std::string> flags;
};

std::map<std::string, Family> read_families(const json& set, const std::string& where, ReproduceSet& out) {
  std::map<std::string, Family> families;
  if (!set.contains("families")) return families;
  if (!set["families"].is_object()) throw UserError(where + ".families: expected an object of families");
  for (const auto& [name, f] : set["families"].items()) {
    const std::string fw = where + ".families." + name;
    if (!f.is_object()) throw UserError(fw + ": expected an object");
    for (const auto& [k, v] : f.items())
      if (k != "model" && k != "flags" && k != "assumptions") throw UserError(fw + "." + k + ": unknown field (expected model, flags, assumptions)");
    Family fam;
    fam.model = string_at(f, "model", fw, "");
    if (fam.model.empty()) throw UserError(fw + ".model: missing (a model preset name)");
    fam.flags = strings_at(f, "flags", fw);
    out.family_assumptions[name] = string_at(f, "assumptions", fw, "");
    families[name] = fam;
  }
  return families;
}

ReproduceRow read_row(const json& set, const json& row, const std::string& where, const std::string& metric,
                      const std::map<std::string, Family>& families) {
  if (!row.is_object()) throw UserError(where + ": expected an object");
  reject_unknown_keys(row, where, {"label", "id", "family", "precision", "gpus", "flags", "published", "source_ref",
                                "expected_oom"});
  ReproduceRow r;
  r.where = where;
  r.label = string_at(row, "label", where, "?");
  r.family = string_at(row, "family", where, "");
  r.precision = string_at(row, "precision", where, "");
  r.expected_oom = string_at(row, "expected_oom", where, "");
  if (row.contains("expected_oom") && r.expected_oom.empty())
    throw UserError(where + ".expected_oom = \"\": give the reason the run is expected out of memory");
  r.request.cluster = string_at(set, "cluster", where, kDefaultCluster);
  if (!row.contains("gpus") || !row["gpus"].is_number_integer() || row["gpus"].get<int64_t>() <= 0)
    throw UserError(where + ".gpus = " + (row.contains("gpus") ? row["gpus"].dump() : "missing") + ": expected a positive integer");
  r.request.gpus = row["gpus"].get<int64_t>();
  r.request.megatron_flags = strings_at(set, "common_flags", where);
  if (!r.family.empty() && !families.empty()) {
    auto it = families.find(r.family);
    if (it == families.end()) throw UserError(where + ".family = " + r.family + ": not among the set's families");
    r.request.model_preset = it->second.model;
    for (const auto& f : it->second.flags) r.request.megatron_flags.push_back(f);
  }
  for (auto& f : strings_at(row, "flags", where)) r.request.megatron_flags.push_back(f);
  const std::string key = published_key(metric, where);
  if (!row.contains("published") || !row["published"].is_object() || !row["published"].contains(key) ||
      !row["published"][key].is_number() || !(row["published"][key].get<double>() > 0))
    throw UserError(where + ".published." + key + " = " +
                    (row.contains("published") && row["published"].is_object() && row["published"].contains(key)
                         ? row["published"][key].dump() : std::string("missing")) +
                    ": expected a positive number (the set's metric is " + metric + ")");
  r.published = row["published"][key].get<double>();
  return r;
}

}  // namespace

ReproduceSet read_reproduce_set(const std::string& path) {
  const json set = read_json_file(path);
  if (!set.is_object()) throw UserError(path + ": a set must be a JSON object");
  reject_unknown_keys(set, path, {"name", "source", "cluster", "stack", "metric", "assumptions", "common_flags",
                                  "family", "families", "rows", "skipped"});
  ReproduceSet s;
  s.path = path;
  s.name = string_at(set, "name", path, path);
  s.source = string_at(set, "source", path, "");
  s.metric = string_at(set, "metric", path, "model_tflops_per_gpu");
  published_key(s.metric, path);
  s.assumptions = string_at(set, "assumptions", path, "none stated");
  s.stack = string_at(set, "stack", path, "");
  s.family = string_at(set, "family", path, "");
  const auto families = read_families(set, path, s);
  if (!set.contains("rows") || !set["rows"].is_array() || set["rows"].empty())
    throw UserError(path + ".rows: expected a non-empty array of rows");
  const auto& rows = set["rows"];
  for (size_t i = 0; i < rows.size(); ++i)
    s.rows.push_back(read_row(set, rows[i], path + ": rows[" + std::to_string(i) + "]", s.metric, families));
  if (set.contains("skipped")) {
    if (!set["skipped"].is_array()) throw UserError(path + ".skipped: expected an array of {id, reason}");
    s.skipped = static_cast<int>(set["skipped"].size());
  }
  return s;
}

std::vector<std::string> default_reproduce_sets() {
  std::vector<std::string> sets;
  const auto dir = std::filesystem::path(data_dir()) / "experiments" / "reproduce";
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") sets.push_back(e.path().string());
  std::sort(sets.begin(), sets.end());
  return sets;
}

bool metric_is_time(const std::string& metric) { return metric == "iteration_time_s"; }

double throughput_error(const std::string& metric, double simulated, double published) {
  TANDEM_CHECK(simulated > 0 && published > 0);
  return metric_is_time(metric) ? published / simulated - 1 : simulated / published - 1;
}

void ErrorSummary::add(double error, bool oom_row) {
  rows++;
  within_10 += std::fabs(error) <= 0.10;
  oom += oom_row;
  sum_abs += std::fabs(error);
  sum_signed += error;
  max_abs = std::max(max_abs, std::fabs(error));
}

}  // namespace tandem::fit
