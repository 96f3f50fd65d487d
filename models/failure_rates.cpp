// Failure-rate files (format in failure_rates.h).
#include "models/failure_rates.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_loader.h"

namespace tandem {
namespace {

using nlohmann::json;

void check_keys(const json& j, const std::set<std::string>& allowed, const std::string& where) {
  if (!j.is_object()) throw_field_error(where, j.dump(), "must be an object");
  for (const auto& [key, value] : j.items())
    if (!allowed.count(key)) throw_field_error(where + "." + key, value.dump(), "unknown key");
}

double positive_number(const json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key)) throw UserError(where + "." + key + ": required");
  const json& v = j.at(key);
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
    throw_field_error(where + "." + key, v.dump(), "must be a positive number");
  return v.get<double>();
}

std::string text(const json& j, const std::string& key, const std::string& where, bool required) {
  if (!j.contains(key)) {
    if (required) throw UserError(where + "." + key + ": required");
    return "";
  }
  if (!j.at(key).is_string()) throw_field_error(where + "." + key, j.at(key).dump(), "must be a string");
  return j.at(key).get<std::string>();
}

RatedComponent component_from(const json& j, const std::string& where) {
  check_keys(j, {"name", "per", "mtbf_hours", "mtbf_hours_range", "source"}, where);
  RatedComponent c;
  c.name = text(j, "name", where, true);
  c.per = text(j, "per", where, true);
  if (c.per != "gpu" && c.per != "node" && c.per != "job")
    throw_field_error(where + ".per", c.per, "must be gpu, node or job");
  c.mtbf_hours = positive_number(j, "mtbf_hours", where);
  c.mtbf_low_hours = c.mtbf_high_hours = c.mtbf_hours;
  if (j.contains("mtbf_hours_range")) {
    const json& r = j.at("mtbf_hours_range");
    if (!r.is_array() || r.size() != 2 || !r[0].is_number() || !r[1].is_number() ||
        !(r[0].get<double>() > 0) || !(r[0].get<double>() <= c.mtbf_hours) || !(c.mtbf_hours <= r[1].get<double>()))
      throw_field_error(where + ".mtbf_hours_range", r.dump(), "must be [low, high] with 0 < low <= mtbf_hours <= high");
    c.mtbf_low_hours = r[0].get<double>();
    c.mtbf_high_hours = r[1].get<double>();
  }
  c.source = text(j, "source", where, true);
  return c;
}

}  // namespace

FailureRates load_failure_rates(const std::string& path) {
  const json j = read_json_file(path);
  const std::string file = path + ": ";
  try {
    check_keys(j, {"description", "components", "planned"}, "failure rates");
    FailureRates rates;
    rates.path = path;
    rates.description = text(j, "description", "failure rates", false);
    if (!j.contains("components") || !j.at("components").is_array() || j.at("components").empty())
      throw_field_error("components", j.value("components", json()).dump(), "must be a non-empty array");
    for (size_t i = 0; i < j.at("components").size(); ++i)
      rates.components.push_back(component_from(j.at("components")[i], "components[" + std::to_string(i) + "]"));
    if (j.contains("planned")) {
      const json& p = j.at("planned");
      check_keys(p, {"per_day", "minutes", "source"}, "planned");
      rates.planned.per_day = positive_number(p, "per_day", "planned");
      rates.planned.minutes = positive_number(p, "minutes", "planned");
      rates.planned.source = text(p, "source", "planned", true);
    }
    return rates;
  } catch (const UserError& e) {
    throw UserError(file + e.what());
  }
}

double units_of(const RatedComponent& c, double gpus, double nodes) {
  if (c.per == "gpu") return gpus;
  if (c.per == "node") return nodes;
  return 1;
}

std::vector<FailureComponent> system_components(const FailureRates& rates, double gpus, double nodes, int which) {
  std::vector<FailureComponent> out;
  for (const RatedComponent& c : rates.components) {
    const double mtbf = which < 0 ? c.mtbf_low_hours : which > 0 ? c.mtbf_high_hours : c.mtbf_hours;
    out.push_back({units_of(c, gpus, nodes), mtbf});
  }
  return out;
}

}  // namespace tandem
