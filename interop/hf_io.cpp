// Export to and import from Hugging Face directories (hf_io.h).
#include "interop/hf_io.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_loader.h"
#include "interop/hf_names.h"

namespace tandem::interop {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kIndex = "model.safetensors.index.json";

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw UserError("--out: cannot write " + path.string());
}

std::string tensor_shape_text(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// The model a checkpoint's job describes (model and training sections only: no cluster lookup).
Job checkpoint_job(const exec::CheckpointContents& ck, const std::string& source) {
  if (ck.job_json.empty())
    throw UserError(source + ": metadata.json holds no job (saved by an older tandem): the model is unknown");
  const json doc = json::parse(ck.job_json);
  Job job;
  json part = json::object();
  for (const char* key : {"model", "training"})
    if (doc.contains(key)) part[key] = doc[key];
  apply_job_json(job, part, source + "/metadata.json job");
  return job;
}

// Every tensor the model needs is there with its shape, and nothing else is.
void check_checkpoint_tensors(const HfArch& arch, const exec::CheckpointContents& ck, const std::string& source) {
  std::set<std::string> expected;
  for (const TandemShape& s : tandem_shapes(arch)) {
    expected.insert(s.name);
    const auto it = ck.tensors.find(s.name);
    if (it == ck.tensors.end())
      throw UserError(source + ": tensor " + s.name + " is missing (the " + hf_class_name(arch.family) +
                      " model of its job needs it)");
    if (it->second.rows != s.rows || it->second.cols != s.cols)
      throw UserError(source + ": tensor " + s.name + " is " + tensor_shape_text(it->second.rows, it->second.cols) +
                      ", the model of its job (hidden_size " + std::to_string(arch.hidden) + ") needs " +
                      tensor_shape_text(s.rows, s.cols));
  }
  for (const auto& [name, t] : ck.tensors)
    if (!expected.count(name))
      throw UserError(source + ": tensor " + name + " is not part of the " + hf_class_name(arch.family) + " model of its job");
}

// Hugging Face's sharding: tensors in model order, a new shard when the next would pass the limit.
std::vector<std::vector<const HfPiece*>> plan_shards(const std::vector<HfPiece>& pieces, int64_t esize, int64_t limit) {
  std::vector<std::vector<const HfPiece*>> shards(1);
  int64_t size = 0;
  for (const HfPiece& p : pieces) {
    int64_t bytes = esize;
    for (int64_t d : p.hf_shape) bytes *= d;
    if (!shards.back().empty() && size + bytes > limit) {
      shards.emplace_back();
      size = 0;
    }
    shards.back().push_back(&p);
    size += bytes;
  }
  return shards;
}

std::string shard_name(size_t k, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, n);
  return buf;
}

// An HF tensor as read, with the file it came from.
struct Loaded {
  std::string file;
  StTensor tensor;
  bool used = false;
};

// Buffers some HF checkpoints carry that are not weights (causal masks, rotary frequencies).
bool is_buffer(const std::string& name) {
  for (const char* suffix : {".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) return true;
  }
  return false;
}

// Every safetensors file of `dir` (through the index when there is one), by tensor name.
std::map<std::string, Loaded> read_hf_tensors(const fs::path& dir, HfFamily family, int64_t* bytes_read) {
  std::map<std::string, std::string> weight_map;   // tensor -> file, empty without an index
  std::vector<std::string> files;
  if (fs::exists(dir / kIndex)) {
    const json index = read_json_file((dir / kIndex).string());
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw UserError((dir / kIndex).string() + ": weight_map is missing or not an object");
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) throw UserError((dir / kIndex).string() + ": weight_map." + name + " = " + file.dump() + ": expected a file name");
      weight_map[name] = file.get<std::string>();
      if (std::find(files.begin(), files.end(), weight_map[name]) == files.end()) files.push_back(weight_map[name]);
    }
  } else if (fs::exists(dir / "model.safetensors")) {
    files.push_back("model.safetensors");
  } else {
    throw UserError(dir.string() + ": neither model.safetensors nor " + kIndex + " is there");
  }
  std::map<std::string, Loaded> out;
  for (const std::string& file : files) {
    const fs::path path = dir / file;
    if (file.find('/') != std::string::npos || !fs::is_regular_file(path))
      throw UserError(path.string() + ": missing (named by " + kIndex + ")");
    *bytes_read += static_cast<int64_t>(fs::file_size(path));
    for (auto& [raw, t] : read_safetensors(path.string())) {
      if (!weight_map.empty() && weight_map.count(raw) && weight_map[raw] != file)
        throw UserError(path.string() + ": tensor " + raw + " is here, " + kIndex + " puts it in " + weight_map[raw]);
      // The original GPT-2 checkpoints were saved from GPT2Model: names without "transformer.".
      const std::string name = family == HfFamily::Gpt2 && raw.rfind("transformer.", 0) != 0 && raw != "lm_head.weight"
                                   ? "transformer." + raw : raw;
      if (is_buffer(name)) continue;
      if (out.count(name)) throw UserError(path.string() + ": tensor " + name + " is also in " + out[name].file);
      out[name] = Loaded{path.string(), std::move(t), false};
    }
  }
  for (const auto& [name, file] : weight_map)
    if (!out.count(name) && !out.count("transformer." + name) && !is_buffer(name))
      throw UserError((dir / file).string() + ": tensor " + name + " is missing (" + kIndex + " puts it there)");
  return out;
}

Job job_for(const HfArch& arch, const std::string& config_path) {
  JobRequest request;
  request.megatron_flags = megatron_flags(arch);
  request.gpus = 1;
  try {
    return load_job(request);
  } catch (const UserError& e) {
    throw UserError(config_path + ": " + e.what());
  }
}

// Writes the HF files of `ck` into `tmp`: shards, config.json, the index when sharded.
void write_hf_files(const fs::path& tmp, const exec::CheckpointContents& ck, const ExportOptions& options,
                    ExportReport& report) {
  const std::vector<HfPiece> pieces = hf_pieces(report.arch);
  const auto shards = plan_shards(pieces, st_dtype_bytes(options.dtype), options.max_shard_bytes);
  json weight_map = json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    std::vector<std::vector<float>> values;
    values.reserve(shards[k].size());
    std::vector<StTensorRef> refs;
    for (const HfPiece* p : shards[k]) {
      values.push_back(piece_from_tandem(*p, ck.tensors.at(p->tandem_name)));
      report.bytes += static_cast<int64_t>(values.back().size()) * st_dtype_bytes(options.dtype);
      weight_map[p->hf_name] = shard_name(k, shards.size());
    }
    for (size_t i = 0; i < shards[k].size(); ++i) refs.push_back({shards[k][i]->hf_name, shards[k][i]->hf_shape, &values[i]});
    write_file(tmp / shard_name(k, shards.size()), safetensors_bytes(refs, options.dtype, {{"format", "pt"}}));
  }
  report.tensors = static_cast<int64_t>(pieces.size());
  report.files = static_cast<int64_t>(shards.size());
  const std::string dtype = options.dtype == StDtype::F32 ? "float32" : "bfloat16";
  write_file(tmp / "config.json", config_json(report.arch, dtype).dump(2) + "\n");
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", report.bytes}}}, {"weight_map", weight_map}};
    write_file(tmp / kIndex, index.dump(2) + "\n");
  }
}

}  // namespace

int64_t parse_size(const std::string& text, const std::string& field) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw_field_error(field, text, "expected a size such as 5GB, 500MB, 2GiB or a byte count");
  }
  std::string unit = text.substr(used);
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::toupper(c); });
  const std::map<std::string, double> units = {{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
                                               {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0},
                                               {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  const auto it = units.find(unit);
  if (it == units.end() || !(value > 0) || value * it->second > 9e18)
    throw_field_error(field, text, "expected a positive size such as 5GB, 500MB, 2GiB or a byte count");
  return std::max<int64_t>(1, static_cast<int64_t>(value * it->second));
}

ExportReport export_hf(const std::string& checkpoint_dir, const std::string& out_dir, const ExportOptions& options) {
  TANDEM_CHECK(options.dtype == StDtype::F32 || options.dtype == StDtype::BF16);
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();   // "DIR/" -> "DIR": DIR.tmp is its sibling
  const fs::path tmp = out.string() + ".tmp";
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    throw UserError("--out = " + out_dir + ": exists; export writes a new directory");
  const exec::CheckpointContents ck = exec::read_checkpoint(checkpoint_dir, options.iteration);
  char iter[32];
  std::snprintf(iter, sizeof iter, "iter_%07lld", static_cast<long long>(ck.iteration));
  const std::string source = (fs::path(checkpoint_dir) / iter).string();
  const Job job = checkpoint_job(ck, source);
  const auto word = ck.tensors.find("embedding.word");
  if (word == ck.tensors.end()) throw UserError(source + ": tensor embedding.word is missing");
  ExportReport report;
  report.iteration = ck.iteration;
  report.arch = arch_from_job(job, word->second.rows, source);
  check_checkpoint_tensors(report.arch, ck, source);

  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) throw UserError("--out = " + out_dir + ": cannot create " + tmp.string());

  try {
    write_hf_files(tmp, ck, options, report);
  } catch (...) {
    fs::remove_all(tmp, ec);   // nothing half-written stays behind
    throw;
  }
  fs::remove(out, ec);   // an empty directory only (checked above)
  fs::rename(tmp, out, ec);
  if (ec) throw UserError("--out: cannot rename " + tmp.string() + " to " + out_dir + ": " + ec.message());
  return report;
}

HfModel load_hf(const std::string& dir) {
  const fs::path root(dir), config_path = root / "config.json";
  if (!fs::is_regular_file(config_path)) throw UserError("--hf = " + dir + ": " + config_path.string() + " is missing");
  HfModel m;
  m.arch = arch_from_config(read_json_file(config_path.string()), config_path.string());
  m.job = job_for(m.arch, config_path.string());
  m.job_json = job_to_json(m.job).dump();
  std::map<std::string, Loaded> hf = read_hf_tensors(root, m.arch.family, &m.bytes_read);
  if (m.arch.tied && hf.count("lm_head.weight")) hf.erase("lm_head.weight");   // HF ties it to the embedding
  for (const TandemShape& s : tandem_shapes(m.arch)) {
    exec::CheckpointTensor& t = m.tensors[s.name];
    t.rows = s.rows;
    t.cols = s.cols;
    t.value.assign(static_cast<size_t>(s.rows * s.cols), 0.0f);
  }
  for (const HfPiece& p : hf_pieces(m.arch)) {
    const auto it = hf.find(p.hf_name);
    if (it == hf.end())
      throw UserError(dir + ": tensor " + p.hf_name + " is missing (" + hf_class_name(m.arch.family) + " as " +
                      config_path.string() + " describes it needs it)");
    if (it->second.tensor.shape != p.hf_shape)
      throw UserError(it->second.file + ": tensor " + p.hf_name + " has shape " + shape_text(it->second.tensor.shape) +
                      ", " + config_path.string() + " (hidden_size " + std::to_string(m.arch.hidden) + ", vocab_size " +
                      std::to_string(m.arch.vocab) + ") needs " + shape_text(p.hf_shape));
    piece_into_tandem(p, std::move(it->second.tensor.values), m.tensors.at(p.tandem_name));
    it->second.used = true;
  }
  for (const auto& [name, l] : hf)
    if (!l.used)
      throw UserError(l.file + ": tensor " + name + " is not part of " + hf_class_name(m.arch.family) + " as " +
                      config_path.string() + " describes it");
  return m;
}

HfModel import_hf(const std::string& dir, const std::string& save_dir, int64_t iteration) {
  HfModel m = load_hf(dir);
  exec::write_checkpoint(save_dir, iteration, m.job_json, m.tensors);
  return m;
}

}  // namespace tandem::interop
