// Reading the compute model's data: per-GPU efficiency files and measured per-op profiles.
// Formats are described in compute_model.h. Every bad value throws UserError naming the file,
// the field and the value.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::sim {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string joined(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Field access with errors that name the file, the dotted field and the value.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& value, const std::string& reason) const {
    throw UserError(file_ + ": " + field_message(field, value, reason));
  }

  void only(const json& obj, const std::string& where, const std::set<std::string>& known) const {
    if (!obj.is_object()) fail(where, obj.dump(), "expected an object");
    for (const auto& [key, v] : obj.items())
      if (!known.count(key)) fail(where.empty() ? key : where + "." + key, v.dump(), "unknown field (expected " + joined(known) + ")");
  }

  const json& member(const json& obj, const std::string& where, const std::string& key) const {
    if (!obj.contains(key)) throw UserError(file_ + ": " + where + "." + key + ": missing");
    return obj.at(key);
  }

  // A constant: {"value": V, "derivation": "why V"}. Returns V.
  const json& constant(const json& section, const std::string& where, const std::string& key) const {
    const json& c = member(section, where, key);
    const std::string field = where + "." + key;
    only(c, field, {"value", "derivation"});
    const json& d = member(c, field, "derivation");
    if (!d.is_string() || d.get<std::string>().empty())
      fail(field + ".derivation", d.dump(), "every constant needs a non-empty derivation string");
    return member(c, field, "value");
  }

  double number(const json& v, const std::string& field, double lo, double hi, bool lo_open = false) const {
    if (!v.is_number()) fail(field, v.dump(), "expected a number");
    const double x = v.get<double>();
    const bool low_ok = lo_open ? x > lo : x >= lo;
    if (!std::isfinite(x) || !low_ok || x > hi) {
      std::ostringstream range;
      range << "must be in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
      fail(field, v.dump(), range.str());
    }
    return x;
  }

  double constant_number(const json& s, const std::string& where, const std::string& key, double lo, double hi,
                         bool lo_open = false) const {
    return number(constant(s, where, key), where + "." + key, lo, hi, lo_open);
  }

  int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(field, v.dump(), "expected an integer");
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(field, v.dump(), "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

void read_gemm(const Reader& r, const json& g, GpuEfficiency& e) {
  const std::string w = "gemm";
  r.only(g, w, {"fraction_bf16", "fraction_fp8", "fraction_fp32", "tiles", "tile_k", "k_overhead", "max_split_k",
                "fp8_cast_bytes_per_element"});
  e.gemm_fraction_half = r.constant_number(g, w, "fraction_bf16", 0, 1, true);
  e.gemm_fraction_fp8 = r.constant_number(g, w, "fraction_fp8", 0, 1);
  e.gemm_fraction_fp32 = r.constant_number(g, w, "fraction_fp32", 0, 1, true);
  const json& tiles = r.constant(g, w, "tiles");
  if (!tiles.is_array() || tiles.empty()) r.fail(w + ".tiles.value", tiles.dump(), "expected a non-empty list of tiles");
  for (size_t i = 0; i < tiles.size(); ++i) {
    const std::string f = w + ".tiles.value[" + std::to_string(i) + "]";
    r.only(tiles[i], f, {"m", "n", "efficiency"});
    GemmTile t;
    t.m = r.integer(r.member(tiles[i], f, "m"), f + ".m", 8, 1024);
    t.n = r.integer(r.member(tiles[i], f, "n"), f + ".n", 8, 1024);
    t.efficiency = r.number(r.member(tiles[i], f, "efficiency"), f + ".efficiency", 0, 1, true);
    e.tiles.push_back(t);
  }
  e.tile_k = r.integer(r.constant(g, w, "tile_k"), w + ".tile_k", 8, 1024);
  e.k_overhead = r.constant_number(g, w, "k_overhead", 0, 1e5);
  e.max_split_k = r.integer(r.constant(g, w, "max_split_k"), w + ".max_split_k", 1, 64);
  e.fp8_cast_bytes_per_element = r.constant_number(g, w, "fp8_cast_bytes_per_element", 0, 64);
}

void read_attention(const Reader& r, const json& a, GpuEfficiency& e) {
  const std::string w = "attention";
  r.only(a, w, {"flash_supported", "forward_fraction", "backward_fraction", "backward_work_ratio", "block_q",
                "block_kv", "head_dim_overhead", "kv_overhead", "softmax_efficiency", "dropout_forward_factor",
                "dropout_backward_factor"});
  const json& flash = r.constant(a, w, "flash_supported");
  if (!flash.is_boolean()) r.fail(w + ".flash_supported", flash.dump(), "expected true or false");
  e.flash_supported = flash.get<bool>();
  e.attention_forward_fraction = r.constant_number(a, w, "forward_fraction", 0, 1, true);
  e.attention_backward_fraction = r.constant_number(a, w, "backward_fraction", 0, 1, true);
  e.attention_backward_work_ratio = r.constant_number(a, w, "backward_work_ratio", 1, 10);
  e.attention_block_q = r.integer(r.constant(a, w, "block_q"), w + ".block_q", 16, 512);
  e.attention_block_kv = r.integer(r.constant(a, w, "block_kv"), w + ".block_kv", 16, 512);
  e.attention_head_dim_overhead = r.constant_number(a, w, "head_dim_overhead", 0, 1e4);
  e.attention_kv_overhead = r.constant_number(a, w, "kv_overhead", 0, 1e6);
  e.attention_softmax_efficiency = r.constant_number(a, w, "softmax_efficiency", 0, 1, true);
  e.attention_dropout_forward = r.constant_number(a, w, "dropout_forward_factor", 0, 1, true);
  e.attention_dropout_backward = r.constant_number(a, w, "dropout_backward_factor", 0, 1, true);
}

void read_memory(const Reader& r, const json& m, GpuEfficiency& e) {
  const std::string w = "memory";
  r.only(m, w, {"copy_fraction", "ops"});
  e.copy_fraction = r.constant_number(m, w, "copy_fraction", 0, 1, true);
  const json& ops = r.constant(m, w, "ops");
  const std::string f = w + ".ops.value";
  std::set<std::string> expected;
  for (int i = 0; i < kOpKindCount; ++i) {
    const auto kind = static_cast<OpKind>(i);
    if (is_compute_kind(kind) && kind != OpKind::Gemm && kind != OpKind::GemmGradInput && kind != OpKind::GemmGradWeight)
      expected.insert(op_kind_name(kind));
  }
  r.only(ops, f, expected);
  for (const std::string& name : expected) {
    const std::string of = f + "." + name;
    const json& op = r.member(ops, f, name);
    r.only(op, of, {"efficiency", "launches"});
    MemoryOpModel model;
    model.efficiency = r.number(r.member(op, of, "efficiency"), of + ".efficiency", 0, 1, true);
    model.launches = static_cast<int>(r.integer(r.member(op, of, "launches"), of + ".launches", 0, 100));
    e.ops[static_cast<size_t>(*op_kind_from_name(name))] = model;
  }
}

void read_communication(const Reader& r, const json& c, GpuEfficiency& e) {
  const std::string w = "communication";
  r.only(c, w, {"nvlink_efficiency", "nic_efficiency", "collective_base_latency_us", "nccl_sm_fraction"});
  e.nvlink_efficiency = r.constant_number(c, w, "nvlink_efficiency", 0, 1, true);
  e.nic_efficiency = r.constant_number(c, w, "nic_efficiency", 0, 1, true);
  e.collective_base_latency_s = r.constant_number(c, w, "collective_base_latency_us", 0, 1e4) * 1e-6;
  e.nccl_sm_fraction = r.constant_number(c, w, "nccl_sm_fraction", 0, 0.9);
}

}  // namespace

// The program's own spelling of op kinds (program/program.h), so profiles and data files use the
// names that op traces print.
const char* op_kind_name(OpKind kind) { return to_string(kind); }

std::optional<OpKind> op_kind_from_name(const std::string& name) {
  const std::string l = lower(name);
  for (int i = 0; i < kOpKindCount; ++i)
    if (lower(op_kind_name(static_cast<OpKind>(i))) == l) return static_cast<OpKind>(i);
  return std::nullopt;
}

bool is_compute_kind(OpKind kind) { return static_cast<int>(kind) <= static_cast<int>(OpKind::OptimizerStep); }

GpuEfficiency load_gpu_efficiency_file(const std::string& path) {
  const json doc = read_json_file(path);
  const Reader r(path);
  r.only(doc, "", {"gpu", "source", "gemm", "attention", "memory", "launch_overhead_us", "communication"});
  GpuEfficiency e;
  e.file = path;
  const json& gpu = r.member(doc, "", "gpu");
  if (!gpu.is_string() || gpu.get<std::string>().empty()) r.fail("gpu", gpu.dump(), "expected the GPU name");
  e.gpu = gpu.get<std::string>();
  read_gemm(r, r.member(doc, "", "gemm"), e);
  read_attention(r, r.member(doc, "", "attention"), e);
  read_memory(r, r.member(doc, "", "memory"), e);
  e.launch_overhead_s = r.number(r.constant(doc, "", "launch_overhead_us"), "launch_overhead_us", 0, 1000) * 1e-6;
  read_communication(r, r.member(doc, "", "communication"), e);
  return e;
}

GpuEfficiency load_gpu_efficiency(const std::string& gpu_name) {
  const fs::path dir = fs::path(data_dir()) / "clusters" / "gpu_models";
  const fs::path own = dir / (gpu_name + ".json");
  if (!gpu_name.empty() && fs::exists(own)) {
    GpuEfficiency e = load_gpu_efficiency_file(own.string());
    if (e.gpu != gpu_name)
      throw UserError(own.string() + ": " + field_message("gpu", "\"" + e.gpu + "\"", "the file describes another GPU than its name (" + gpu_name + ")"));
    return e;
  }
  GpuEfficiency e = load_gpu_efficiency_file((dir / "generic.json").string());
  e.generic = true;
  e.gpu = gpu_name;
  return e;
}

void ComputeModel::load_profile(const std::string& path) {
  const json doc = read_json_file(path);
  const Reader r(path);
  const json* entries = &doc;
  if (doc.is_object()) {
    r.only(doc, "", {"gpu", "entries", "source"});
    if (doc.contains("gpu") && doc["gpu"] != gpu_.name)
      r.fail("gpu", doc["gpu"].dump(), "the profile was measured on another GPU than " + gpu_.name);
    entries = &r.member(doc, "", "entries");
  }
  if (!entries->is_array()) r.fail("entries", entries->dump().substr(0, 80), "expected a list of measured ops");
  std::vector<ProfileEntry> out;
  for (size_t i = 0; i < entries->size(); ++i) {
    const json& j = (*entries)[i];
    const std::string f = "entries[" + std::to_string(i) + "]";
    r.only(j, f, {"op", "m", "n", "k", "batch", "dtype", "seconds", "bytes"});
    ProfileEntry e;
    const json& op = r.member(j, f, "op");
    const std::optional<OpKind> kind = op.is_string() ? op_kind_from_name(op.get<std::string>()) : std::nullopt;
    if (!kind || !is_compute_kind(*kind)) r.fail(f + ".op", op.dump(), "expected a compute OpKind name such as Gemm or Norm");
    e.op = *kind;
    e.m = r.integer(r.member(j, f, "m"), f + ".m", 0, int64_t{1} << 40);
    e.n = r.integer(r.member(j, f, "n"), f + ".n", 0, int64_t{1} << 40);
    e.k = r.integer(r.member(j, f, "k"), f + ".k", 0, int64_t{1} << 40);
    e.batch = j.contains("batch") ? r.integer(j["batch"], f + ".batch", 1, int64_t{1} << 40) : 1;
    const json& dt = r.member(j, f, "dtype");
    static const std::set<std::string> dtypes = {"fp32", "fp16", "bf16", "fp8"};
    if (!dt.is_string() || !dtypes.count(dt.get<std::string>())) r.fail(f + ".dtype", dt.dump(), "expected " + joined(dtypes));
    e.dtype = dt.get<std::string>();
    e.seconds = r.number(r.member(j, f, "seconds"), f + ".seconds", 0, 1e6, true);
    e.bytes = j.contains("bytes") ? r.number(j["bytes"], f + ".bytes", 0, 1e18) : 0;
    out.push_back(e);
  }
  profile_ = std::move(out);
  profile_file_ = path;
}

std::optional<double> ComputeModel::profiled_time(const Instruction& ins) const {
  const std::string dtype = dtype_name(ins);
  const int64_t batch = std::max<int64_t>(ins.batch, 1);
  auto log_gap = [](int64_t a, int64_t b) {
    return std::abs(std::log((static_cast<double>(a) + 1.0) / (static_cast<double>(b) + 1.0)));
  };
  const ProfileEntry* nearest = nullptr;
  bool nearest_same_dtype = false;
  double nearest_distance = std::numeric_limits<double>::infinity();
  for (const ProfileEntry& e : profile_) {
    if (e.op != ins.kind) continue;
    const bool same_dtype = e.dtype == dtype;
    if (same_dtype && e.m == ins.m && e.n == ins.n && e.k == ins.k && e.batch == batch) return e.seconds;
    const double d = log_gap(e.m, ins.m) + log_gap(e.n, ins.n) + log_gap(e.k, ins.k) + log_gap(e.batch, batch);
    const bool better = nearest == nullptr || (same_dtype && !nearest_same_dtype) ||
                        (same_dtype == nearest_same_dtype && d < nearest_distance);
    if (better) {
      nearest = &e;
      nearest_same_dtype = same_dtype;
      nearest_distance = d;
    }
  }
  if (nearest == nullptr) return std::nullopt;
  Instruction probe = ins;
  probe.m = nearest->m;
  probe.n = nearest->n;
  probe.k = nearest->k;
  probe.batch = nearest->batch;
  probe.bytes = nearest->bytes;
  probe.flops = 0;
  probe.dtype = nearest->dtype == "fp32" ? DType::FP32 : nearest->dtype == "fp16" ? DType::FP16 : DType::BF16;
  const double model_at_entry = analytical_time(probe);
  return analytical_time(ins) * (nearest->seconds / model_at_entry);
}

}  // namespace tandem::sim
