// Software stacks: reading, parameter access, the note reports print. Format in stack.h.
#include "backends/sim/stack.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "backends/sim/data_reader.h"
#include "core/job_loader.h"

namespace tandem::sim {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fmt(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// Reads the entries of one stack file; collects its parameters on the way.
class StackReader {
 public:
  StackReader(const std::string& file, std::vector<StackParameter>& params) : r_(file), params_(params) {}
  const DataReader& r() const { return r_; }

  // A structure entry {"value", "derivation"}: returns the value.
  const json& structure(const json& section, const std::string& where, const std::string& key) const {
    const std::string field = dotted(where, key);
    const json& c = r_.member(section, where, key);
    r_.only(c, field, {"value", "derivation"});
    const json& d = r_.member(c, field, "derivation");
    if (!d.is_string() || d.get<std::string>().empty())
      r_.fail(field + ".derivation", d.dump(), "every structure entry needs a non-empty derivation string");
    return r_.member(c, field, "value");
  }

  // A parameter {"value", "meaning", "bounds", "prior", "fitted_by"?}, checked against [lo, hi]
  // (what the model accepts) and its own bounds; recorded in the stack's parameter list.
  double parameter(const json& section, const std::string& where, const std::string& key, double lo, double hi,
                   bool lo_open = false) const {
    const std::string field = dotted(where, key);
    const json& c = r_.member(section, where, key);
    r_.only(c, field, {"value", "meaning", "bounds", "prior", "fitted_by"});
    StackParameter p;
    p.name = field;
    p.meaning = r_.text(c, field, "meaning");
    const json& b = r_.member(c, field, "bounds");
    if (!b.is_array() || b.size() != 2) r_.fail(field + ".bounds", b.dump(), "expected [lower, upper]");
    p.lower = r_.number(b[0], field + ".bounds[0]", lo, hi);
    p.upper = r_.number(b[1], field + ".bounds[1]", lo, hi);
    if (p.upper < p.lower) r_.fail(field + ".bounds", b.dump(), "upper bound below lower bound");
    const json& prior = r_.member(c, field, "prior");
    r_.only(prior, field + ".prior", {"value", "source"});
    p.prior = r_.number(r_.member(prior, field + ".prior", "value"), field + ".prior.value", p.lower, p.upper);
    p.prior_source = r_.text(prior, field + ".prior", "source");
    p.value = r_.number(r_.member(c, field, "value"), field + ".value", std::max(lo, p.lower), std::min(hi, p.upper),
                        lo_open && p.lower <= lo);
    if (c.contains("fitted_by")) {
      r_.only(c["fitted_by"], field + ".fitted_by", {"command", "summary"});
      p.fitted_command = r_.text(c["fitted_by"], field + ".fitted_by", "command");
    }
    params_.push_back(p);
    return p.value;
  }

 private:
  static std::string dotted(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }
  DataReader r_;
  std::vector<StackParameter>& params_;
};

void read_gemm(const StackReader& s, const json& g, GpuEfficiency& e) {
  const DataReader& r = s.r();
  const std::string w = "gemm";
  r.only(g, w, {"fraction_bf16", "fraction_fp8", "fraction_fp32", "tiles", "tile_k", "k_overhead", "max_split_k",
                "fp8_cast_bytes_per_element"});
  e.gemm_fraction_half = s.parameter(g, w, "fraction_bf16", 0, 1, true);
  e.gemm_fraction_fp8 = s.parameter(g, w, "fraction_fp8", 0, 1);
  e.gemm_fraction_fp32 = s.parameter(g, w, "fraction_fp32", 0, 1, true);
  const json& tiles = s.structure(g, w, "tiles");
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
  e.tile_k = r.integer(s.structure(g, w, "tile_k"), w + ".tile_k", 8, 1024);
  e.k_overhead = s.parameter(g, w, "k_overhead", 0, 1e5);
  e.max_split_k = r.integer(s.structure(g, w, "max_split_k"), w + ".max_split_k", 1, 64);
  e.fp8_cast_bytes_per_element = s.parameter(g, w, "fp8_cast_bytes_per_element", 0, 64);
}

void read_attention(const StackReader& s, const json& a, GpuEfficiency& e) {
  const DataReader& r = s.r();
  const std::string w = "attention";
  r.only(a, w, {"flash_supported", "forward_fraction", "backward_fraction", "backward_work_ratio", "block_q",
                "block_kv", "head_dim_overhead", "kv_overhead", "softmax_efficiency", "dropout_forward_factor",
                "dropout_backward_factor"});
  const json& flash = s.structure(a, w, "flash_supported");
  if (!flash.is_boolean()) r.fail(w + ".flash_supported", flash.dump(), "expected true or false");
  e.flash_supported = flash.get<bool>();
  e.attention_forward_fraction = s.parameter(a, w, "forward_fraction", 0, 1, true);
  e.attention_backward_fraction = s.parameter(a, w, "backward_fraction", 0, 1, true);
  e.attention_backward_work_ratio = s.parameter(a, w, "backward_work_ratio", 1, 10);
  e.attention_block_q = r.integer(s.structure(a, w, "block_q"), w + ".block_q", 16, 512);
  e.attention_block_kv = r.integer(s.structure(a, w, "block_kv"), w + ".block_kv", 16, 512);
  e.attention_head_dim_overhead = s.parameter(a, w, "head_dim_overhead", 0, 1e4);
  e.attention_kv_overhead = s.parameter(a, w, "kv_overhead", 0, 1e6);
  e.attention_softmax_efficiency = s.parameter(a, w, "softmax_efficiency", 0, 1, true);
  e.attention_dropout_forward = s.parameter(a, w, "dropout_forward_factor", 0, 1, true);
  e.attention_dropout_backward = s.parameter(a, w, "dropout_backward_factor", 0, 1, true);
}

// Optional: a stack without "moe" times expert GEMMs as dense GEMMs and adds no MoE overhead.
void read_moe(const StackReader& s, const json& m, GpuEfficiency& e) {
  const std::string w = "moe";
  s.r().only(m, w, {"expert_gemm_efficiency", "forward_overhead_us"});
  e.moe_expert_gemm_efficiency = s.parameter(m, w, "expert_gemm_efficiency", 0.05, 1, true);
  e.moe_forward_overhead_s = s.parameter(m, w, "forward_overhead_us", 0, 1e5) * 1e-6;
}

void read_memory(const StackReader& s, const json& m, GpuEfficiency& e) {
  const DataReader& r = s.r();
  const std::string w = "memory";
  r.only(m, w, {"copy_fraction", "ops"});
  e.copy_fraction = s.parameter(m, w, "copy_fraction", 0, 1, true);
  const json& ops = s.structure(m, w, "ops");
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

void read_communication(const StackReader& s, const json& c, GpuEfficiency& e) {
  const std::string w = "communication";
  s.r().only(c, w, {"nvlink_efficiency", "nic_efficiency", "collective_base_latency_us", "nccl_sm_fraction"});
  e.nvlink_efficiency = s.parameter(c, w, "nvlink_efficiency", 0, 1, true);
  e.nic_efficiency = s.parameter(c, w, "nic_efficiency", 0, 1, true);
  e.collective_base_latency_s = s.parameter(c, w, "collective_base_latency_us", 0, 1e4) * 1e-6;
  e.nccl_sm_fraction = s.parameter(c, w, "nccl_sm_fraction", 0, 0.9);
}

std::optional<StackFitRecord> read_fit(const DataReader& r, const json& doc) {
  if (!doc.contains("fit")) return std::nullopt;
  const json& f = doc["fit"];
  if (!f.is_object()) r.fail("fit", f.dump().substr(0, 80), "expected an object");
  StackFitRecord rec;
  rec.command = r.text(f, "fit", "command");
  rec.rows = static_cast<int>(r.integer(r.member(f, "fit", "rows"), "fit.rows", 1, 1 << 20));
  rec.training_mape = r.number(r.member(f, "fit", "training_mape"), "fit.training_mape", 0, 100);
  rec.cv_mape = r.number(r.member(f, "fit", "cv_mape"), "fit.cv_mape", 0, 100);
  rec.cv_kind = r.text(f, "fit", "cv_kind");
  rec.runs = r.text(f, "fit", "runs");
  return rec;
}

// The JSON object of a dotted parameter name inside the document.
json& parameter_node(json& doc, const std::string& name) {
  json* node = &doc;
  std::string rest = name;
  for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1))
    node = &(*node)[rest.substr(0, dot)];
  return (*node)[rest];
}

bool uses_attention_parameter(const std::string& name, const Job& job, const GpuEfficiency& e) {
  const bool flash = uses_flash_attention(job.training.attention_backend) && e.flash_supported;
  if (name == "attention.softmax_efficiency") return !flash;
  if (name.find("dropout") != std::string::npos) return job.training.attention_dropout > 0;
  return flash;
}

}  // namespace

Stack parse_stack(const json& doc, const std::string& file) {
  Stack s;
  s.file = file;
  s.doc = doc;
  const DataReader r(file);
  r.only(doc, "", {"stack", "gpu", "description", "source", "tensor_clock_factor", "gemm", "attention", "memory",
                   "launch_overhead_us", "communication", "moe", "fit", "earlier_fits"});
  s.name = r.text(doc, "", "stack");
  s.gpu = r.text(doc, "", "gpu");
  const StackReader sr(file, s.parameters);
  GpuEfficiency& e = s.efficiency;
  e.file = file;
  e.stack = s.name;
  e.gpu = s.gpu;
  e.tensor_clock_factor = sr.parameter(doc, "", "tensor_clock_factor", 0.1, 2.0);
  read_gemm(sr, r.member(doc, "", "gemm"), e);
  read_attention(sr, r.member(doc, "", "attention"), e);
  read_memory(sr, r.member(doc, "", "memory"), e);
  e.launch_overhead_s = sr.parameter(doc, "", "launch_overhead_us", 0, 1000) * 1e-6;
  read_communication(sr, r.member(doc, "", "communication"), e);
  if (doc.contains("moe")) read_moe(sr, r.member(doc, "", "moe"), e);
  s.fit = read_fit(r, doc);
  return s;
}

Stack load_stack(const std::string& name_or_file) {
  const bool is_file = name_or_file.find('/') != std::string::npos ||
                       (name_or_file.size() > 5 && name_or_file.substr(name_or_file.size() - 5) == ".json");
  const fs::path dir = fs::path(data_dir()) / "clusters" / "stacks";
  const fs::path path = is_file ? fs::path(name_or_file) : dir / (name_or_file + ".json");
  if (!fs::exists(path)) {
    std::set<std::string> names;
    if (fs::exists(dir))
      for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().extension() == ".json") names.insert(entry.path().stem().string());
    const std::string known = DataReader::joined(names);
    throw UserError(field_message("stack", name_or_file, "no such stack file (stacks: " + known + ")"));
  }
  return parse_stack(read_json_file(path.string()), path.string());
}

std::string default_stack_name(const ClusterSpec& cluster) {
  if (!cluster.stack.empty()) return cluster.stack;
  const fs::path own = fs::path(data_dir()) / "clusters" / "gpu_models" / (cluster.gpu.name + ".json");
  if (cluster.gpu.name.empty() || !fs::exists(own)) return "generic";
  const json doc = read_json_file(own.string());
  const DataReader r(own.string());
  r.only(doc, "", {"gpu", "source", "default_stack"});
  if (doc.value("gpu", std::string()) != cluster.gpu.name)
    r.fail("gpu", doc.value("gpu", json()).dump(), "the file describes another GPU than its name (" + cluster.gpu.name + ")");
  return r.text(doc, "", "default_stack");
}

Stack stack_for_gpu(const std::string& gpu_name) {
  ClusterSpec c;
  c.gpu.name = gpu_name;
  const std::string name = default_stack_name(c);
  Stack s = load_stack(name);
  if (name == "generic") {
    s.efficiency.generic = true;
    s.efficiency.gpu = gpu_name;
  }
  return s;
}

Stack stack_for_cluster(const ClusterSpec& cluster) {
  return cluster.stack.empty() ? stack_for_gpu(cluster.gpu.name) : load_stack(cluster.stack);
}

Stack stack_for_job(const Job& job) {
  if (job.stack.empty() && job.cluster.stack.empty()) return stack_for_gpu(job.cluster.gpu.name);
  Stack s = load_stack(job.stack.empty() ? job.cluster.stack : job.stack);
  if (s.gpu != job.cluster.gpu.name && s.gpu != "generic")
    throw UserError(field_message("stack", s.name, "made for " + s.gpu + ", but the cluster's GPU is " +
                                                       job.cluster.gpu.name));
  return s;
}

const StackParameter* find_parameter(const Stack& stack, const std::string& name) {
  for (const StackParameter& p : stack.parameters)
    if (p.name == name) return &p;
  return nullptr;
}

std::string parameter_names(const Stack& stack) {
  std::string s;
  for (const StackParameter& p : stack.parameters) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

void set_parameter(Stack& stack, const std::string& name, double value) {
  const StackParameter* p = find_parameter(stack, name);
  if (p == nullptr)
    throw UserError(field_message("parameter", name, "not a parameter of stack " + stack.name + " (parameters: " +
                                                         parameter_names(stack) + ")"));
  if (!(value >= p->lower && value <= p->upper))
    throw UserError(field_message(name, fmt(value), "outside its bounds [" + fmt(p->lower) + ", " + fmt(p->upper) + "]"));
  json doc = stack.doc;
  parameter_node(doc, name)["value"] = value;
  const bool generic = stack.efficiency.generic;
  const std::string gpu = stack.efficiency.gpu;
  stack = parse_stack(doc, stack.file);
  stack.efficiency.generic = generic;
  stack.efficiency.gpu = gpu;
}

std::vector<std::string> fitted_parameters_used(const Stack& stack, const Job& job) {
  const bool fp8 = job.training.fp8_format != Fp8Format::None;
  const bool fp32 = job.training.params_dtype == DType::FP32;
  std::vector<std::string> out;
  for (const StackParameter& p : stack.parameters) {
    if (p.fitted_command.empty()) continue;
    const std::string& n = p.name;
    bool used = true;
    if (n == "tensor_clock_factor") used = true;
    else if (n == "gemm.fraction_fp8" || n == "gemm.fp8_cast_bytes_per_element") used = fp8;
    else if (n == "gemm.fraction_bf16") used = !fp32;
    else if (n == "gemm.fraction_fp32") used = fp32;
    else if (n.rfind("attention.", 0) == 0) used = uses_attention_parameter(n, job, stack.efficiency);
    if (used) out.push_back(n);
  }
  return out;
}

std::string stack_note(const Stack& stack, const Job& job) {
  std::string note = "stack " + stack.name + " (" + stack.file + ")";
  if (stack.efficiency.generic) note += ", generic estimates: no stack for " + job.cluster.gpu.name;
  const std::vector<std::string> used = fitted_parameters_used(stack, job);
  if (used.empty() || !stack.fit) return note + ": no fitted parameter";
  std::string names;
  for (const auto& n : used) names += (names.empty() ? "" : ", ") + n;
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << ": figures depend on fitted " << names << "; the stack fits its " << stack.fit->rows << " runs ("
     << stack.fit->runs << ") with " << 100 * stack.fit->training_mape << "% mean error, " << 100 * stack.fit->cv_mape
     << "% " << stack.fit->cv_kind << " cross-validated";
  return note + os.str();
}

}  // namespace tandem::sim
