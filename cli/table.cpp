#include "cli/table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tandem::cli {

std::string Table::render() const {
  std::vector<size_t> width(header_.size(), 0);
  auto widen = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  auto line = [&](const std::vector<std::string>& row) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      // First column left-aligned, the rest right-aligned (numbers).
      const std::string pad(width[i] - cell.size(), ' ');
      s += (i == 0 ? cell + pad : pad + cell);
      if (i + 1 < width.size()) s += "  ";
    }
    return s + "\n";
  };
  std::string out = line(header_);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  out += std::string(total > 2 ? total - 2 : 0, '-') + "\n";
  for (const auto& r : rows_) out += line(r);
  return out;
}

std::string render_pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  size_t w = 0;
  for (const auto& [k, v] : pairs) w = std::max(w, k.size());
  std::string out;
  for (const auto& [k, v] : pairs) out += "  " + k + std::string(w - k.size() + 2, ' ') + v + "\n";
  return out;
}

std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string human_count(double v) {
  const char* units[] = {"", " K", " M", " B", " T", " P", " E"};
  int u = 0;
  while (std::fabs(v) >= 1000.0 && u < 6) {
    v /= 1000.0;
    ++u;
  }
  return fixed(v, u == 0 ? 0 : 2) + units[u];
}

}  // namespace tandem::cli
