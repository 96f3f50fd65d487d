// Closed-form collective costs (collective_cost.h).
#include "plan/collective_cost.h"

#include <algorithm>

#include "backends/sim/compute_model.h"

namespace tandem::plan {
namespace {

struct Span {
  int64_t per_node = 1;   // members on one node
  int64_t nodes = 1;      // nodes the group touches
  bool beyond_leaf = false;
};

Span span_of(const LinkRates& links, int64_t size, int64_t stride) {
  Span s;
  const int64_t gpn = std::max<int64_t>(1, links.gpus_per_node);
  s.per_node = stride >= gpn ? 1 : std::max<int64_t>(1, std::min(size, gpn / std::max<int64_t>(1, stride)));
  s.nodes = (size + s.per_node - 1) / s.per_node;
  const int64_t node_range = ((size - 1) * stride) / gpn + 1;   // first to last member's node
  s.beyond_leaf = node_range > std::max<int64_t>(1, links.nodes_per_leaf);
  return s;
}

// Mean latency of one ring step: of the per_node hops a ring makes per node, one crosses the NIC
// route and the others stay on NVLink.
double hop_latency(const LinkRates& links, const Span& s) {
  if (s.nodes <= 1) return links.nvlink_latency_s;
  const double nic = links.nic_latency_s + (s.beyond_leaf ? 2 * links.uplink_latency_s : 0.0);
  return (nic + double(s.per_node - 1) * links.nvlink_latency_s) / double(s.per_node);
}

// Bytes per second one member's share of the algorithm moves through its bottleneck.
double ring_rate(const LinkRates& links, const Span& s) {
  if (s.nodes <= 1) return links.nvlink_bytes_per_s;
  double nic = links.nic_bytes_per_s * double(s.per_node);
  if (s.beyond_leaf && links.oversubscription > 1) nic /= links.oversubscription;
  return std::min(nic, links.nvlink_bytes_per_s);
}

}  // namespace

LinkRates link_rates(const ClusterSpec& cluster, const sim::GpuEfficiency& efficiency) {
  LinkRates r;
  r.gpus_per_node = cluster.gpus_per_node;
  r.nodes_per_leaf = cluster.nodes_per_leaf;
  r.nvlink_bytes_per_s = cluster.nvlink_bandwidth * efficiency.nvlink_efficiency;
  r.nvlink_latency_s = cluster.nvlink_latency;
  // NICs beyond one per GPU are bundled, fewer are shared (platform.h): the rate one GPU's rail sees.
  const double nics_per_gpu = double(std::max<int64_t>(1, cluster.nics_per_node)) / double(std::max<int64_t>(1, cluster.gpus_per_node));
  r.nic_bytes_per_s = cluster.nic_bandwidth * efficiency.nic_efficiency * nics_per_gpu;
  r.nic_latency_s = cluster.nic_latency;
  r.base_latency_s = efficiency.collective_base_latency_s;
  r.oversubscription = cluster.oversubscription;
  return r;
}

double collective_seconds(const LinkRates& links, Collective kind, int64_t size, int64_t stride, double bytes) {
  if (size < 2 || bytes <= 0) return 0.0;
  const Span s = span_of(links, size, stride);
  const double p = double(size);
  const double hop = hop_latency(links, s);
  if (kind == Collective::AllToAll) {
    // Each member sends bytes / (p - 1) to every other member; those on other nodes cross its NIC.
    const double remote = double(size - s.per_node) / (p - 1);
    const double local = double(s.per_node - 1) / (p - 1);
    double nic = links.nic_bytes_per_s;
    if (s.beyond_leaf && links.oversubscription > 1) nic /= links.oversubscription;
    const double t_remote = remote > 0 ? bytes * remote / nic : 0.0;
    const double t_local = local > 0 ? bytes * local / links.nvlink_bytes_per_s : 0.0;
    return links.base_latency_s + hop + std::max(t_remote, t_local);
  }
  const double factor = kind == Collective::AllReduce ? 2 * (p - 1) / p : (p - 1) / p;
  const double steps = kind == Collective::AllReduce ? 2 * (p - 1) : (p - 1);
  return links.base_latency_s + steps * hop + factor * bytes / ring_rate(links, s);
}

double p2p_seconds(const LinkRates& links, int64_t distance, double bytes) {
  if (bytes <= 0) return 0.0;
  const Span s = span_of(links, 2, distance);
  const double rate = s.nodes <= 1 ? links.nvlink_bytes_per_s : std::min(links.nic_bytes_per_s, links.nvlink_bytes_per_s);
  return hop_latency(links, s) + bytes / rate;
}

}  // namespace tandem::plan
