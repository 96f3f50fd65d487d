// Stragglers: parsing, canonical text, validation and the seeded draw (stragglers.h).
#include "core/stragglers.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job.h"
#include "core/job_fields.h"

namespace tandem {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxIndex = int64_t{1} << 24;
constexpr double kAnyReal = std::numeric_limits<double>::max();

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string piece;
  std::istringstream is(text);
  while (std::getline(is, piece, sep)) out.push_back(piece);
  if (!text.empty() && text.back() == sep) out.emplace_back();
  return out;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

StragglerKind parse_kind(const std::string& text, const std::string& where) {
  if (text == "gpu") return StragglerKind::Gpu;
  if (text == "nvlink") return StragglerKind::Nvlink;
  if (text == "nic") return StragglerKind::Nic;
  if (text == "uplink") return StragglerKind::Uplink;
  throw_field_error(where, "'" + text + "'", "unknown straggler kind (expected gpu, nvlink, nic or uplink)");
}

bool parse_scope(const std::string& key, StragglerScope* scope) {
  if (key == "rank" || key == "ranks") *scope = StragglerScope::Ranks;
  else if (key == "node" || key == "nodes") *scope = StragglerScope::Nodes;
  else if (key == "leaf" || key == "leaves") *scope = StragglerScope::Leaves;
  else if (key == "fraction") *scope = StragglerScope::Fraction;
  else return false;
  return true;
}

// "5", "1,5,9", "4-7", "0,8-11": ascending unique indices.
std::vector<int64_t> parse_index_list(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  for (const std::string& item : split(text, ',')) {
    const size_t dash = item.find('-', 1);
    if (dash == std::string::npos) {
      out.push_back(parse_int(where, item, 0, kMaxIndex));
      continue;
    }
    const int64_t first = parse_int(where, item.substr(0, dash), 0, kMaxIndex);
    const int64_t last = parse_int(where, item.substr(dash + 1), 0, kMaxIndex);
    if (last < first) throw_field_error(where, item, "a range must go upwards (first-last)");
    if (last - first > kMaxIndex) throw_field_error(where, item, "range too long");
    for (int64_t v = first; v <= last; ++v) out.push_back(v);
  }
  if (out.empty()) throw_field_error(where, "''", "expected indices such as 5, 1,5,9 or 4-7");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

double parse_speed(const std::string& text, const std::string& where) {
  const double speed = parse_real(where, text, -kAnyReal, kAnyReal);   // range checked below, with a reason
  if (!(speed > 0 && speed <= 1)) throw_field_error(where, text, "must be in (0, 1]: the share of the nominal speed or bandwidth");
  return speed;
}

double parse_fraction(const std::string& text, const std::string& where) {
  const double f = parse_real(where, text, -kAnyReal, kAnyReal);
  if (!(f > 0 && f <= 1)) throw_field_error(where, text, "must be in (0, 1]: the share of the kind's units");
  return f;
}

std::string join_indices(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(v[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(v[j]);
    }
    i = j + 1;
  }
  return out;
}

std::string real_text(double v) {
  std::ostringstream os;
  os.precision(12);
  os << v;
  return os.str();
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::string to_string(StragglerKind kind) {
  switch (kind) {
    case StragglerKind::Gpu: return "gpu";
    case StragglerKind::Nvlink: return "nvlink";
    case StragglerKind::Nic: return "nic";
    case StragglerKind::Uplink: return "uplink";
  }
  return "?";
}

std::string to_string(StragglerScope scope) {
  switch (scope) {
    case StragglerScope::Ranks: return "rank";
    case StragglerScope::Nodes: return "node";
    case StragglerScope::Leaves: return "leaf";
    case StragglerScope::Fraction: return "fraction";
  }
  return "?";
}

Straggler parse_straggler(const std::string& text, const std::string& field) {
  const std::string where = field + " " + text;
  const std::vector<std::string> parts = split(trim(text), ':');
  if (parts.size() < 3 || parts.size() > 4)
    throw_field_error(field, "'" + text + "'", "expected KIND:WHERE:SPEED[:seed=N], e.g. gpu:rank=5:0.5 or "
                                               "nic:fraction=0.01:0.5:seed=1");
  Straggler s;
  s.origin = field + " " + text;
  s.kind = parse_kind(parts[0], where + ": kind");
  const size_t eq = parts[1].find('=');
  if (eq == std::string::npos || !parse_scope(parts[1].substr(0, eq), &s.scope))
    throw_field_error(where + ": where", "'" + parts[1] + "'",
                      "expected rank=LIST, node=LIST, leaf=LIST or fraction=F");
  const std::string value = parts[1].substr(eq + 1);
  if (s.scope == StragglerScope::Fraction) s.fraction = parse_fraction(value, where + ": fraction");
  else s.indices = parse_index_list(value, where + ": " + to_string(s.scope));
  s.speed = parse_speed(parts[2], where + ": speed");
  if (parts.size() == 4) {
    if (parts[3].rfind("seed=", 0) != 0)
      throw_field_error(where + ": seed", "'" + parts[3] + "'", "expected seed=N after the speed");
    if (s.scope != StragglerScope::Fraction)
      throw_field_error(where + ": seed", parts[3], "a seed only goes with fraction=F");
    s.seed = static_cast<uint64_t>(parse_int(where + ": seed", parts[3].substr(5), 0, int64_t{1} << 40));
  }
  return s;
}

std::vector<Straggler> parse_straggler_list(const std::string& text, const std::string& field) {
  std::vector<Straggler> out;
  if (trim(text).empty() || trim(text) == "none") return out;
  for (const std::string& piece : split(text, ';'))
    if (!trim(piece).empty()) out.push_back(parse_straggler(trim(piece), field));
  return out;
}

Straggler straggler_from_json(const json& v, const std::string& field) {
  if (v.is_string()) return parse_straggler(v.get<std::string>(), field);
  if (!v.is_object()) throw_field_error(field, v.dump(), "expected an object {\"kind\", \"ranks\"|\"nodes\"|\"leaves\"|"
                                                         "\"fraction\", \"speed\"[, \"seed\"]} or a string");
  Straggler s;
  s.origin = field;
  int scopes = 0;
  for (const auto& [key, value] : v.items()) {
    const std::string path = field + "." + key;
    StragglerScope scope;
    if (key == "kind") {
      if (!value.is_string()) throw_field_error(path, value.dump(), "expected gpu, nvlink, nic or uplink");
      s.kind = parse_kind(value.get<std::string>(), path);
    } else if (key == "speed") {
      if (!value.is_number()) throw_field_error(path, value.dump(), "expected a number in (0, 1]");
      s.speed = parse_speed(value.dump(), path);
    } else if (key == "seed") {
      if (!value.is_number_integer()) throw_field_error(path, value.dump(), "expected an integer");
      s.seed = static_cast<uint64_t>(parse_int(path, value.dump(), 0, int64_t{1} << 40));
    } else if (parse_scope(key, &scope)) {
      ++scopes;
      s.scope = scope;
      if (scope == StragglerScope::Fraction) {
        if (!value.is_number()) throw_field_error(path, value.dump(), "expected a number in (0, 1]");
        s.fraction = parse_fraction(value.dump(), path);
      } else {
        const bool list = value.is_array() && std::all_of(value.begin(), value.end(), [](const json& x) {
          return x.is_number_integer();
        });
        if (!list && !value.is_number_integer() && !value.is_string())
          throw_field_error(path, value.dump(), "expected an index, an array of indices or a string such as \"4-7\"");
        std::string text = value.is_string() ? value.get<std::string>() : "";
        if (!value.is_string())
          for (const json& x : (value.is_array() ? value : json::array({value})))
            text.append(text.empty() ? "" : ",").append(x.dump());
        s.indices = parse_index_list(text, path);
      }
    } else {
      throw UserError(path + ": unknown field (expected kind, ranks, nodes, leaves, fraction, speed, seed)");
    }
  }
  if (!v.contains("kind")) throw UserError(field + ".kind: missing (gpu, nvlink, nic or uplink)");
  if (!v.contains("speed")) throw UserError(field + ".speed: missing (a number in (0, 1])");
  if (scopes != 1)
    throw UserError(field + ": give exactly one of ranks, nodes, leaves or fraction (got " + std::to_string(scopes) +
                    ")");
  if (v.contains("seed") && s.scope != StragglerScope::Fraction)
    throw_field_error(field + ".seed", v.at("seed").dump(), "a seed only goes with fraction");
  return s;
}

std::string to_text(const Straggler& s) {
  std::string out = to_string(s.kind);
  out.append(":").append(to_string(s.scope)).append("=");
  out.append(s.scope == StragglerScope::Fraction ? real_text(s.fraction) : join_indices(s.indices));
  out.append(":").append(real_text(s.speed));
  if (s.scope == StragglerScope::Fraction) out.append(":seed=").append(std::to_string(s.seed));
  return out;
}

int64_t cluster_rails(const ClusterSpec& c) {
  return std::max<int64_t>(1, std::min(c.nics_per_node, c.gpus_per_node));
}

int64_t cluster_nodes(const ClusterSpec& c, int64_t world) {
  const int64_t per_node = std::max<int64_t>(1, c.gpus_per_node);
  return (world + per_node - 1) / per_node;
}

int64_t cluster_leaves(const ClusterSpec& c, int64_t world) {
  const int64_t nodes = cluster_nodes(c, world);
  const int64_t dcs = std::max<int64_t>(1, c.datacenters);
  const int64_t per_dc = (nodes + dcs - 1) / dcs;
  const int64_t per_leaf = std::max<int64_t>(1, c.nodes_per_leaf);
  int64_t leaves = 0;
  for (int64_t d = 0; d < dcs; ++d) {
    const int64_t count = std::max<int64_t>(0, std::min(per_dc, nodes - d * per_dc));
    leaves += (count + per_leaf - 1) / per_leaf;
  }
  return leaves;
}

void validate_stragglers(const ClusterSpec& c, int64_t world) {
  for (const Straggler& s : c.stragglers) {
    if (s.scope == StragglerScope::Fraction) continue;
    const int64_t limit = s.scope == StragglerScope::Ranks   ? world
                          : s.scope == StragglerScope::Nodes ? cluster_nodes(c, world)
                                                             : cluster_leaves(c, world);
    const std::string what = s.scope == StragglerScope::Ranks   ? "GPUs"
                             : s.scope == StragglerScope::Nodes ? "nodes"
                                                                : "leaf groups";
    for (int64_t i : s.indices)
      if (i >= limit)
        throw_field_error(s.origin + ": " + to_string(s.scope), i,
                          "out of range: the job has " + std::to_string(limit) + " " + what + " (0-" +
                              std::to_string(limit - 1) + ")");
  }
}

bool has_effective_stragglers(const ClusterSpec& c) {
  return std::any_of(c.stragglers.begin(), c.stragglers.end(), [](const Straggler& s) { return s.speed < 1.0; });
}

std::vector<int64_t> draw_indices(int64_t n, int64_t count, uint64_t seed) {
  TANDEM_CHECK(n >= 0 && count >= 0 && count <= n);
  std::vector<int64_t> pool(static_cast<size_t>(n));
  std::iota(pool.begin(), pool.end(), int64_t{0});
  uint64_t state = seed;
  for (int64_t i = 0; i < count; ++i) {
    const auto left = static_cast<uint64_t>(n - i);
    const auto j = i + static_cast<int64_t>(splitmix64(state) % left);
    std::swap(pool[static_cast<size_t>(i)], pool[static_cast<size_t>(j)]);
  }
  pool.resize(static_cast<size_t>(count));
  std::sort(pool.begin(), pool.end());
  return pool;
}

}  // namespace tandem
