// Progress bar (progress.h).
#include "cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace tandem::cli {

std::string clock_text(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof(text), "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return text;
}

ProgressBar::ProgressBar(size_t total, std::string unit)
    : total_(total), unit_(std::move(unit)), on_(isatty(fileno(stderr)) != 0) {}

void ProgressBar::show(size_t done, const std::string& what) const {
  if (!on_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int width = 30;
  const int filled = total_ ? static_cast<int>(width * done / total_) : width;
  const std::string eta =
      done ? clock_text(elapsed / static_cast<double>(done) * static_cast<double>(total_ - std::min(done, total_))) : "?";
  std::fprintf(stderr, "\r\033[K[%s%s] %zu/%zu %s, %s elapsed, ETA %s  %s",
               std::string(static_cast<size_t>(filled), '#').c_str(),
               std::string(static_cast<size_t>(width - filled), '.').c_str(), done, total_, unit_.c_str(),
               clock_text(elapsed).c_str(), eta.c_str(), what.c_str());
}

void ProgressBar::clear() const {
  if (on_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace tandem::cli
