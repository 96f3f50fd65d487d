// The (color, key) every rank passes to ncclCommSplit, and the point-to-point pairs, checked
// against ParallelGrid's groups for several layouts: no device and no MPI run needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "backends/cuda/nccl_comm.h"
#include "core/parallel_grid.h"

namespace tandem::cuda {
namespace {

struct Layout {
  const char* name;
  GridSizes sizes;
};

std::vector<Layout> layouts() {
  std::vector<Layout> out;
  auto add = [&](const char* name, int64_t world, int64_t tp, int64_t cp, int64_t ep, int64_t etp, int64_t pp,
                 const char* order = "tp-cp-ep-dp-pp") {
    GridSizes s;
    s.world = world;
    s.tp = tp;
    s.cp = cp;
    s.ep = ep;
    s.etp = etp;
    s.pp = pp;
    s.order = order;
    out.push_back({name, s});
  };
  add("single", 1, 1, 1, 1, 1, 1);
  add("tp2-pp2-dp2", 8, 2, 1, 1, 2, 2);
  add("tp-pp-dp order", 8, 2, 1, 1, 2, 2, "tp-pp-dp");
  add("cp2-pp2-dp2", 8, 1, 2, 1, 1, 2);
  add("tp2-cp2-pp2-dp2", 16, 2, 2, 1, 2, 2);
  add("tp2-ep2-etp1-pp2", 8, 2, 1, 2, 1, 2);
  add("ep4-pp2-dp4", 32, 2, 1, 4, 2, 2);
  add("pp4", 4, 1, 1, 1, 1, 4);
  return out;
}

TEST(NcclGroups, SplitsRebuildEveryGridGroupInMemberOrder) {
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.name);
    const ParallelGrid grid = ParallelGrid::create(l.sizes);
    // kind -> color -> key -> rank, from what every rank would pass to ncclCommSplit.
    std::map<ParallelGroup, std::map<int, std::map<int, int64_t>>> built;
    std::map<ParallelGroup, std::set<int64_t>> members;
    for (int64_t r = 0; r < grid.world_size(); ++r) {
      const auto splits = group_splits(grid, r);
      ASSERT_EQ(splits.size(), communicator_group_kinds().size());
      for (size_t i = 0; i < splits.size(); ++i) {
        const GroupSplit& s = splits[i];
        EXPECT_EQ(s.kind, communicator_group_kinds()[i]);   // every rank splits in the same order
        if (s.color < 0) {
          EXPECT_EQ(s.size, 0);
          continue;
        }
        const bool fresh = built[s.kind][s.color].emplace(s.key, r).second;
        EXPECT_TRUE(fresh) << to_string(s.kind) << ": two ranks with key " << s.key;
        members[s.kind].insert(r);
      }
    }
    for (ParallelGroup kind : communicator_group_kinds()) {
      SCOPED_TRACE(to_string(kind));
      const RankGroups expected = grid.groups(kind);
      ASSERT_EQ(built[kind].size(), expected.size());
      std::set<int64_t> in_groups;
      for (size_t g = 0; g < expected.size(); ++g) {
        const auto& by_key = built[kind][static_cast<int>(g)];
        std::vector<int64_t> got;
        for (const auto& [key, rank] : by_key) {
          EXPECT_EQ(key, static_cast<int>(got.size()));   // keys are 0..size-1
          got.push_back(rank);
        }
        EXPECT_EQ(got, expected[g]);
        in_groups.insert(expected[g].begin(), expected[g].end());
      }
      EXPECT_EQ(members[kind], in_groups);   // ranks outside every group passed NOCOLOR
    }
  }
}

TEST(NcclGroups, GroupSizesMatchTheGrid) {
  const ParallelGrid grid = ParallelGrid::create(layouts()[4].sizes);   // tp2-cp2-pp2-dp2
  for (int64_t r = 0; r < grid.world_size(); ++r)
    for (const GroupSplit& s : group_splits(grid, r)) {
      if (s.color < 0) continue;
      EXPECT_EQ(s.size, static_cast<int>(grid.group_of(r, s.kind).ranks.size()));
    }
}

TEST(NcclGroups, PointToPointPairsAgreeOnBothEnds) {
  for (const Layout& l : layouts()) {
    SCOPED_TRACE(l.name);
    const ParallelGrid grid = ParallelGrid::create(l.sizes);
    std::map<int64_t, std::set<std::pair<int64_t, int64_t>>> of;   // rank -> its pairs
    for (int64_t r = 0; r < grid.world_size(); ++r) {
      const auto pairs = p2p_pairs(grid, r);
      EXPECT_TRUE(std::is_sorted(pairs.begin(), pairs.end()));
      of[r] = {pairs.begin(), pairs.end()};
      EXPECT_EQ(of[r].size(), pairs.size());   // no duplicates
    }
    for (int64_t r = 0; r < grid.world_size(); ++r) {
      const auto pp = grid.group_of(r, ParallelGroup::Pp).ranks;
      const auto cp = grid.group_of(r, ParallelGroup::Cp).ranks;
      EXPECT_EQ(of[r].size(), 2 * (pp.size() - 1) + 2 * (cp.size() - 1));
      for (const auto& [from, to] : of[r]) {
        EXPECT_NE(from, to);
        EXPECT_TRUE(from == r || to == r);
        const int64_t other = from == r ? to : from;
        EXPECT_TRUE(of[other].count({from, to})) << from << "->" << to << " missing at rank " << other;
        const bool pipeline = std::count(pp.begin(), pp.end(), other) > 0;
        const bool context = std::count(cp.begin(), cp.end(), other) > 0;
        EXPECT_TRUE(pipeline || context);
      }
    }
  }
}

}  // namespace
}  // namespace tandem::cuda
