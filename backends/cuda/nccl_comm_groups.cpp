// Host logic of the NCCL communicator (nccl_comm.h): which group splits and point-to-point
// pairs every rank creates. No NCCL, MPI or device here, so tests run anywhere.
#include <limits>
#include <set>

#include "backends/cuda/nccl_comm.h"
#include "core/check.h"

namespace tandem::cuda {

std::vector<ParallelGroup> communicator_group_kinds() {
  return {ParallelGroup::Tp,        ParallelGroup::Cp,           ParallelGroup::Dp,
          ParallelGroup::DpCp,      ParallelGroup::TpCp,         ParallelGroup::TpDp,
          ParallelGroup::TpDpCp,    ParallelGroup::ModelParallel, ParallelGroup::Pp,
          ParallelGroup::Embedding, ParallelGroup::PositionEmbedding, ParallelGroup::Ep,
          ParallelGroup::ExpertTp,  ParallelGroup::ExpertTpEp,   ParallelGroup::ExpertTpEpPp,
          ParallelGroup::ExpertDp};
}

namespace {

int to_int(int64_t v, const char* what) {
  TANDEM_CHECK_MSG(v >= 0 && v <= std::numeric_limits<int>::max(), what << " = " << v << " exceeds an int");
  return static_cast<int>(v);
}

}  // namespace

std::vector<GroupSplit> group_splits(const ParallelGrid& grid, int64_t rank) {
  std::vector<GroupSplit> out;
  for (ParallelGroup kind : communicator_group_kinds()) {
    GroupSplit s;
    s.kind = kind;
    if (const auto m = grid.find_group(rank, kind)) {
      s.color = to_int(m->group_index, "group index");
      s.key = to_int(m->index_in_group, "group rank");
      s.size = to_int(static_cast<int64_t>(m->ranks.size()), "group size");
    }
    out.push_back(s);
  }
  return out;
}

std::vector<std::pair<int64_t, int64_t>> p2p_pairs(const ParallelGrid& grid, int64_t rank) {
  std::set<std::pair<int64_t, int64_t>> pairs;
  for (ParallelGroup kind : {ParallelGroup::Pp, ParallelGroup::Cp}) {
    const GroupMembership m = grid.group_of(rank, kind);
    for (int64_t other : m.ranks) {
      if (other == rank) continue;
      pairs.emplace(rank, other);
      pairs.emplace(other, rank);
    }
  }
  return {pairs.begin(), pairs.end()};
}

}  // namespace tandem::cuda
