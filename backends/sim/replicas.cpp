// Which ranks the symmetry-reduced simulation plays (executor.h, ReplicaLayout).
#include <algorithm>
#include <functional>
#include <array>
#include <map>
#include <string>
#include <set>

#include "backends/sim/executor.h"
#include "core/check.h"

namespace tandem::sim {
namespace {

// Groups that stay inside one data-parallel block: the played block must contain them whole.
constexpr std::array<ParallelGroup, 11> kBlockGroups = {
    ParallelGroup::Tp,        ParallelGroup::Cp,          ParallelGroup::TpCp,
    ParallelGroup::ModelParallel, ParallelGroup::Pp,      ParallelGroup::Embedding,
    ParallelGroup::PositionEmbedding, ParallelGroup::Ep,  ParallelGroup::ExpertTp,
    ParallelGroup::ExpertTpEp, ParallelGroup::ExpertTpEpPp};
// The same without the expert-parallel groups: with symmetric experts (balanced routing) those are
// played one-sided, as data-parallel groups are.
constexpr std::array<ParallelGroup, 8> kBlockGroupsSymmetricExperts = {
    ParallelGroup::Tp,        ParallelGroup::Cp,          ParallelGroup::TpCp,
    ParallelGroup::ModelParallel, ParallelGroup::Pp,      ParallelGroup::Embedding,
    ParallelGroup::PositionEmbedding, ParallelGroup::ExpertTp};

std::vector<ParallelGroup> block_groups(bool symmetric_experts) {
  if (symmetric_experts) return {kBlockGroupsSymmetricExperts.begin(), kBlockGroupsSymmetricExperts.end()};
  return {kBlockGroups.begin(), kBlockGroups.end()};
}

ReplicaLayout every_rank(const ParallelGrid& grid) {
  ReplicaLayout layout;
  const int64_t world = grid.world_size();
  layout.played.resize(static_cast<size_t>(world));
  layout.image.resize(static_cast<size_t>(world));
  layout.preimage.resize(static_cast<size_t>(world));
  layout.copy.assign(static_cast<size_t>(world), 0);
  for (int64_t r = 0; r < world; ++r) {
    layout.played[static_cast<size_t>(r)] = r;
    layout.image[static_cast<size_t>(r)] = r;
    layout.preimage[static_cast<size_t>(r)] = static_cast<int32_t>(r);
  }
  return layout;
}

// All ranks whose dp coordinate is below `slices`.
std::set<int64_t> dp_block(const ParallelGrid& grid, int64_t slices) {
  std::set<int64_t> block;
  for (int64_t pp = 0; pp < grid.pp_size(); ++pp)
    for (int64_t dp = 0; dp < slices; ++dp)
      for (int64_t cp = 0; cp < grid.cp_size(); ++cp)
        for (int64_t tp = 0; tp < grid.tp_size(); ++tp) block.insert(grid.dense_rank({tp, cp, dp, pp}));
  return block;
}

// Adds the members of every block group of `block`'s ranks; returns the widest dp coordinate + 1.
int64_t close_block(const ParallelGrid& grid, std::set<int64_t>& block, const std::vector<ParallelGroup>& kinds) {
  std::vector<int64_t> todo(block.begin(), block.end());
  while (!todo.empty()) {
    const int64_t rank = todo.back();
    todo.pop_back();
    for (ParallelGroup kind : kinds) {
      const auto group = grid.find_group(rank, kind);
      if (!group) continue;
      for (int64_t member : group->ranks)
        if (block.insert(member).second) todo.push_back(member);
    }
  }
  int64_t slices = 0;
  for (int64_t r : block) slices = std::max(slices, grid.dense_coord(r).dp + 1);
  return slices;
}

int64_t shifted(const ParallelGrid& grid, int64_t rank, int64_t dp_shift, int64_t tp_shift = 0) {
  DenseCoord c = grid.dense_coord(rank);
  c.dp += dp_shift;
  c.tp += tp_shift;
  return grid.dense_rank(c);
}

// True when, for every `kinds` group of the played ranks, its members shifted by (dp_shift,
// tp_shift) form the group of the same kind of the shifted rank.
bool groups_shift(const ParallelGrid& grid, const std::vector<int64_t>& played, int64_t dp_shift, int64_t tp_shift,
                  const std::vector<ParallelGroup>& kinds) {
  for (int64_t rank : played) {
    for (ParallelGroup kind : kinds) {
      const auto group = grid.find_group(rank, kind);
      const auto image_group = grid.find_group(shifted(grid, rank, dp_shift, tp_shift), kind);
      if (group.has_value() != image_group.has_value()) return false;
      if (!group) continue;
      std::vector<int64_t> want;
      for (int64_t m : group->ranks) want.push_back(shifted(grid, m, dp_shift, tp_shift));
      std::vector<int64_t> got = image_group->ranks;
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      if (want != got) return false;
    }
  }
  return true;
}

// Fills image, preimage and copy of a layout whose played ranks and copies are set: image_of(i, c)
// is the rank that plays played[i]'s part in copy c. Every rank must be in some copy.
void fill_copies(ReplicaLayout& layout, int64_t world, const std::function<int64_t(size_t, int64_t)>& image_of) {
  const size_t n = layout.played.size();
  layout.image.resize(n * static_cast<size_t>(layout.copies));
  layout.preimage.assign(static_cast<size_t>(world), -1);
  layout.copy.assign(static_cast<size_t>(world), -1);
  for (int64_t c = 0; c < layout.copies; ++c)
    for (size_t i = 0; i < n; ++i) {
      const int64_t image = image_of(i, c);
      layout.image[static_cast<size_t>(c) * n + i] = image;
      layout.preimage[static_cast<size_t>(image)] = static_cast<int32_t>(i);
      layout.copy[static_cast<size_t>(image)] = static_cast<int32_t>(c);
    }
  for (int64_t r = 0; r < world; ++r)
    TANDEM_CHECK_MSG(layout.copy[static_cast<size_t>(r)] >= 0, "rank " << r << " is in no copy of the played ranks");
}

}  // namespace

ReplicaLayout replica_layout(const ParallelGrid& grid, bool all_ranks, std::string* why_not, bool symmetric_experts) {
  const std::vector<ParallelGroup> kinds = block_groups(symmetric_experts && grid.ep_size() > 1);
  auto fallback = [&](const std::string& why) {
    if (why_not) *why_not = why;
    return every_rank(grid);
  };
  if (all_ranks) return fallback("every rank requested");
  if (grid.dp_size() == 1) return fallback("one data-parallel replica: nothing to reduce");
  int64_t slices = 1;
  std::set<int64_t> block = dp_block(grid, slices);
  for (;;) {
    const int64_t wanted = close_block(grid, block, kinds);
    if (wanted == slices) break;  // block is then exactly the slices' ranks
    slices = wanted;
    if (slices >= grid.dp_size()) return fallback("the groups of one data-parallel replica span all replicas");
    block = dp_block(grid, slices);
  }
  if (grid.dp_size() % slices != 0)
    return fallback("the played block (" + std::to_string(slices) + " dp slices) does not divide DP");
  ReplicaLayout layout;
  layout.played.assign(block.begin(), block.end());
  layout.copies = grid.dp_size() / slices;
  if (!groups_shift(grid, layout.played, slices, 0, kinds))
    return fallback("the groups of the other data-parallel replicas are not images of the played one");
  fill_copies(layout, grid.world_size(),
              [&](size_t i, int64_t c) { return shifted(grid, layout.played[i], c * slices); });
  return layout;
}

bool replicas_respect_datacenters(const ReplicaLayout& layout, const std::vector<int64_t>& dc_of_rank,
                                  std::string* why_not) {
  for (int64_t c = 1; c < layout.copies; ++c) {
    std::map<int64_t, int64_t> forward, backward;  // played rank's datacenter <-> its image's
    for (size_t i = 0; i < layout.played.size(); ++i) {
      const int64_t from = dc_of_rank[static_cast<size_t>(layout.played[i])];
      const int64_t to = dc_of_rank[static_cast<size_t>(layout.image_of(i, c))];
      if (forward.emplace(from, to).first->second != to || backward.emplace(to, from).first->second != from) {
        if (why_not)
          *why_not = "the datacenter placement cuts data-parallel replica " + std::to_string(c) +
                     " differently from the played one (its ranks at the WAN boundary are not images of played ones)";
        return false;
      }
    }
  }
  return true;
}

namespace {

// True when shifting every played rank along tp maps its tp-free groups onto groups.
bool tp_free_groups_shift(const ParallelGrid& grid, const std::vector<int64_t>& played) {
  const std::vector<ParallelGroup> kinds = {ParallelGroup::Cp,  ParallelGroup::Pp,        ParallelGroup::Dp,
                                            ParallelGroup::DpCp, ParallelGroup::Embedding, ParallelGroup::PositionEmbedding};
  for (int64_t t = 1; t < grid.tp_size(); ++t)
    if (!groups_shift(grid, played, 0, t, kinds)) return false;
  return true;
}

}  // namespace

ReplicaLayout narrow_to_tensor_rank_zero(const ParallelGrid& grid, const ReplicaLayout& layout) {
  const int64_t tp = grid.tp_size();
  if (!layout.reduced() || tp == 1) return layout;
  ReplicaLayout out;
  std::vector<size_t> old_index;   // of out.played[i] in layout.played
  for (size_t i = 0; i < layout.played.size(); ++i)
    if (grid.dense_coord(layout.played[i]).tp == 0) out.played.push_back(layout.played[i]), old_index.push_back(i);
  if (!tp_free_groups_shift(grid, out.played)) return layout;
  out.copies = layout.copies * tp;
  out.tp_copies = tp;
  // copy = dp copy x TP + tp shift; copy 0 is the played ranks themselves.
  fill_copies(out, grid.world_size(), [&](size_t i, int64_t copy) {
    return shifted(grid, layout.image_of(old_index[i], copy / tp), 0, copy % tp);
  });
  return out;
}

}  // namespace tandem::sim
