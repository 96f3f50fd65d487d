#pragma once
// Lines of a text file, plain or gzip-compressed (zlib reads both), with their 1-based numbers.
// Line ends are "\n", "\r\n" or "\r", as Python's text mode (universal newlines) splits them, so
// documents are cut where tools/preprocess_data.py cuts them.
#include <cstdint>
#include <memory>
#include <string>

namespace tandem::data {

class LineReader {
 public:
  // Throws UserError naming `flag` and the path when the file cannot be opened.
  LineReader(const std::string& path, const std::string& flag);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Next line without its end; false at the end of the file. `bytes` adds the line's length
  // including its end. Throws UserError on a read or gzip error (file and line named).
  bool next(std::string& line, int64_t& line_number, int64_t& bytes);

 private:
  bool fill();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::data
