#pragma once
// Stragglers (core/stragglers.h) resolved onto the simulated machine: one speed factor per GPU,
// NVLink, NIC and rail uplink (1 = nominal). Pure, no SimGrid.
#include <cstdint>
#include <string>
#include <vector>

#include "core/job.h"

namespace tandem::sim {

struct GpuPlace;

struct Degradation {
  std::vector<double> gpu;      // [gpu] compute speed: kernels take 1 / gpu[g] as long
  std::vector<double> nvlink;   // [gpu] bandwidth factor of gpu<g>-nvl
  std::vector<double> nic;      // [node * rails + rail] bandwidth factor of node<n>-nic<r>
  std::vector<double> uplink;   // [leaf * rails + rail] bandwidth factor of leaf<x>-rail<r>-up
  int64_t rails = 1;
  bool any() const;             // some factor below 1
  bool any_gpu() const;         // some GPU computes below nominal speed
  // "2 GPUs at 0.5 (ranks 5, 9); 1 NIC at 0.5 (node 3 rail 0)": the units each kind reaches.
  std::vector<std::string> describe() const;
};

// Every straggler of `cluster` onto the GPUs placed by place_gpus(cluster, places.size()).
// UserError naming the straggler as written when an index lies outside the machine.
Degradation resolve_degradation(const ClusterSpec& cluster, const std::vector<GpuPlace>& places);

}  // namespace tandem::sim
