// TensorBoard event files (tensorboard_writer.h).
#include "backends/executor/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace tandem::exec {
namespace {

constexpr const char* kOption = "--tensorboard-dir";

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire format: key = field << 3 | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

template <class T>
void put_fixed(std::string& out, T v) {   // little-endian, as protobuf and TFRecord store them
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  static_assert(std::endian::native == std::endian::little, "event files are little-endian");
  out.append(reinterpret_cast<const char*>(bytes), sizeof(T));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, uint64_t(field) << 3 | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_varint(e, 1 << 3 | 1);
  put_fixed(e, wall_time);
  put_varint(e, 2 << 3 | 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string length;
  put_fixed(length, static_cast<uint64_t>(data.size()));
  std::string out = length;
  put_fixed(out, masked_crc32c(length.data(), length.size()));
  out += data;
  put_fixed(out, masked_crc32c(data.data(), data.size()));
  return out;
}

std::string scalar_event(double wall_time, int64_t step, const std::string& tag, float value) {
  std::string v;   // Summary.Value
  put_bytes(v, 1, tag);
  put_varint(v, 2 << 3 | 5);
  put_fixed(v, value);
  std::string summary;
  put_bytes(summary, 1, v);
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

TensorBoardWriter::TensorBoardWriter(const TrainingConfig& settings) : settings_(settings) {
  namespace fs = std::filesystem;
  const std::string& dir = settings.tensorboard_dir;
  TANDEM_CHECK_MSG(!dir.empty(), "a TensorBoard writer without a directory");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw UserError(std::string(kOption) + " = " + dir + ": cannot create the directory" + (ec ? ": " + ec.message() : ""));
  const double start = now_s();
  // Unique per run: seconds, host and process as torch's SummaryWriter names them, then a counter.
  const std::string stem = (fs::path(dir) / "events.out.tfevents.").string() + std::to_string(int64_t(start)) + "." +
                           host_name() + "." + std::to_string(::getpid()) + ".";
  for (int n = 0; fd_ < 0; ++n) {
    path_ = stem + std::to_string(n);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 && (errno != EEXIST || n > 1000))
      throw UserError(std::string(kOption) + " = " + dir + ": cannot create " + path_ + ": " + std::strerror(errno));
  }
  std::string e = event_header(start, 0);
  put_bytes(e, 3, "brain.Event:2");
  write_record(e);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorBoardWriter::write_record(const std::string& data) {
  const std::string rec = tfrecord(data);
  size_t done = 0;
  while (done < rec.size()) {
    const ssize_t n = ::write(fd_, rec.data() + done, rec.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw UserError(std::string(kOption) + ": write to " + path_ + " failed: " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step) {
  write_record(scalar_event(now_s(), step, tag, static_cast<float>(value)));
}

void TensorBoardWriter::record(const IterationRecord& r) {
  const int64_t it = r.iteration, samples = r.consumed_samples;
  const auto both = [&](const std::string& tag, double v) {
    scalar(tag, v, it);
    scalar(tag + " vs samples", v, samples);
  };
  if (it % settings_.tensorboard_log_interval == 0) {
    both("learning-rate", r.lr);
    both("batch-size", double(r.global_batch_size));
    both("lm loss", r.lm_loss);
    both("grad-norm", r.grad_norm);
    if (settings_.log_memory_to_tensorboard) {
      scalar("mem-allocated-bytes", r.mem_allocated_bytes, it);
      scalar("mem-max-allocated-bytes", r.mem_peak_bytes, it);
    }
  }
  if (r.interval_time_s && settings_.log_timers_to_tensorboard) {
    scalar("iteration-time", *r.interval_time_s, it);
    scalar("throughput", r.interval_tflops_per_rank, it);
  }
  if (r.eval_loss) {
    both("lm loss validation", *r.eval_loss);
    if (settings_.log_validation_ppl_to_tensorboard)
      both("lm loss validation ppl", std::exp(std::min(20.0, *r.eval_loss)));   // Megatron caps the exponent at 20
  }
}

}  // namespace tandem::exec
