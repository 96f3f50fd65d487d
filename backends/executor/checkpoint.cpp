// Checkpoints: pieces per rank, atomic save, verified and resharding load (checkpoint.h).
#include "backends/executor/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/executor/init_rng.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

namespace fs = std::filesystem;
constexpr char kMagic[8] = {'T', 'A', 'N', 'D', 'E', 'M', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr const char* kTracker = "latest_checkpointed_iteration.txt";

std::string iter_name(int64_t iteration) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "iter_%07lld", static_cast<long long>(iteration));
  return buf;
}

std::string rank_file(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05lld.bin", static_cast<long long>(rank));
  return buf;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

const char* shard_name(ShardKind k) {
  switch (k) {
    case ShardKind::Replicated: return "replicated";
    case ShardKind::Rows: return "rows";
    case ShardKind::Columns: return "columns";
    case ShardKind::GatedColumns: return "gated-columns";
  }
  return "?";
}

ShardKind shard_kind(const std::string& s, const std::string& file) {
  for (ShardKind k : {ShardKind::Replicated, ShardKind::Rows, ShardKind::Columns, ShardKind::GatedColumns})
    if (s == shard_name(k)) return k;
  throw UserError("checkpoint file " + file + ": unknown shard kind '" + s + "'");
}

// Writes `bytes` to `path` and fsyncs it; UserError naming the path on failure.
void write_synced(const fs::path& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw UserError("--save: cannot create " + path.string() + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      ::close(fd);
      throw UserError("--save: write to " + path.string() + " failed: " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw UserError("--save: fsync of " + path.string() + " failed");
}

void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw UserError("--load: cannot open checkpoint file " + path.string());
  std::string bytes(static_cast<size_t>(in.tellg()), '\0');   // one buffer, no stream copy
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw UserError("--load: cannot read checkpoint file " + path.string());
  return bytes;
}

template <typename T>
void append(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// One piece: its header (length-prefixed JSON), then values, exp_avg and exp_avg_sq (fp32 each).
void append_piece(std::string& body, const nlohmann::json& header, const std::vector<float>& value,
                  const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq) {
  const std::string h = header.dump();
  append(body, static_cast<uint32_t>(h.size()));
  body += h;
  for (const std::vector<float>* v : {&value, &exp_avg, &exp_avg_sq})
    body.append(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(float));
}

// The pieces this rank owns: [values | exp_avg | exp_avg_sq] of each optimizer segment.
std::string serialize(ParamStore& params, Device& device) {
  std::string out(kMagic, sizeof kMagic);
  append(out, kVersion);
  std::string body;
  uint64_t count = 0;
  for (auto& chunk : params.buckets())
    for (ParamBucket& b : chunk) {
      if (!params.distributed_optimizer() && b.dp_rank != 0) continue;
      for (OptimSegment& s : b.segments) {
        if (!s.in_norm) continue;   // a copy: TP-replicated on TP rank > 0, tied embedding, mirror
        const Param& p = *s.param;
        const ShardRule r = p.rule();
        const nlohmann::json header = {{"name", p.name}, {"rows", r.rows}, {"cols", r.cols},
                                       {"shard", shard_name(r.kind)}, {"parts", r.parts}, {"part", r.part},
                                       {"expert", p.expert}, {"first_expert", p.first_expert},
                                       {"experts", p.experts}, {"begin", s.begin}, {"end", s.end}};
        append_piece(body, header, device.to_host(p.value.flat().slice(s.begin, {s.end - s.begin})),
                     device.to_host(s.exp_avg), device.to_host(s.exp_avg_sq));
        ++count;
      }
    }
  append(out, count);
  return out + body;
}

// Rank 0's part of a save: metadata.json (files with size and checksum, the job), the rename of
// iter_N.tmp into place and the tracker, each step synced. `lines` holds "rank bytes fnv1a64" per file.
void commit_checkpoint(const fs::path& root, int64_t iteration, int64_t world_size,
                       const std::vector<std::string>& lines, const std::string& job_json,
                       const nlohmann::json& expert_bias = nlohmann::json::object()) {
  const fs::path final_dir = root / iter_name(iteration), tmp = root / (iter_name(iteration) + ".tmp");
  nlohmann::json meta = {{"format", "tandem-checkpoint"}, {"version", kVersion}, {"iteration", iteration},
                         {"world_size", world_size}, {"files", nlohmann::json::array()}};
  if (!job_json.empty()) meta["job"] = nlohmann::json::parse(job_json);
  if (!expert_bias.empty()) meta["expert_bias"] = expert_bias;
  for (const std::string& l : lines) {
    std::istringstream in(l);
    int64_t r = 0, size = 0;
    std::string sum;
    in >> r >> size >> sum;
    meta["files"].push_back({{"name", rank_file(r)}, {"bytes", size}, {"fnv1a64", sum}});
  }
  write_synced(tmp / "metadata.json", meta.dump(2) + "\n");
  sync_directory(tmp);
  // Fault injection for tests: die as a crash would, after the files, before the rename.
  if (const char* k = std::getenv("TANDEM_FAULT_KILL_IN_SAVE"); k != nullptr && std::atoll(k) == iteration)
    std::raise(SIGKILL);
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) throw UserError("--save: cannot rename " + tmp.string() + " into place: " + ec.message());
  sync_directory(root);
  write_synced(root / (std::string(kTracker) + ".tmp"), std::to_string(iteration) + "\n");
  fs::rename(root / (std::string(kTracker) + ".tmp"), root / kTracker, ec);
  if (ec) throw UserError("--save: cannot update " + (root / kTracker).string() + ": " + ec.message());
  sync_directory(root);
}

}  // namespace

void save_checkpoint(const std::string& dir, int64_t iteration, ParamStore& params, Device& device,
                     Communicator& comm, const std::string& job_json, const ExpertBiasMap* expert_bias) {
  const fs::path root(dir), tmp = root / (iter_name(iteration) + ".tmp");
  if (comm.rank() == 0) {
    std::error_code ec;
    fs::create_directories(root, ec);
    fs::remove_all(tmp, ec);
    if (!fs::create_directories(tmp, ec) && !fs::is_directory(tmp))
      throw UserError("--save = " + dir + ": cannot create " + tmp.string());
  }
  comm.barrier();
  const std::string bytes = serialize(params, device);
  write_synced(tmp / rank_file(comm.rank()), bytes);
  const std::string line = std::to_string(comm.rank()) + " " + std::to_string(bytes.size()) + " " +
                           hex(fnv1a64(bytes));
  const std::vector<std::string> lines = comm.gather_to_root(line);
  nlohmann::json my_bias = nlohmann::json::object();
  if (expert_bias != nullptr)
    for (const auto& [layer, values] : *expert_bias) my_bias[std::to_string(layer)] = values;
  const std::vector<std::string> biases = comm.gather_to_root(my_bias.dump());
  if (comm.rank() == 0) {
    nlohmann::json bias = nlohmann::json::object();   // layers held by several ranks hold the same bias
    for (const std::string& b : biases) bias.update(nlohmann::json::parse(b));
    commit_checkpoint(root, iteration, comm.world_size(), lines, job_json, bias);
  }
  comm.barrier();
}

int64_t latest_checkpoint(const std::string& dir) {
  const fs::path tracker = fs::path(dir) / kTracker;
  if (!fs::exists(tracker)) return 0;
  std::ifstream in(tracker);
  int64_t it = 0;
  if (!(in >> it) || it <= 0) throw UserError("--load: " + tracker.string() + " does not hold an iteration number");
  return it;
}

namespace {

struct FullTensor {
  int64_t rows = 1, cols = 1;
  std::vector<float> value, exp_avg, exp_avg_sq;
  std::vector<bool> filled;
};

nlohmann::json read_metadata(const fs::path& dir) {
  const fs::path meta_path = dir / "metadata.json";
  if (!fs::exists(meta_path)) throw UserError("--load: " + meta_path.string() + " is missing (incomplete checkpoint)");
  try {
    return nlohmann::json::parse(read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError("--load: " + meta_path.string() + " is corrupted: " + e.what());
  }
}

// Verifies every file of the checkpoint, then assembles the full tensors named in `wanted`
// (every tensor when `wanted` is null).
std::map<std::string, FullTensor> assemble(const fs::path& dir, const std::map<std::string, ShardRule>* wanted) {
  const nlohmann::json meta = read_metadata(dir);
  std::map<std::string, FullTensor> full;
  for (const auto& f : meta.at("files")) {
    const fs::path path = dir / f.at("name").get<std::string>();
    const std::string bytes = read_file(path);
    if (static_cast<int64_t>(bytes.size()) != f.at("bytes").get<int64_t>())
      throw UserError("--load: checkpoint file " + path.string() + " has " + std::to_string(bytes.size()) +
                      " bytes, metadata.json says " + std::to_string(f.at("bytes").get<int64_t>()) + " (truncated?)");
    if (hex(fnv1a64(bytes)) != f.at("fnv1a64").get<std::string>())
      throw UserError("--load: checkpoint file " + path.string() + " fails its checksum (corrupted); refusing to load it");
    size_t at = sizeof kMagic + sizeof(uint32_t);
    if (bytes.size() < at + sizeof(uint64_t) || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
      throw UserError("--load: " + path.string() + " is not a tandem checkpoint file");
    uint64_t count = 0;
    std::memcpy(&count, bytes.data() + at, sizeof count);
    at += sizeof count;
    for (uint64_t i = 0; i < count; ++i) {
      uint32_t hlen = 0;
      std::memcpy(&hlen, bytes.data() + at, sizeof hlen);
      at += sizeof hlen;
      const nlohmann::json h = nlohmann::json::parse(bytes.substr(at, hlen));
      at += hlen;
      const int64_t begin = h.at("begin"), end = h.at("end"), n = end - begin;
      const float* data = reinterpret_cast<const float*>(bytes.data() + at);
      at += static_cast<size_t>(3 * n) * sizeof(float);
      TANDEM_CHECK(at <= bytes.size());
      const ShardRule rule{h.at("rows"), h.at("cols"), shard_kind(h.at("shard"), path.string()), h.at("parts"), h.at("part")};
      const int64_t block = rule.local_rows() * rule.local_cols();
      const bool expert = h.at("expert").get<bool>();
      const std::string base = h.at("name").get<std::string>();
      const int64_t first_expert = h.at("first_expert").get<int64_t>();
      // Element k of the piece is element begin + k of the rank's tensor: expert (begin + k) / block,
      // offset (begin + k) % block in that expert's shard. One run per expert: name and tensor once.
      for (int64_t k = 0; k < n;) {
        const int64_t e = (begin + k) / block, stop = std::min(n, (e + 1) * block - begin);
        const std::string name = expert ? base + "." + std::to_string(first_expert + e) : base;
        if (wanted != nullptr) {
          const auto want = wanted->find(name);
          if (want == wanted->end()) {
            k = stop;
            continue;
          }
          if (want->second.rows != rule.rows || want->second.cols != rule.cols)
            throw UserError("--load: " + path.string() + ": tensor " + name + " is [" + std::to_string(rule.rows) + ", " +
                            std::to_string(rule.cols) + "] in the checkpoint, this job needs [" +
                            std::to_string(want->second.rows) + ", " + std::to_string(want->second.cols) +
                            "] (a checkpoint of another model)");
        }
        FullTensor& t = full[name];
        if (t.value.empty()) {
          t.rows = rule.rows;
          t.cols = rule.cols;
          const size_t size = static_cast<size_t>(rule.rows * rule.cols);
          t.value.assign(size, 0.0f);
          t.exp_avg.assign(size, 0.0f);
          t.exp_avg_sq.assign(size, 0.0f);
          t.filled.assign(size, false);
        }
        for (; k < stop; ++k) {
          const int64_t rem = (begin + k) % block;
          const size_t j = static_cast<size_t>(rule.full_index(rem / rule.local_cols(), rem % rule.local_cols()));
          t.value[j] = data[k];
          t.exp_avg[j] = data[n + k];
          t.exp_avg_sq[j] = data[2 * n + k];
          t.filled[j] = true;
        }
      }
    }
  }
  return full;
}

}  // namespace

namespace {

// This rank's part of load_checkpoint: no communication.
void load_checkpoint_here(const std::string& dir, int64_t iteration, ParamStore& params, Device& device,
                          ExpertBiasMap* expert_bias) {
  const fs::path path = fs::path(dir) / iter_name(iteration);
  if (!fs::is_directory(path)) throw UserError("--load = " + dir + ": no checkpoint directory " + path.string());
  if (expert_bias != nullptr) {
    expert_bias->clear();
    const nlohmann::json meta = read_metadata(path);
    try {
      if (meta.contains("expert_bias"))
        for (const auto& [layer, values] : meta.at("expert_bias").items())
          (*expert_bias)[static_cast<int32_t>(std::stol(layer))] = values.get<std::vector<float>>();
    } catch (const std::exception& e) {
      throw UserError("--load: " + (path / "metadata.json").string() + ": malformed expert_bias (" + e.what() + ")");
    }
  }
  std::map<std::string, ShardRule> wanted;
  for (auto& p : params.params())
    for (int64_t e = 0; e < p->experts; ++e) wanted[p->full_name(e)] = ShardRule{p->full_rows, p->full_cols};
  const std::map<std::string, FullTensor> full = assemble(path, &wanted);
  for (auto& p : params.params()) {
    std::vector<float> value, m, v;
    for (int64_t e = 0; e < p->experts; ++e) {
      const auto it = full.find(p->full_name(e));
      if (it == full.end() || std::find(it->second.filled.begin(), it->second.filled.end(), false) != it->second.filled.end())
        throw UserError("--load: checkpoint " + path.string() + " lacks (part of) tensor " + p->full_name(e));
      const ShardRule rule = p->rule();
      for (auto [dst, src] : {std::pair{&value, &it->second.value}, {&m, &it->second.exp_avg}, {&v, &it->second.exp_avg_sq}}) {
        const std::vector<float> part = rule.cut(*src);
        dst->insert(dst->end(), part.begin(), part.end());
      }
    }
    device.upload(value, p->value);
    for (auto& chunk : params.buckets())
      for (ParamBucket& b : chunk)
        for (OptimSegment& s : b.segments) {
          if (s.param != p.get()) continue;
          device.upload(std::span<const float>(m).subspan(static_cast<size_t>(s.begin), static_cast<size_t>(s.end - s.begin)), s.exp_avg);
          device.upload(std::span<const float>(v).subspan(static_cast<size_t>(s.begin), static_cast<size_t>(s.end - s.begin)), s.exp_avg_sq);
        }
  }
}

}  // namespace

void load_checkpoint(const std::string& dir, int64_t iteration, ParamStore& params, Device& device,
                     Communicator& comm, ExpertBiasMap* expert_bias) {
  // Every rank reads its part, then the ranks agree: a refused checkpoint (another model, a missing
  // or corrupted file) stops every rank here with one message from the lowest rank that met it.
  std::string error;
  try {
    load_checkpoint_here(dir, iteration, params, device, expert_bias);
  } catch (const UserError& e) {
    error = e.what();
  }
  std::vector<double> failed(static_cast<size_t>(comm.world_size()), 0.0);
  failed[static_cast<size_t>(comm.rank())] = error.empty() ? 0.0 : 1.0;
  const std::vector<double> all = comm.world_sum(failed);
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r] == 0.0) continue;
    if (!error.empty()) throw AgreedUserError(error, static_cast<int64_t>(r) == comm.rank());
    throw AgreedUserError("--load: refused on rank " + std::to_string(r), false);
  }
  comm.barrier();
}

CheckpointContents read_checkpoint(const std::string& dir, int64_t iteration) {
  CheckpointContents out;
  out.iteration = iteration > 0 ? iteration : latest_checkpoint(dir);
  if (out.iteration == 0) throw UserError("--load = " + dir + ": no checkpoint there (no " + kTracker + ")");
  const fs::path path = fs::path(dir) / iter_name(out.iteration);
  if (!fs::is_directory(path)) throw UserError("--load = " + dir + ": no checkpoint directory " + path.string());
  const nlohmann::json meta = read_metadata(path);
  if (meta.contains("job")) out.job_json = meta.at("job").dump();
  for (auto& [name, t] : assemble(path, nullptr)) {
    if (std::find(t.filled.begin(), t.filled.end(), false) != t.filled.end())
      throw UserError("--load: checkpoint " + path.string() + " lacks part of tensor " + name);
    out.tensors[name] = CheckpointTensor{t.rows, t.cols, std::move(t.value)};
  }
  return out;
}

void write_checkpoint(const std::string& dir, int64_t iteration, const std::string& job_json,
                      const std::map<std::string, CheckpointTensor>& tensors) {
  TANDEM_CHECK(iteration > 0);
  size_t total = sizeof kMagic + sizeof kVersion + sizeof(uint64_t);
  for (const auto& [name, t] : tensors) total += 512 + name.size() + 3 * t.value.size() * sizeof(float);
  std::string out;
  out.reserve(total);   // one allocation: the file can be several GB
  out.append(kMagic, sizeof kMagic);
  append(out, kVersion);
  append(out, static_cast<uint64_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    const int64_t n = t.rows * t.cols;
    TANDEM_CHECK_MSG(static_cast<int64_t>(t.value.size()) == n, "tensor " << name << " holds " << t.value.size()
                                                                          << " values for [" << t.rows << ", " << t.cols << "]");
    const nlohmann::json header = {{"name", name}, {"rows", t.rows}, {"cols", t.cols},
                                   {"shard", shard_name(ShardKind::Replicated)}, {"parts", 1}, {"part", 0},
                                   {"expert", false}, {"first_expert", 0}, {"experts", 1}, {"begin", 0}, {"end", n}};
    const std::vector<float> zeros(static_cast<size_t>(n), 0.0f);
    append_piece(out, header, t.value, zeros, zeros);
  }
  const fs::path root(dir), tmp = root / (iter_name(iteration) + ".tmp");
  std::error_code ec;
  fs::create_directories(root, ec);
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && !fs::is_directory(tmp))
    throw UserError("--save = " + dir + ": cannot create " + tmp.string());
  try {
    write_synced(tmp / rank_file(0), out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  commit_checkpoint(root, iteration, 1, {"0 " + std::to_string(out.size()) + " " + hex(fnv1a64(out))}, job_json);
}

}  // namespace tandem::exec
