// Reading the compute model's data: the efficiencies of a software stack (stack.h, read in
// stack.cpp) and measured per-op profiles. Formats are described in compute_model.h. Every bad
// value throws UserError naming the file, the field and the value.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "backends/sim/data_reader.h"
#include "backends/sim/stack.h"
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
  return load_stack(path.find('/') == std::string::npos ? "./" + path : path).efficiency;
}

GpuEfficiency load_gpu_efficiency(const std::string& gpu_name) { return stack_for_gpu(gpu_name).efficiency; }

void ComputeModel::load_profile(const std::string& path) {
  const json doc = read_json_file(path);
  const DataReader r(path);
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
    if (!dt.is_string() || !dtypes.count(dt.get<std::string>())) r.fail(f + ".dtype", dt.dump(), "expected " + DataReader::joined(dtypes));
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
