// Sweep specs, points and result rows (format in sweep.h).
#include "sweep/sweep.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/check.h"

namespace tandem::sweep {
namespace {

using nlohmann::json;

const std::vector<std::string> kResultColumns = {
    "status",        "iteration_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu",
    "peak_memory_gib", "oom",            "compute_s",    "tp_comm_s",            "cp_comm_s",            "ep_comm_s",
    "pp_comm_s",     "dp_comm_s",        "pipeline_bubble_s", "optimizer_s",     "wan_bytes",
    "wan_exposed_s", "wan_cost_s",      "error"};

std::string where(const Spec& spec, const std::string& field) { return spec.path + ": " + field; }

// Cluster fields an axis may set ("cluster.NAME"), in the units of the cluster files.
struct ClusterField {
  const char* name;
  void (*set)(ClusterSpec&, double);
  bool integer;
};
const ClusterField kClusterFields[] = {
    {"nic_gbit_s", [](ClusterSpec& c, double v) { c.nic_bandwidth = v * 1e9 / 8; }, false},
    {"nics_per_node", [](ClusterSpec& c, double v) { c.nics_per_node = static_cast<int64_t>(v); }, true},
    {"nic_latency_us", [](ClusterSpec& c, double v) { c.nic_latency = v * 1e-6; }, false},
    {"nvlink_gbyte_s", [](ClusterSpec& c, double v) { c.nvlink_bandwidth = v * 1e9; }, false},
    {"nvlink_latency_us", [](ClusterSpec& c, double v) { c.nvlink_latency = v * 1e-6; }, false},
    {"oversubscription", [](ClusterSpec& c, double v) { c.oversubscription = v; }, false},
    {"nodes_per_leaf", [](ClusterSpec& c, double v) { c.nodes_per_leaf = static_cast<int64_t>(v); }, true},
    {"nodes_per_pod", [](ClusterSpec& c, double v) { c.nodes_per_pod = static_cast<int64_t>(v); }, true},
    {"datacenters", [](ClusterSpec& c, double v) { c.datacenters = static_cast<int64_t>(v); }, true},
    {"wan_gbit_s", [](ClusterSpec& c, double v) { c.wan_bandwidth = v * 1e9 / 8; }, false},
    {"wan_latency_ms", [](ClusterSpec& c, double v) { c.wan_latency = v * 1e-3; }, false},
};

const ClusterField* cluster_field(const std::string& axis) {
  if (axis.rfind("cluster.", 0) != 0) return nullptr;
  for (const ClusterField& f : kClusterFields)
    if (axis.substr(8) == f.name) return &f;
  return nullptr;
}

std::string cluster_field_names() {
  std::string out;
  for (const ClusterField& f : kClusterFields) out += (out.empty() ? "cluster." : ", cluster.") + std::string(f.name);
  return out;
}

void only_keys(const json& object, const std::string& field, const std::set<std::string>& allowed,
               const Spec& spec) {
  if (!object.is_object()) throw UserError(where(spec, field) + ": must be a JSON object");
  for (const auto& [key, value] : object.items())
    if (!allowed.count(key)) throw UserError(field_message(where(spec, field), key, "unknown key"));
}

std::vector<std::string> words(const json& v, const std::string& field, const Spec& spec) {
  std::vector<std::string> out;
  if (v.is_string()) {
    std::istringstream is(v.get<std::string>());
    for (std::string w; is >> w;) out.push_back(w);
    return out;
  }
  if (!v.is_array()) throw UserError(where(spec, field) + ": must be a string or an array of strings");
  for (const json& w : v) {
    if (!w.is_string()) throw UserError(where(spec, field) + ": must be a string or an array of strings");
    out.push_back(w.get<std::string>());
  }
  return out;
}

// Checks one axis value against what its axis takes.
void check_value(const std::string& axis, const json& v, const std::string& field, const Spec& spec) {
  const bool scalar = v.is_number() || v.is_string() || v.is_boolean();
  if (!scalar) throw UserError(field_message(where(spec, field), v.dump(), "a value must be a number, a string or a boolean"));
  if (axis == "gpus" && !(v.is_number_integer() && v.get<int64_t>() > 0))
    throw UserError(field_message(where(spec, field), v.dump(), "gpus must be a positive integer"));
  if ((axis == "cluster" || axis == "stack") && !v.is_string())
    throw UserError(field_message(where(spec, field), v.dump(), axis + " must be a name or a file"));
  if (axis == "straggler") {
    if (!v.is_string())
      throw UserError(field_message(where(spec, field), v.dump(),
                                    "straggler must be a string such as \"gpu:rank=5:0.5\", \"a;b\" or \"none\""));
    parse_straggler_list(v.get<std::string>(), where(spec, field));   // UserError naming the bad piece
  }
  if (const ClusterField* f = cluster_field(axis)) {
    const bool ok = v.is_number() && v.get<double>() > 0 && (!f->integer || v.is_number_integer());
    if (!ok) throw UserError(field_message(where(spec, field), v.dump(), axis + std::string(" must be a positive ") +
                                                                       (f->integer ? "integer" : "number")));
  }
}

void check_axis_name(const std::string& name, const std::string& field, const Spec& spec) {
  if (name == "gpus" || name == "cluster" || name == "stack" || name == "straggler" || cluster_field(name)) return;
  if (name.size() > 2 && name.rfind("--", 0) == 0) return;
  throw UserError(field_message(where(spec, field), name,
                                "an axis is gpus, cluster, stack, straggler, a Megatron flag such as "
                                "--micro-batch-size or a cluster field (" + cluster_field_names() + ")"));
}

void read_base(const json& doc, Spec& spec) {
  if (!doc.contains("base")) return;
  const json& b = doc.at("base");
  only_keys(b, "base", {"config", "cluster", "gpus", "stack", "megatron_args", "stragglers"}, spec);
  if (b.contains("config")) spec.base.config_file = b.at("config").get<std::string>();
  if (b.contains("cluster")) spec.base.cluster = b.at("cluster").get<std::string>();
  if (b.contains("stack")) spec.base.stack = b.at("stack").get<std::string>();
  if (b.contains("gpus")) {
    check_value("gpus", b.at("gpus"), "base.gpus", spec);
    spec.base.gpus = b.at("gpus").get<int64_t>();
  }
  if (b.contains("megatron_args")) spec.base.megatron_flags = words(b.at("megatron_args"), "base.megatron_args", spec);
  if (b.contains("stragglers")) {
    const json& list = b.at("stragglers");
    if (!list.is_array()) throw UserError(where(spec, "base.stragglers") + ": must be an array of strings");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string field = where(spec, "base.stragglers[" + std::to_string(i) + "]");
      if (!list[i].is_string())
        throw UserError(field_message(field, list[i].dump(), "expected a string such as \"gpu:rank=5:0.5\""));
      parse_straggler(list[i].get<std::string>(), field);
      spec.base.stragglers.push_back(list[i].get<std::string>());
    }
  }
}

// The cartesian product of the axes, last axis fastest.
void expand_axes(const std::vector<std::pair<std::string, std::vector<json>>>& axes, Spec& spec) {
  if (axes.empty()) return;
  std::vector<size_t> index(axes.size(), 0);
  for (;;) {
    Point p;
    p.values = json::object();
    for (size_t a = 0; a < axes.size(); ++a) p.values[axes[a].first] = axes[a].second[index[a]];
    spec.points.push_back(std::move(p));
    size_t a = axes.size();
    while (a > 0 && ++index[a - 1] == axes[a - 1].second.size()) index[--a] = 0;
    if (a == 0) return;
  }
}

void read_axes(const json& doc, Spec& spec) {
  if (!doc.contains("axes")) return;
  const json& axes = doc.at("axes");
  if (!axes.is_array()) throw UserError(where(spec, "axes") + ": must be an array of {\"name\", \"values\"}");
  std::vector<std::pair<std::string, std::vector<json>>> parsed;
  for (size_t i = 0; i < axes.size(); ++i) {
    const std::string field = "axes[" + std::to_string(i) + "]";
    only_keys(axes[i], field, {"name", "values"}, spec);
    if (!axes[i].contains("name") || !axes[i].at("name").is_string())
      throw UserError(where(spec, field + ".name") + ": missing (a string)");
    const std::string name = axes[i].at("name").get<std::string>();
    check_axis_name(name, field + ".name", spec);
    for (const auto& earlier : parsed)
      if (earlier.first == name) throw UserError(field_message(where(spec, field + ".name"), name, "axis given twice"));
    const json values = axes[i].value("values", json());
    if (!values.is_array() || values.empty())
      throw UserError(where(spec, field + ".values") + ": axis " + name + " needs a non-empty array of values");
    for (size_t k = 0; k < values.size(); ++k)
      check_value(name, values[k], field + ".values[" + std::to_string(k) + "]", spec);
    parsed.emplace_back(name, values.get<std::vector<json>>());
    spec.axes.push_back(name);
  }
  expand_axes(parsed, spec);
}

void read_points(const json& doc, Spec& spec) {
  if (!doc.contains("points")) return;
  const json& points = doc.at("points");
  if (!points.is_array()) throw UserError(where(spec, "points") + ": must be an array of objects");
  for (size_t i = 0; i < points.size(); ++i) {
    const std::string field = "points[" + std::to_string(i) + "]";
    if (!points[i].is_object() || points[i].empty())
      throw UserError(where(spec, field) + ": must be a non-empty object of axis values");
    for (const auto& [name, value] : points[i].items()) {
      check_axis_name(name, field + "." + name, spec);
      check_value(name, value, field + "." + name, spec);
      if (std::find(spec.axes.begin(), spec.axes.end(), name) == spec.axes.end()) spec.axes.push_back(name);
    }
    spec.points.push_back({points[i]});
  }
}

std::string cell(const json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char c : s) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

}  // namespace

std::string Point::key() const { return values.dump(); }

Spec load_spec(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw UserError(field_message("SPEC", path, "is a directory, not a sweep spec file"));
  Spec spec;
  spec.path = path;
  const json doc = read_json_file(path);
  only_keys(doc, "(top level)", {"base", "axes", "points"}, spec);
  read_base(doc, spec);
  read_axes(doc, spec);
  read_points(doc, spec);
  if (spec.points.empty()) throw UserError(where(spec, "axes") + ": no points (give at least one axis or one listed point)");
  std::set<std::string> seen;
  for (size_t i = 0; i < spec.points.size(); ++i)
    if (!seen.insert(spec.points[i].key()).second)
      throw UserError(field_message(where(spec, "points"), spec.points[i].key(), "the same point twice"));
  return spec;
}

JobRequest request_for(const Spec& spec, const Point& point) {
  JobRequest r = spec.base;
  for (const auto& [name, value] : point.values.items()) {
    if (name == "gpus") r.gpus = value.get<int64_t>();
    else if (name == "cluster") r.cluster = value.get<std::string>();
    else if (name == "stack") r.stack = value.get<std::string>();
    else if (name == "straggler")
      for (const Straggler& s : parse_straggler_list(value.get<std::string>(), "straggler"))
        r.stragglers.push_back(to_text(s));
    else if (cluster_field(name)) continue;   // set on the loaded job (job_for)
    else if (value.is_boolean()) {
      if (value.get<bool>()) r.megatron_flags.push_back(name);
    } else {
      r.megatron_flags.push_back(name);
      r.megatron_flags.push_back(value.is_string() ? value.get<std::string>() : value.dump());
    }
  }
  return r;
}

Job job_for(const Spec& spec, const Point& point) {
  Job job = load_job(request_for(spec, point));
  for (const auto& [name, value] : point.values.items())
    if (const ClusterField* f = cluster_field(name)) {
      f->set(job.cluster, value.get<double>());
      job.notes.push_back("sweep: " + name + " = " + value.dump() + " on cluster " + job.cluster.name);
    }
  return job;
}

json result_row(const Point& point, const Job& job, const sim::SimResult& r) {
  const json result = sim::result_to_json(r);
  json row;
  row["point"] = point.values;
  row["status"] = "ok";
  for (const char* key : {"iteration_time_s", "tokens_per_s", "model_tflops_per_gpu", "mfu", "peak_memory_gib", "oom"})
    row[key] = result.at(key);
  row["tokens_per_s_per_gpu"] = r.tokens_per_s / static_cast<double>(job.world_size);
  for (const auto& [cause, seconds] : result.at("breakdown").items()) row[cause + "_s"] = seconds;   // compute_s, ...
  row["wan_bytes"] = r.wan ? r.wan->bytes : 0.0;          // one datacenter: nothing crosses a WAN
  row["wan_exposed_s"] = r.wan ? r.wan->exposed_s : 0.0;
  row["wan_cost_s"] = r.wan && r.wan->ideal_iteration_s > 0 ? r.wan->cost_s : 0.0;
  return row;
}

json error_row(const Point& point, const std::string& message) {
  return {{"point", point.values}, {"status", "error"}, {"error", message}};
}

std::vector<std::string> columns(const Spec& spec) {
  std::vector<std::string> out = spec.axes;
  out.insert(out.end(), kResultColumns.begin(), kResultColumns.end());
  return out;
}

std::string to_csv(const Spec& spec, const std::vector<json>& rows) {
  std::ostringstream os;
  const std::vector<std::string> cols = columns(spec);
  for (size_t c = 0; c < cols.size(); ++c) os << (c ? "," : "") << cell(cols[c]);
  os << "\n";
  for (const json& row : rows) {
    for (size_t c = 0; c < cols.size(); ++c) {
      const bool axis = c < spec.axes.size();
      const json& source = axis ? row.at("point") : row;
      os << (c ? "," : "") << (source.contains(cols[c]) ? cell(source.at(cols[c])) : "");
    }
    os << "\n";
  }
  return os.str();
}

json to_json(const Spec& spec, const std::vector<json>& rows) {
  return {{"sweep", spec.path}, {"axes", spec.axes}, {"rows", rows}};
}

std::vector<json> read_rows(const std::string& json_path, const Spec& spec) {
  if (!std::filesystem::exists(json_path)) return {};
  json doc;
  try {
    doc = read_json_file(json_path);
  } catch (const UserError& e) {
    throw UserError(std::string(e.what()) + " (an earlier sweep output that cannot be read; move it away to start over)");
  }
  const bool shaped = doc.is_object() && doc.contains("axes") && doc.contains("rows") && doc.at("rows").is_array();
  if (!shaped) throw UserError(json_path + ": not a tandem sweep output (move it away to start over)");
  if (doc.at("axes") != json(spec.axes))
    throw UserError(json_path + ": written by a sweep with other axes " + doc.at("axes").dump() +
                    " (this spec: " + json(spec.axes).dump() + "); choose another --out");
  std::vector<json> rows;
  for (const json& row : doc.at("rows")) {
    if (!row.is_object() || !row.contains("point") || !row.contains("status"))
      throw UserError(json_path + ": a row without point or status (move the file away to start over)");
    rows.push_back(row);
  }
  return rows;
}

}  // namespace tandem::sweep
