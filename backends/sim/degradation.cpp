// Stragglers resolved onto GPUs, NVLinks, NICs and uplinks (degradation.h).
#include "backends/sim/degradation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backends/sim/platform.h"
#include "core/check.h"

namespace tandem::sim {
namespace {

std::string speed_text(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g", v);
  return text;
}

// The units of `s`'s kind that it reaches, as indices into the kind's vector of Degradation.
std::vector<int64_t> reached_units(const Straggler& s, const std::vector<GpuPlace>& places, int64_t rails,
                                   int64_t nodes, int64_t leaves) {
  const bool per_gpu = s.kind == StragglerKind::Gpu || s.kind == StragglerKind::Nvlink;
  const int64_t units = per_gpu ? static_cast<int64_t>(places.size())
                        : s.kind == StragglerKind::Nic ? nodes * rails
                                                       : leaves * rails;
  if (s.scope == StragglerScope::Fraction) {
    const int64_t count = std::clamp<int64_t>(std::llround(s.fraction * static_cast<double>(units)), 1, units);
    return draw_indices(units, count, s.seed);
  }
  std::vector<int64_t> out;
  const auto selected = [&](const GpuPlace& p, int64_t gpu) {
    const int64_t key = s.scope == StragglerScope::Ranks ? gpu : s.scope == StragglerScope::Nodes ? p.node : p.leaf;
    return std::binary_search(s.indices.begin(), s.indices.end(), key);
  };
  for (size_t g = 0; g < places.size(); ++g) {
    const GpuPlace& p = places[g];
    if (!selected(p, static_cast<int64_t>(g))) continue;
    if (per_gpu) {
      out.push_back(static_cast<int64_t>(g));
      continue;
    }
    const int64_t base = (s.kind == StragglerKind::Nic ? p.node : p.leaf) * rails;
    if (s.scope == StragglerScope::Ranks) out.push_back(base + p.rail);
    else for (int64_t r = 0; r < rails; ++r) out.push_back(base + r);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string unit_name(StragglerKind kind, int64_t unit, int64_t rails) {
  switch (kind) {
    case StragglerKind::Gpu: return "rank " + std::to_string(unit);
    case StragglerKind::Nvlink: return "gpu" + std::to_string(unit) + "-nvl";
    case StragglerKind::Nic: return "node" + std::to_string(unit / rails) + "-nic" + std::to_string(unit % rails);
    case StragglerKind::Uplink:
      return "leaf" + std::to_string(unit / rails) + "-rail" + std::to_string(unit % rails) + "-up";
  }
  return "?";
}

std::string describe_kind(StragglerKind kind, const std::vector<double>& factors, int64_t rails) {
  std::vector<std::string> slow;
  for (size_t u = 0; u < factors.size(); ++u)
    if (factors[u] < 1.0)
      slow.push_back(unit_name(kind, static_cast<int64_t>(u), rails) + " at " + speed_text(factors[u]));
  if (slow.empty()) return "";
  const char* what = kind == StragglerKind::Gpu      ? "GPU compute: " : kind == StragglerKind::Nvlink ? "NVLink: "
                     : kind == StragglerKind::Nic    ? "NIC: "         : "rail uplink: ";
  const char* units = kind == StragglerKind::Gpu      ? " GPUs" : kind == StragglerKind::Nvlink ? " NVLinks"
                      : kind == StragglerKind::Nic    ? " NICs" : " uplinks";
  std::string out = what + std::to_string(slow.size()) + " of " + std::to_string(factors.size()) + units +
                    " degraded (";
  for (size_t i = 0; i < slow.size() && i < 6; ++i) out += (i ? ", " : "") + slow[i];
  if (slow.size() > 6) out += ", and " + std::to_string(slow.size() - 6) + " more";
  return out + ")";
}

bool below_one(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return x < 1.0; });
}

}  // namespace

bool Degradation::any() const { return below_one(gpu) || below_one(nvlink) || below_one(nic) || below_one(uplink); }
bool Degradation::any_gpu() const { return below_one(gpu); }

std::vector<std::string> Degradation::describe() const {
  std::vector<std::string> out;
  const std::pair<StragglerKind, const std::vector<double>*> kinds[] = {
      {StragglerKind::Gpu, &gpu},
      {StragglerKind::Nvlink, &nvlink},
      {StragglerKind::Nic, &nic},
      {StragglerKind::Uplink, &uplink}};
  for (const auto& [kind, factors] : kinds)
    if (std::string text = describe_kind(kind, *factors, rails); !text.empty()) out.push_back(text);
  return out;
}

Degradation resolve_degradation(const ClusterSpec& cluster, const std::vector<GpuPlace>& places) {
  const auto world = static_cast<int64_t>(places.size());
  validate_stragglers(cluster, world);
  Degradation d;
  d.rails = cluster_rails(cluster);
  const int64_t nodes = places.empty() ? 0 : places.back().node + 1;
  const int64_t leaves = places.empty() ? 0 : places.back().leaf + 1;
  TANDEM_CHECK_MSG(nodes == cluster_nodes(cluster, world) && leaves == cluster_leaves(cluster, world),
                   "core's node and leaf counts disagree with the platform's placement");
  d.gpu.assign(static_cast<size_t>(world), 1.0);
  d.nvlink.assign(static_cast<size_t>(world), 1.0);
  d.nic.assign(static_cast<size_t>(nodes * d.rails), 1.0);
  d.uplink.assign(static_cast<size_t>(leaves * d.rails), 1.0);
  for (const Straggler& s : cluster.stragglers) {
    if (s.speed >= 1.0) continue;
    std::vector<double>& factors = s.kind == StragglerKind::Gpu      ? d.gpu
                                   : s.kind == StragglerKind::Nvlink ? d.nvlink
                                   : s.kind == StragglerKind::Nic    ? d.nic
                                                                     : d.uplink;
    for (int64_t u : reached_units(s, places, d.rails, nodes, leaves)) factors[static_cast<size_t>(u)] *= s.speed;
  }
  return d;
}

}  // namespace tandem::sim
