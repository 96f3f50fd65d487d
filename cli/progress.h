#pragma once
// A one-line progress bar on a terminal (stderr): bar, count, elapsed time and ETA; silent when
// stderr is not a terminal, so logs and pipes stay clean.
#include <chrono>
#include <cstddef>
#include <string>

namespace tandem::cli {

std::string clock_text(double seconds);   // "h:mm:ss"

class ProgressBar {
 public:
  // `unit`: what is counted ("points", "candidates").
  ProgressBar(size_t total, std::string unit);
  void show(size_t done, const std::string& what) const;
  void set_total(size_t total) { total_ = total; }
  void clear() const;

 private:
  size_t total_;
  std::string unit_;
  bool on_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace tandem::cli
