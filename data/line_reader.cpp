// Plain or gzip line reader (line_reader.h).
#include "data/line_reader.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/check.h"

namespace tandem::data {

struct LineReader::Impl {
  gzFile file = nullptr;
  std::string path, flag;
  std::vector<char> buffer = std::vector<char>(1 << 20);
  size_t begin = 0, end = 0;  // unread bytes are buffer[begin, end)
  bool eof = false;
  int64_t line = 0;
};

LineReader::LineReader(const std::string& path, const std::string& flag) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->flag = flag;
  impl_->file = gzopen(path.c_str(), "rb");
  if (impl_->file == nullptr) throw UserError(flag + " = " + path + ": cannot open (" + std::strerror(errno) + ")");
  gzbuffer(impl_->file, 1 << 18);
}

LineReader::~LineReader() {
  if (impl_->file != nullptr) gzclose(impl_->file);
}

// Refills the buffer after its unread part; false when nothing more can be read.
bool LineReader::fill() {
  Impl& r = *impl_;
  if (r.eof) return false;
  if (r.begin > 0) {
    std::memmove(r.buffer.data(), r.buffer.data() + r.begin, r.end - r.begin);
    r.end -= r.begin;
    r.begin = 0;
  }
  if (r.end == r.buffer.size()) r.buffer.resize(r.buffer.size() * 2);  // a line longer than the buffer
  const int got = gzread(r.file, r.buffer.data() + r.end, static_cast<unsigned>(r.buffer.size() - r.end));
  if (got < 0) {
    int code = 0;
    const char* message = gzerror(r.file, &code);
    throw UserError(r.flag + " = " + r.path + ": read error after line " + std::to_string(r.line) + " (" +
                    (code == Z_ERRNO ? std::strerror(errno) : message) + ")");
  }
  if (got == 0) {
    r.eof = true;
    int code = 0;
    gzerror(r.file, &code);
    if (code == Z_BUF_ERROR)  // a gzip stream that stops before its end
      throw UserError(r.flag + " = " + r.path + ": compressed data ends early (truncated .gz) after line " +
                      std::to_string(r.line));
  }
  r.end += static_cast<size_t>(got);
  return got > 0;
}

bool LineReader::next(std::string& line, int64_t& line_number, int64_t& bytes) {
  Impl& r = *impl_;
  size_t scanned = r.begin;  // buffer[begin, scanned) holds no line end
  while (true) {
    for (; scanned < r.end; ++scanned) {
      const char c = r.buffer[scanned];
      if (c != '\n' && c != '\r') continue;
      if (c == '\r' && scanned + 1 == r.end && !r.eof) break;  // "\r" last: is "\n" next? read on
      line.assign(r.buffer.data() + r.begin, scanned - r.begin);
      size_t after = scanned + 1;
      if (c == '\r' && after < r.end && r.buffer[after] == '\n') ++after;
      bytes += static_cast<int64_t>(after - r.begin);
      r.begin = after;
      line_number = ++r.line;
      return true;
    }
    const size_t offset = scanned - r.begin;
    const bool more = fill();
    scanned = r.begin + offset;
    if (more || scanned < r.end) continue;
    if (r.begin == r.end) return false;
    line.assign(r.buffer.data() + r.begin, r.end - r.begin);  // the last line has no end
    bytes += static_cast<int64_t>(r.end - r.begin);
    r.begin = r.end;
    line_number = ++r.line;
    return true;
  }
}

}  // namespace tandem::data
