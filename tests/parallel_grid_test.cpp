// ParallelGrid: Megatron's rank layout (RankGenerator + masked-orthogonal groups).
// Expected groups below are worked out by hand from Megatron's rule: with the order's digits
// d0 (fastest) .. d4, rank = sum coord[d] * stride[d], stride = prefix product of sizes.
#include "core/parallel_grid.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/check.h"

namespace tandem {
namespace {

constexpr ParallelGroup kAllKinds[] = {
    ParallelGroup::Tp,
    ParallelGroup::Cp,
    ParallelGroup::Dp,
    ParallelGroup::DpCp,
    ParallelGroup::TpCp,
    ParallelGroup::TpDp,
    ParallelGroup::TpDpCp,
    ParallelGroup::ModelParallel,
    ParallelGroup::Pp,
    ParallelGroup::Embedding,
    ParallelGroup::PositionEmbedding,
    ParallelGroup::Ep,
    ParallelGroup::ExpertTp,
    ParallelGroup::ExpertTpEp,
    ParallelGroup::ExpertTpEpPp,
    ParallelGroup::ExpertDp,
};

GridSizes sizes(int64_t world, int64_t tp, int64_t cp, int64_t ep, int64_t etp, int64_t pp,
                std::string order = "tp-cp-ep-dp-pp") {
  GridSizes s;
  s.world = world;
  s.tp = tp;
  s.cp = cp;
  s.ep = ep;
  s.etp = etp;
  s.pp = pp;
  s.order = std::move(order);
  return s;
}

// Creating the grid must throw UserError whose message holds every one of `parts`.
void expect_user_error(const GridSizes& s, const std::vector<std::string>& parts) {
  try {
    ParallelGrid::create(s);
    ADD_FAILURE() << "no UserError for order " << s.order;
  } catch (const UserError& e) {
    const std::string what = e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    }
  }
}

TEST(ParallelGrid, MaskedOrthogonalWorkedExample) {
  // 8 GPUs, order tp-pp-dp, 2-2-2: rank = tp + 2 pp + 4 dp.
  const ParallelGrid g = ParallelGrid::create(sizes(8, 2, 1, 1, 2, 2, "tp-pp-dp"));
  EXPECT_EQ(g.dp_size(), 2);
  EXPECT_EQ(g.dp_groups(), (RankGroups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(g.tp_groups(), (RankGroups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(g.pp_groups(), (RankGroups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(g.dense_coord(5), (DenseCoord{.tp = 1, .cp = 0, .dp = 1, .pp = 0}));
  EXPECT_EQ(g.dense_coord(6), (DenseCoord{.tp = 0, .cp = 0, .dp = 1, .pp = 1}));
  EXPECT_EQ(g.order(), "tp-pp-dp");
}

TEST(ParallelGrid, MegatronDefaultOrderTp2Cp2Pp2Dp2) {
  // Order tp-cp-ep-dp-pp, ep digit of size 1: rank = tp + 2 cp + 4 dp + 8 pp.
  const ParallelGrid g = ParallelGrid::create(sizes(16, 2, 2, 1, 2, 2));
  EXPECT_EQ(g.dp_size(), 2);
  EXPECT_EQ(g.tp_groups(),
            (RankGroups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(g.cp_groups(),
            (RankGroups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(g.dp_groups(),
            (RankGroups{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}));
  // Members ordered by cp (faster digit) then dp.
  EXPECT_EQ(g.dp_cp_groups(),
            (RankGroups{{0, 2, 4, 6}, {1, 3, 5, 7}, {8, 10, 12, 14}, {9, 11, 13, 15}}));
  EXPECT_EQ(g.pp_groups(),
            (RankGroups{{0, 8}, {1, 9}, {2, 10}, {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}}));
  EXPECT_EQ(g.tp_cp_groups(),
            (RankGroups{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}));
  EXPECT_EQ(g.model_parallel_groups(),
            (RankGroups{{0, 1, 8, 9}, {2, 3, 10, 11}, {4, 5, 12, 13}, {6, 7, 14, 15}}));
  EXPECT_EQ(g.embedding_groups(), g.pp_groups());  // PP = 2: first and last are the group
  EXPECT_EQ(g.position_embedding_groups(), (RankGroups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(g.dense_coord(13), (DenseCoord{.tp = 1, .cp = 0, .dp = 1, .pp = 1}));
  EXPECT_EQ(g.dense_rank({.tp = 1, .cp = 1, .dp = 0, .pp = 1}), 11);

  const GroupMembership m = g.group_of(13, ParallelGroup::DpCp);
  EXPECT_EQ(m.ranks, (std::vector<int64_t>{9, 11, 13, 15}));
  EXPECT_EQ(m.group_index, 3);
  EXPECT_EQ(m.index_in_group, 2);
}

TEST(ParallelGrid, TokenSpecIsOrderFree) {
  const ParallelGrid g = ParallelGrid::create(sizes(16, 2, 2, 1, 2, 2));
  EXPECT_EQ(g.groups("cp-dp", GridSide::Dense), g.dp_cp_groups());
  EXPECT_EQ(g.groups("pp-tp", GridSide::Dense), g.model_parallel_groups());
  EXPECT_EQ(g.groups("TP", GridSide::Dense), g.tp_groups());
  EXPECT_EQ(g.group_of(6, "dp-cp", GridSide::Dense).ranks, (std::vector<int64_t>{0, 2, 4, 6}));
  // The whole world is one group of all digits.
  EXPECT_EQ(g.groups("tp-cp-ep-dp-pp", GridSide::Dense).size(), 1u);
}

TEST(ParallelGrid, MoeExpertFolding) {
  // world 8, TP 2, EP 4, ETP 1, PP 1: DP = 4, expert DP = 8 / 4 = 2.
  // Expert numbering: rank = etp + ep + 4 edp (etp and cp digits of size 1).
  const ParallelGrid g = ParallelGrid::create(sizes(8, 2, 1, 4, 1, 1));
  EXPECT_EQ(g.dp_size(), 4);
  EXPECT_EQ(g.expert_dp_size(), 2);
  EXPECT_EQ(g.tp_groups(), (RankGroups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(g.dp_groups(), (RankGroups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(g.ep_groups(), (RankGroups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(g.expert_tp_groups(), (RankGroups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(g.expert_tp_ep_groups(), (RankGroups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(g.expert_dp_groups(), (RankGroups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(g.expert_coord(5), (ExpertCoord{.etp = 0, .ep = 1, .edp = 1, .pp = 0}));
  EXPECT_EQ(g.expert_rank({.etp = 0, .ep = 3, .edp = 1, .pp = 0}), 7);
}

TEST(ParallelGrid, MoeWithExpertTensorParallelAndPipeline) {
  // world 16, TP 2, EP 4, ETP 2, PP 2: DP = 4, expert DP = 1.
  // Expert numbering: rank = etp + 2 ep + 8 pp; dense: rank = tp + 2 dp + 8 pp.
  const ParallelGrid g = ParallelGrid::create(sizes(16, 2, 1, 4, 2, 2));
  EXPECT_EQ(g.expert_dp_size(), 1);
  EXPECT_EQ(g.ep_groups(),
            (RankGroups{{0, 2, 4, 6}, {1, 3, 5, 7}, {8, 10, 12, 14}, {9, 11, 13, 15}}));
  EXPECT_EQ(g.expert_tp_groups(), g.tp_groups());
  EXPECT_EQ(g.expert_tp_ep_groups(),
            (RankGroups{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}}));
  EXPECT_EQ(g.groups(ParallelGroup::ExpertTpEpPp).size(), 1u);
  EXPECT_EQ(g.expert_dp_groups().size(), 16u);
  EXPECT_EQ(g.groups("pp", GridSide::Expert), g.pp_groups());
}

TEST(ParallelGrid, EmbeddingGroupsWithFourStages) {
  // world 16, TP 2, PP 4, DP 2: rank = tp + 2 dp + 4 pp.
  const ParallelGrid g = ParallelGrid::create(sizes(16, 2, 1, 1, 2, 4));
  EXPECT_EQ(g.pp_groups(),
            (RankGroups{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
  EXPECT_EQ(g.embedding_groups(), (RankGroups{{0, 12}, {1, 13}, {2, 14}, {3, 15}}));
  EXPECT_EQ(g.position_embedding_groups(), (RankGroups{{0}, {1}, {2}, {3}}));
  EXPECT_FALSE(g.find_group(5, ParallelGroup::Embedding).has_value());
  EXPECT_FALSE(g.find_group(14, ParallelGroup::PositionEmbedding).has_value());
  const GroupMembership last = g.group_of(14, ParallelGroup::Embedding);
  EXPECT_EQ(last.ranks, (std::vector<int64_t>{2, 14}));
  EXPECT_EQ(last.group_index, 2);
  EXPECT_EQ(last.index_in_group, 1);
  EXPECT_EQ(g.group_of(3, ParallelGroup::PositionEmbedding).ranks, (std::vector<int64_t>{3}));
}

TEST(ParallelGrid, EmbeddingGroupsWithoutPipeline) {
  const ParallelGrid g = ParallelGrid::create(sizes(4, 2, 1, 1, 2, 1));
  EXPECT_EQ(g.embedding_groups(), (RankGroups{{0}, {1}, {2}, {3}}));
  EXPECT_EQ(g.group_size(ParallelGroup::Embedding), 1);
}

// Every rank sits in exactly one group of each kind; groups, group_of, group_at and the
// coordinates agree with each other.
void check_partition(const ParallelGrid& g, ParallelGroup kind) {
  SCOPED_TRACE(to_string(kind));
  const RankGroups all = g.groups(kind);
  ASSERT_EQ(static_cast<int64_t>(all.size()), g.num_groups(kind));
  std::vector<int> seen(static_cast<size_t>(g.world_size()), 0);
  for (size_t gi = 0; gi < all.size(); ++gi) {
    ASSERT_EQ(static_cast<int64_t>(all[gi].size()), g.group_size(kind));
    EXPECT_EQ(g.group_at(kind, static_cast<int64_t>(gi)), all[gi]);
    for (size_t j = 0; j < all[gi].size(); ++j) {
      const int64_t r = all[gi][j];
      ++seen[static_cast<size_t>(r)];
      const GroupMembership m = g.group_of(r, kind);
      EXPECT_EQ(m.group_index, static_cast<int64_t>(gi));
      EXPECT_EQ(m.index_in_group, static_cast<int64_t>(j));
      EXPECT_EQ(m.ranks, all[gi]);
    }
  }
  const bool embedding =
      kind == ParallelGroup::Embedding || kind == ParallelGroup::PositionEmbedding;
  for (int64_t r = 0; r < g.world_size(); ++r) {
    const int64_t stage = g.dense_coord(r).pp;
    const bool holds =
        !embedding || stage == 0 || (kind == ParallelGroup::Embedding && stage == g.pp_size() - 1);
    EXPECT_EQ(seen[static_cast<size_t>(r)], holds ? 1 : 0) << "rank " << r;
  }
}

void check_coordinates(const ParallelGrid& g) {
  for (int64_t r = 0; r < g.world_size(); ++r) {
    const DenseCoord d = g.dense_coord(r);
    const ExpertCoord e = g.expert_coord(r);
    ASSERT_EQ(g.dense_rank(d), r);
    ASSERT_EQ(g.expert_rank(e), r);
    EXPECT_EQ(d.pp, e.pp);
    // A rank's index in a one-dimension group is its coordinate on that dimension.
    EXPECT_EQ(g.group_of(r, ParallelGroup::Tp).index_in_group, d.tp);
    EXPECT_EQ(g.group_of(r, ParallelGroup::Cp).index_in_group, d.cp);
    EXPECT_EQ(g.group_of(r, ParallelGroup::Dp).index_in_group, d.dp);
    EXPECT_EQ(g.group_of(r, ParallelGroup::Pp).index_in_group, d.pp);
    EXPECT_EQ(g.group_of(r, ParallelGroup::ExpertTp).index_in_group, e.etp);
    EXPECT_EQ(g.group_of(r, ParallelGroup::Ep).index_in_group, e.ep);
    EXPECT_EQ(g.group_of(r, ParallelGroup::ExpertDp).index_in_group, e.edp);
  }
}

TEST(ParallelGrid, EveryRankInExactlyOneGroupPerKind) {
  const std::vector<GridSizes> shapes = {
      sizes(8, 2, 1, 1, 2, 2, "tp-pp-dp"),
      sizes(16, 2, 2, 1, 2, 2),
      sizes(64, 2, 2, 4, 1, 2),
      sizes(48, 2, 1, 3, 2, 2),
      sizes(32, 4, 1, 8, 1, 1),
      sizes(24, 1, 3, 3, 1, 4, "pp-tp-cp-ep-dp"),
      sizes(96, 4, 2, 2, 4, 3, "tp-cp-ep-pp-dp"),
      sizes(7, 1, 1, 7, 1, 1),
  };
  for (const GridSizes& s : shapes) {
    SCOPED_TRACE("world " + std::to_string(s.world) + " order " + s.order);
    const ParallelGrid g = ParallelGrid::create(s);
    for (ParallelGroup kind : kAllKinds) check_partition(g, kind);
    check_coordinates(g);
  }
}

TEST(ParallelGrid, LargeWorldIsArithmetic) {
  // 16,384 ranks: TP 8, CP 2, PP 8 -> DP 128; EP 8, ETP 1 -> expert DP 256.
  const ParallelGrid g = ParallelGrid::create(sizes(16384, 8, 2, 8, 1, 8));
  EXPECT_EQ(g.dp_size(), 128);
  EXPECT_EQ(g.expert_dp_size(), 256);
  const DenseCoord c = g.dense_coord(12345);
  // Default order: rank = tp + 8 cp + 16 dp + 2048 pp.
  EXPECT_EQ(
      c,
      (DenseCoord{
          .tp = 12345 % 8, .cp = (12345 / 8) % 2, .dp = (12345 / 16) % 128, .pp = 12345 / 2048}));
  EXPECT_EQ(g.dense_rank(c), 12345);
  EXPECT_EQ(g.group_of(12345, ParallelGroup::DpCp).ranks.size(), 256u);
  EXPECT_EQ(g.group_of(12345, ParallelGroup::ExpertDp).ranks.size(), 256u);
  check_partition(g, ParallelGroup::DpCp);
  check_partition(g, ParallelGroup::ExpertTpEp);
  check_partition(g, ParallelGroup::Embedding);
}

TEST(ParallelGrid, FromJob) {
  Job job;
  job.world_size = 32;
  job.parallel.tensor_model_parallel_size = 4;
  job.parallel.pipeline_model_parallel_size = 2;
  job.parallel.expert_model_parallel_size = 2;
  job.parallel.expert_tensor_parallel_size = 0;  // = TP
  const ParallelGrid g = ParallelGrid::from_job(job);
  EXPECT_EQ(g.expert_tp_size(), 4);
  EXPECT_EQ(g.dp_size(), 4);
  EXPECT_EQ(g.expert_dp_size(), 2);

  job.world_size = 0;  // default TP * PP * CP
  job.parallel.expert_model_parallel_size = 1;
  EXPECT_EQ(ParallelGrid::from_job(job).world_size(), 8);

  job.world_size = 32;
  job.parallel.data_parallel_size = 3;
  try {
    ParallelGrid::from_job(job);
    ADD_FAILURE() << "no UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("data_parallel_size = 3"), std::string::npos) << e.what();
  }
}

TEST(ParallelGrid, BadSizesNameTheField) {
  expect_user_error(sizes(0, 1, 1, 1, 1, 1), {"world_size = 0", "at least 1"});
  expect_user_error(sizes(8, 0, 1, 1, 1, 1), {"tensor_model_parallel_size = 0"});
  expect_user_error(sizes(8, 1, -2, 1, 1, 1), {"context_parallel_size = -2"});
  expect_user_error(sizes(8, 1, 1, 0, 1, 1), {"expert_model_parallel_size = 0"});
  expect_user_error(sizes(8, 1, 1, 1, -1, 1), {"expert_tensor_parallel_size = -1"});
  expect_user_error(sizes(8, 1, 1, 1, 1, 0), {"pipeline_model_parallel_size = 0"});
}

TEST(ParallelGrid, IndivisibleWorldNamesTheProduct) {
  expect_user_error(sizes(12, 2, 2, 1, 2, 2),
                    {"world_size = 12",
                     "tensor_model_parallel_size * context_parallel_size * "
                     "pipeline_model_parallel_size = 2 * 2 * 2 = 8"});
  expect_user_error(sizes(8, 2, 1, 3, 1, 1),
                    {"world_size = 8",
                     "expert_tensor_parallel_size * expert_model_parallel_size * "
                     "pipeline_model_parallel_size = 1 * 3 * 1 = 3"});
}

TEST(ParallelGrid, BadOrderNamesTheToken) {
  expect_user_error(sizes(8, 2, 1, 1, 2, 2, "tp-xp-dp-pp"),
                    {"order = tp-xp-dp-pp", "unknown token 'xp'"});
  expect_user_error(sizes(8, 2, 1, 1, 2, 2, ""), {"order = ", "unknown token ''"});
  expect_user_error(sizes(8, 2, 1, 1, 2, 2, "tp-cp-tp-dp-pp"),
                    {"token 'tp' appears more than once"});
  expect_user_error(sizes(8, 2, 2, 1, 2, 1, "tp-dp-pp"),
                    {"order = tp-dp-pp", "token 'cp' is missing", "context_parallel_size is 2"});
  expect_user_error(sizes(8, 2, 1, 1, 2, 1, "tp-cp-ep-pp"),
                    {"token 'dp' is missing", "data_parallel_size"});
  expect_user_error(sizes(8, 1, 1, 2, 1, 1, "tp-cp-dp-pp"),
                    {"token 'ep' is missing", "expert_model_parallel_size is 2"});
}

TEST(ParallelGrid, DenseAndExpertPipelinesMustAgree) {
  // pp not last and DP 4 vs expert DP 2 (Megatron asserts the same).
  expect_user_error(sizes(16, 2, 1, 4, 1, 2, "tp-pp-cp-ep-dp"),
                    {"order = tp-pp-cp-ep-dp", "data-parallel size (4)", "(2)"});
  // Same DP sizes, but pp strides differ (dense 2, expert 4): PP groups would differ.
  expect_user_error(sizes(16, 2, 2, 1, 4, 2, "tp-pp-cp-ep-dp"), {"order", "pipeline groups"});
}

TEST(ParallelGrid, BadTokenSpecNamesTheSpec) {
  const ParallelGrid g = ParallelGrid::create(sizes(8, 2, 1, 1, 2, 2));
  EXPECT_THROW(g.groups("tp-xx", GridSide::Dense), UserError);
  try {
    g.groups("dp-dp", GridSide::Expert);
    ADD_FAILURE() << "no UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("token_spec = dp-dp"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem
