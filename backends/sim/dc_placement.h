#pragma once
// Multi-datacenter placement: which GPU each rank runs on, so that a chosen parallel dimension is
// the one that crosses datacenters (ParallelConfig::dc_placement, `--dc-placement`).
//
// Physical GPUs are placed by place_gpus() (platform.h): datacenter d holds a contiguous block of
// nodes. The placement is a permutation rank -> physical GPU applied where the simulator maps
// ranks to hosts (PlatformOptions::gpu_of_rank); Megatron's rank order, the groups, the schedule,
// the programs and the memory are unchanged. With D datacenters:
//   rank-order  identity: rank r runs on GPU r (which dimension crosses is the rank order's doing)
//   pp          a rank's datacenter is pp / (PP / D): each pipeline is cut into D contiguous groups
//               of stages; the WAN carries the activations and gradients at the D - 1 cuts of
//               every pipeline (and the embedding-tie all-reduce of first and last stage, if tied)
//   dp          dp / (DP / D): each datacenter holds DP / D whole model replicas; the WAN carries
//               the data-parallel gradient reduction (and the distributed optimizer's all-gather)
//   ep          ep / (EP / D) (expert-side coordinate): expert-parallel groups span datacenters;
//               the WAN carries the token all-to-alls (and the dense DP groups that mix EP ranks)
// Inside a datacenter, its ranks take its GPUs in rank order, so TP groups stay on their nodes.
// Pure: no SimGrid.
#include <cstdint>
#include <vector>

#include "core/job.h"
#include "core/parallel_grid.h"

namespace tandem::sim {

// [rank] -> physical GPU index (place_gpus order). Identity for rank-order or one datacenter.
// UserError naming dc_placement when D does not divide the chosen dimension or the datacenters
// would not hold whole nodes (world % (D x gpus_per_node) != 0).
std::vector<int64_t> gpu_of_rank(const Job& job, const ParallelGrid& grid);

// True when the permutation is the identity (nothing to apply).
bool is_identity(const std::vector<int64_t>& gpu_of_rank);

}  // namespace tandem::sim
