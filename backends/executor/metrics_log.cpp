// Metrics JSONL (metrics_log.h).
#include "backends/executor/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/check.h"

namespace tandem::exec {
namespace {

using Json = nlohmann::ordered_json;

Json number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

Json optional_number(const std::optional<double>& v) { return v ? number(*v) : Json(nullptr); }

// The iteration of one JSONL line, or -1 when the line is not a whole record.
int64_t iteration_of(const std::string& line) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("iteration") || !j["iteration"].is_number_integer()) return -1;
  return j["iteration"].get<int64_t>();
}

}  // namespace

nlohmann::ordered_json metrics_json(const IterationRecord& r) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["iteration"] = r.iteration;
  j["consumed_samples"] = r.consumed_samples;
  j["global_batch_size"] = r.global_batch_size;
  j["lm_loss"] = number(r.lm_loss);
  j["lr"] = number(r.lr);
  j["grad_norm"] = number(r.grad_norm);
  j["iteration_time_ms"] = number(r.iteration_time_s * 1e3);
  j["tokens_per_s"] = number(r.tokens_per_s);
  j["model_tflops_per_rank"] = number(r.model_tflops_per_rank);
  j["mfu"] = optional_number(r.mfu);
  j["mem_peak_bytes"] = number(r.mem_peak_bytes);
  j["mem_allocated_bytes"] = number(r.mem_allocated_bytes);
  j["eval_loss"] = optional_number(r.eval_loss);
  j["skipped"] = r.skipped;
  return j;
}

// Checks now that the file can be appended to, but creates it only in begin(): a run stopped by
// bad input before its first iteration (a truncated dataset, a checkpoint of another model) leaves
// no metrics file behind.
MetricsLog::MetricsLog(std::string option, std::string path) : option_(std::move(option)), path_(std::move(path)) {
  if (::access(path_.c_str(), F_OK) == 0) {
    open_for_append();
    return;
  }
  const std::string::size_type slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UserError(option_ + " = " + path_ + ": cannot open for appending: " + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::open_for_append() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw UserError(option_ + " = " + path_ + ": cannot open for appending: " + std::strerror(errno));
}

void MetricsLog::begin(int64_t first_iteration) {
  if (fd_ < 0) open_for_append();
  std::ifstream in(path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string old = text.str();
  // Keep whole lines (ending in '\n') that are records of earlier iterations, in file order.
  std::string kept;
  size_t start = 0, lines = 0;
  for (size_t nl = old.find('\n'); nl != std::string::npos; start = nl + 1, nl = old.find('\n', start)) {
    ++lines;
    const std::string line = old.substr(start, nl - start);
    const int64_t it = iteration_of(line);
    if (it < 0)
      throw UserError(option_ + " = " + path_ + ": line " + std::to_string(lines) + " (byte " + std::to_string(start) +
                      ") is not a metrics record; move the file away to start a new one");
    if (it < first_iteration) kept += line + "\n";
  }
  if (kept == old) return;
  // Rewrite under a temporary name and rename: a crash here leaves the old file or the new one.
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) throw UserError(option_ + " = " + path_ + ": cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0)
    throw UserError(option_ + " = " + path_ + ": cannot rename " + tmp + " into place: " + std::strerror(errno));
  open_for_append();
}

void MetricsLog::record(const IterationRecord& r) { append(metrics_json(r).dump() + "\n"); }

void MetricsLog::append(const std::string& line) {
  // One write() per line on an O_APPEND descriptor: the line lands whole or (on a crash) torn at
  // its end, which begin() of the resumed run drops.
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw UserError(option_ + " = " + path_ + ": write failed: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

}  // namespace tandem::exec
