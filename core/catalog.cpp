// Presets and cluster descriptions are data files in the repository:
//   models/presets/NAME.json   model fields (Megatron keys) + "source" + optional "defaults"
//   clusters/NAME.json         a cluster description, units spelled in every key:
// {
//   "name": "dgx-a100", "source": "...",
//   "gpu": {"name": "A100-SXM4-80GB", "peak_tflops": {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp8": 0},
//           "hbm_gib": 80, "hbm_tbyte_s": 2.039, "sm_count": 108},
//   "node": {"gpus_per_node": 8, "nvlink_gbyte_s": 300, "nvlink_latency_us": 2.0,
//            "nics_per_node": 8, "nic_gbit_s": 200, "nic_latency_us": 2.0},
//   "fabric": {"topology": "fat-tree", "nodes_per_leaf": 16, "oversubscription": 1.0, "nodes_per_pod": 0},
//   "datacenters": {"count": 1, "wan_gbit_s": 0, "wan_latency_ms": 0},
//   "max_gpus": 4480,
//   "stragglers": ["gpu:rank=5:0.5", {"kind": "nic", "fraction": 0.01, "speed": 0.5, "seed": 1}]   optional,
//                 degraded parts (core/stragglers.h)
// }
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"

#ifndef TANDEM_DATA_DIR
#define TANDEM_DATA_DIR "."
#endif

namespace tandem {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<std::string> list_json_names(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".json") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// A name resolves to DIR/NAME.json; anything with a '/' or ending in .json is a file path.
fs::path locate(const std::string& name_or_file, const fs::path& dir, const std::string& what) {
  const bool looks_like_file = name_or_file.find('/') != std::string::npos ||
                               (name_or_file.size() > 5 && name_or_file.ends_with(".json"));
  if (looks_like_file) return name_or_file;
  fs::path p = dir / (name_or_file + ".json");
  if (!fs::exists(p))
    throw UserError(what + " '" + name_or_file + "' not found (known: " + join(list_json_names(dir)) + ")");
  return p;
}

double number_at(const json& obj, const std::string& key, const std::string& where, double lo, double hi,
                 bool required, double fallback) {
  if (!obj.contains(key)) {
    if (required) throw UserError(where + "." + key + ": missing");
    return fallback;
  }
  const json& v = obj.at(key);
  if (!v.is_number()) throw_field_error(where + "." + key, v.dump(), "expected a number");
  return parse_real(where + "." + key, v.dump(), lo, hi);
}

void reject_unknown(const json& obj, const std::string& where, const std::set<std::string>& known) {
  if (!obj.is_object()) throw_field_error(where, obj.dump(), "expected an object");
  for (const auto& [k, v] : obj.items())
    if (!known.count(k)) throw UserError(where + "." + k + ": unknown field (expected " +
                                         join(std::vector<std::string>(known.begin(), known.end())) + ")");
}

GpuSpec gpu_from_json(const json& g, const std::string& where) {
  reject_unknown(g, where, {"name", "peak_tflops", "hbm_gib", "hbm_tbyte_s", "sm_count", "source"});
  GpuSpec gpu;
  gpu.name = g.value("name", "gpu");
  const json peaks = g.value("peak_tflops", json::object());
  reject_unknown(peaks, where + ".peak_tflops", {"fp32", "tf32", "bf16", "fp8"});
  const std::string pw = where + ".peak_tflops";
  gpu.peak_flops_bf16 = number_at(peaks, "bf16", pw, 1e-3, 1e6, true, 0) * 1e12;
  gpu.peak_flops_fp32 = number_at(peaks, "fp32", pw, 0, 1e6, false, 0) * 1e12;
  gpu.peak_flops_tf32 = number_at(peaks, "tf32", pw, 0, 1e6, false, 0) * 1e12;
  gpu.peak_flops_fp8 = number_at(peaks, "fp8", pw, 0, 1e6, false, 0) * 1e12;
  gpu.hbm_bytes = number_at(g, "hbm_gib", where, 1e-3, 1e6, true, 0) * 1024.0 * 1024.0 * 1024.0;
  gpu.hbm_bandwidth = number_at(g, "hbm_tbyte_s", where, 1e-3, 1e4, true, 0) * 1e12;
  gpu.sm_count = static_cast<int64_t>(number_at(g, "sm_count", where, 1, 1e6, true, 0));
  return gpu;
}

void node_from_json(ClusterSpec& c, const json& n, const std::string& where) {
  reject_unknown(n, where, {"gpus_per_node", "nvlink_gbyte_s", "nvlink_latency_us", "nics_per_node", "nic_gbit_s",
                            "nic_latency_us", "source"});
  c.gpus_per_node = static_cast<int64_t>(number_at(n, "gpus_per_node", where, 1, 1024, true, 0));
  c.nvlink_bandwidth = number_at(n, "nvlink_gbyte_s", where, 1e-3, 1e6, true, 0) * 1e9;
  c.nvlink_latency = number_at(n, "nvlink_latency_us", where, 0, 1e6, false, 1.0) * 1e-6;
  c.nics_per_node = static_cast<int64_t>(number_at(n, "nics_per_node", where, 1, 1024, false, double(c.gpus_per_node)));
  c.nic_bandwidth = number_at(n, "nic_gbit_s", where, 1e-3, 1e6, true, 0) * 1e9 / 8.0;
  c.nic_latency = number_at(n, "nic_latency_us", where, 0, 1e6, false, 2.0) * 1e-6;
}

void fabric_from_json(ClusterSpec& c, const json& f, const std::string& where) {
  reject_unknown(f, where, {"topology", "nodes_per_leaf", "oversubscription", "nodes_per_pod", "source"});
  c.topology = f.value("topology", "fat-tree");
  if (c.topology != "fat-tree") throw_field_error(where + ".topology", c.topology, "only fat-tree is modelled");
  c.nodes_per_leaf = static_cast<int64_t>(number_at(f, "nodes_per_leaf", where, 1, 1e6, false, 16));
  c.oversubscription = number_at(f, "oversubscription", where, 1.0, 1e3, false, 1.0);
  c.nodes_per_pod = static_cast<int64_t>(number_at(f, "nodes_per_pod", where, 0, 1e7, false, 0));
}

void datacenters_from_json(ClusterSpec& c, const json& d, const std::string& where) {
  reject_unknown(d, where, {"count", "wan_gbit_s", "wan_latency_ms", "source"});
  c.datacenters = static_cast<int64_t>(number_at(d, "count", where, 1, 1024, false, 1));
  c.wan_bandwidth = number_at(d, "wan_gbit_s", where, 0, 1e9, c.datacenters > 1, 0) * 1e9 / 8.0;
  c.wan_latency = number_at(d, "wan_latency_ms", where, 0, 1e6, c.datacenters > 1, 0) * 1e-3;
  if (c.datacenters > 1 && c.wan_bandwidth <= 0)
    throw_field_error(where + ".wan_gbit_s", 0, "must be positive with more than one datacenter");
}

}  // namespace

std::string data_dir() {
  if (const char* env = std::getenv("TANDEM_DATA_DIR"); env && *env) return env;
  return TANDEM_DATA_DIR;
}

std::vector<std::string> list_model_presets() { return list_json_names(fs::path(data_dir()) / "models" / "presets"); }
std::vector<std::string> list_clusters() { return list_json_names(fs::path(data_dir()) / "clusters"); }

bool is_model_preset(const std::string& name) {
  return fs::exists(fs::path(data_dir()) / "models" / "presets" / (name + ".json"));
}

void apply_model_preset(Job& job, const std::string& name_or_file) {
  const fs::path path = locate(name_or_file, fs::path(data_dir()) / "models" / "presets", "model preset");
  const json doc = read_json_file(path.string());
  if (!doc.is_object()) throw UserError(path.string() + ": a model preset must be a JSON object");
  job.model = ModelConfig{};
  job.model.name = path.stem().string();
  Job scratch = job;
  apply_job_json(scratch, json{{"model", doc}}, path.string());
  job.model = scratch.model;
  if (doc.contains("defaults")) {
    const json& d = doc["defaults"];
    json sections = json::object();
    if (!d.is_object()) throw_field_error(path.string() + ": defaults", d.dump(), "expected an object");
    for (const auto& [k, v] : d.items()) {
      if (k != "parallel" && k != "training" && k != "gpus" && k != "cluster")
        throw UserError(path.string() + ": defaults." + k + ": unknown field (expected parallel, training, gpus, cluster)");
      sections[k] = v;
    }
    apply_job_json(job, sections, path.string() + ": defaults");
  }
}

ModelConfig load_model_preset(const std::string& name_or_file) {
  Job job;
  apply_model_preset(job, name_or_file);
  return job.model;
}

ClusterSpec cluster_from_json(const json& doc, const std::string& source) {
  reject_unknown(doc, source,
                 {"name", "source", "gpu", "node", "fabric", "datacenters", "max_gpus", "description", "stack",
                  "stragglers"});
  ClusterSpec c;
  c.name = doc.value("name", "custom");
  c.source = doc.value("source", "");
  if (!doc.contains("gpu")) throw UserError(source + ".gpu: missing");
  if (!doc.contains("node")) throw UserError(source + ".node: missing");
  c.gpu = gpu_from_json(doc["gpu"], source + ".gpu");
  node_from_json(c, doc["node"], source + ".node");
  fabric_from_json(c, doc.value("fabric", json::object()), source + ".fabric");
  datacenters_from_json(c, doc.value("datacenters", json::object()), source + ".datacenters");
  c.max_gpus = static_cast<int64_t>(number_at(doc, "max_gpus", source, 0, 1e8, false, 0));
  if (doc.contains("stack")) {
    if (!doc["stack"].is_string() || doc["stack"].get<std::string>().empty())
      throw_field_error(source + ".stack", doc["stack"].dump(), "expected a stack name (clusters/stacks/NAME.json)");
    c.stack = doc["stack"].get<std::string>();
  }
  if (doc.contains("stragglers")) c.stragglers = stragglers_from_json(doc["stragglers"], source + ".stragglers");
  return c;
}

std::vector<Straggler> stragglers_from_json(const json& value, const std::string& field) {
  if (!value.is_array()) throw_field_error(field, value.dump(), "expected an array of stragglers");
  std::vector<Straggler> out;
  for (size_t i = 0; i < value.size(); ++i)
    out.push_back(straggler_from_json(value[i], field + "[" + std::to_string(i) + "]"));
  return out;
}

ClusterSpec load_cluster(const std::string& name_or_file) {
  const fs::path path = locate(name_or_file, fs::path(data_dir()) / "clusters", "cluster");
  return cluster_from_json(read_json_file(path.string()), path.string());
}

}  // namespace tandem
