#pragma once
// Field access for the simulator's data files (stacks, measured profiles): every error names the
// file, the dotted field and the value (UserError), as core/check.h's field_message spells it.
#include <cmath>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem::sim {

class DataReader {
 public:
  using json = nlohmann::json;
  explicit DataReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& value, const std::string& reason) const {
    throw UserError(file_ + ": " + field_message(field, value, reason));
  }

  static std::string joined(const std::set<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
  }

  void only(const json& obj, const std::string& where, const std::set<std::string>& known) const {
    if (!obj.is_object()) fail(where, obj.dump(), "expected an object");
    for (const auto& [key, v] : obj.items())
      if (!known.count(key))
        fail(where.empty() ? key : where + "." + key, v.dump(), "unknown field (expected " + joined(known) + ")");
  }

  const json& member(const json& obj, const std::string& where, const std::string& key) const {
    if (!obj.contains(key)) throw UserError(file_ + ": " + (where.empty() ? key : where + "." + key) + ": missing");
    return obj.at(key);
  }

  std::string text(const json& obj, const std::string& where, const std::string& key) const {
    const json& v = member(obj, where, key);
    if (!v.is_string() || v.get<std::string>().empty())
      fail(where.empty() ? key : where + "." + key, v.dump(), "expected a non-empty string");
    return v.get<std::string>();
  }

  double number(const json& v, const std::string& field, double lo, double hi, bool lo_open = false) const {
    if (!v.is_number()) fail(field, v.dump(), "expected a number");
    const double x = v.get<double>();
    const bool low_ok = lo_open ? x > lo : x >= lo;
    if (!std::isfinite(x) || !low_ok || x > hi) {
      std::ostringstream range;
      range << "must be in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
      fail(field, v.dump(), range.str());
    }
    return x;
  }

  int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(field, v.dump(), "expected an integer");
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(field, v.dump(), "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

}  // namespace tandem::sim
