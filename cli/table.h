#pragma once
// Plain-text tables for terminal output: columns padded to their widest cell.
#include <string>
#include <vector>

namespace tandem::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Two-column "key  value" listing.
std::string render_pairs(const std::vector<std::pair<std::string, std::string>>& pairs);

// Number formatting: 1234567 -> "1,234,567"; fixed decimals; human counts "175.0 B".
std::string with_commas(int64_t v);
std::string fixed(double v, int decimals);
std::string human_count(double v);

}  // namespace tandem::cli
