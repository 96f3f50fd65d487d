#pragma once
// Closed-form costs of the collectives and pipeline messages of a candidate layout, for the
// planner's analytic model (plan/cost_model.h). The same links, efficiencies and algorithm shapes
// as the simulator's communication layer (backends/sim/collectives.h, platform.h), without
// building a SimGrid platform: a ring over `size` members whose ranks are `stride` apart in
// Megatron's rank order (TP fastest), on GPUs placed node by node.
//
//   bytes S (all-reduce: the buffer; reduce-scatter: the full input; all-gather: the full output)
//   ring all-reduce     2 (p-1)/p S over the bottleneck, 2 (p-1) steps
//   reduce-scatter,
//   all-gather            (p-1)/p S,                      (p-1) steps
//   bottleneck          inside a node: the GPU's NVLink (nvlink_bandwidth x nvlink_efficiency);
//                       across nodes with L members per node: L channels, one per NIC, each
//                       carrying S / L through nic_bandwidth x nic_efficiency (never faster than
//                       the NVLink that every member's share crosses)
//   latency             collective_base_latency + steps x hop latency (NVLink inside a node; across
//                       nodes one hop in L crosses the NIC route, plus two uplinks beyond a leaf group)
// Uncontended: the simulator shares links between concurrent flows; this model does not.
#include <cstdint>

#include "core/job.h"

namespace tandem::sim {
struct GpuEfficiency;
}

namespace tandem::plan {

enum class Collective { AllReduce, ReduceScatter, AllGather, AllToAll };

struct LinkRates {
  int64_t gpus_per_node = 8;
  int64_t nodes_per_leaf = 16;
  double nvlink_bytes_per_s = 0;   // achieved, per GPU per direction
  double nvlink_latency_s = 0;
  double nic_bytes_per_s = 0;      // achieved, per NIC per direction
  double nic_latency_s = 0;
  double uplink_latency_s = 0.5e-6;
  double base_latency_s = 0;       // NCCL's fixed cost of one collective
  double oversubscription = 1;
};

LinkRates link_rates(const ClusterSpec& cluster, const sim::GpuEfficiency& efficiency);

// Seconds of one collective over `size` members `stride` ranks apart; 0 for size < 2 or no bytes.
// AllToAll: `bytes` is what each member sends to all the others together.
double collective_seconds(const LinkRates& links, Collective kind, int64_t size, int64_t stride, double bytes);

// Seconds of one pipeline message between ranks `distance` apart.
double p2p_seconds(const LinkRates& links, int64_t distance, double bytes);

}  // namespace tandem::plan
