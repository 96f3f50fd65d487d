// Rank -> GPU permutations of the datacenter placements (dc_placement.h).
#include "backends/sim/dc_placement.h"

#include <numeric>
#include <string>

#include "backends/sim/platform.h"
#include "core/check.h"

namespace tandem::sim {
namespace {

// The size of the dimension a placement cuts, and its name as users write it.
int64_t cut_size(DcPlacement placement, const ParallelGrid& grid, const char** name) {
  switch (placement) {
    case DcPlacement::Pipeline: *name = "PP"; return grid.pp_size();
    case DcPlacement::Data: *name = "DP"; return grid.dp_size();
    case DcPlacement::Expert: *name = "EP"; return grid.ep_size();
    case DcPlacement::RankOrder: break;
  }
  *name = "";
  return 1;
}

int64_t cut_coord(DcPlacement placement, const ParallelGrid& grid, int64_t rank) {
  switch (placement) {
    case DcPlacement::Pipeline: return grid.dense_coord(rank).pp;
    case DcPlacement::Data: return grid.dense_coord(rank).dp;
    case DcPlacement::Expert: return grid.expert_coord(rank).ep;
    case DcPlacement::RankOrder: break;
  }
  return 0;
}

}  // namespace

std::vector<int64_t> gpu_of_rank(const Job& job, const ParallelGrid& grid) {
  const int64_t world = grid.world_size();
  std::vector<int64_t> out(static_cast<size_t>(world));
  std::iota(out.begin(), out.end(), int64_t{0});
  const DcPlacement placement = job.parallel.dc_placement;
  const int64_t d = job.cluster.datacenters;
  if (placement == DcPlacement::RankOrder || d <= 1) return out;
  const std::string value = to_string(placement);
  const char* dim = "";
  const int64_t size = cut_size(placement, grid, &dim);
  if (size % d != 0)
    throw_field_error("dc_placement", value,
                      std::string("needs the datacenter count to divide ") + dim + ": " + dim + " = " +
                          std::to_string(size) + ", datacenters = " + std::to_string(d));
  const int64_t per_node = job.cluster.gpus_per_node;
  if (world % (d * per_node) != 0)
    throw_field_error("dc_placement", value,
                      "needs every datacenter to hold whole nodes: " + std::to_string(world) + " GPUs over " +
                          std::to_string(d) + " datacenters of " + std::to_string(per_node) + "-GPU nodes");
  // Physical GPUs of each datacenter in index order (place_gpus gives each world / D of them).
  const std::vector<GpuPlace> places = place_gpus(job.cluster, world);
  std::vector<std::vector<int64_t>> gpus(static_cast<size_t>(d));
  for (size_t g = 0; g < places.size(); ++g) gpus[static_cast<size_t>(places[g].dc)].push_back(static_cast<int64_t>(g));
  std::vector<size_t> next(static_cast<size_t>(d), 0);
  const int64_t per_dc = size / d;  // coordinates per datacenter
  for (int64_t r = 0; r < world; ++r) {
    const auto dc = static_cast<size_t>(cut_coord(placement, grid, r) / per_dc);
    TANDEM_CHECK_MSG(next[dc] < gpus[dc].size(), "datacenter " << dc << " has no GPU left for rank " << r);
    out[static_cast<size_t>(r)] = gpus[dc][next[dc]++];
  }
  return out;
}

bool is_identity(const std::vector<int64_t>& gpu_of_rank) {
  for (size_t r = 0; r < gpu_of_rank.size(); ++r)
    if (gpu_of_rank[r] != static_cast<int64_t>(r)) return false;
  return true;
}

}  // namespace tandem::sim
