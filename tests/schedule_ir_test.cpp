// Schedule IR: layouts, implied communication, layer assignment, text and JSON forms.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/schedule.h"
#include "schedules/registry.h"

namespace tandem {
namespace {

TEST(ScheduleLayout, LinearInterleavedVAndBidirectional) {
  const StageLayout lin = linear_layout(4, 8);
  EXPECT_EQ(lin.num_stages, 4);
  EXPECT_EQ(lin.paths[0][2].rank, 2);

  const StageLayout il = interleaved_layout(4, 3, 8);  // stage c*p + r on rank r chunk c
  EXPECT_EQ(il.num_stages, 12);
  EXPECT_EQ(il.chunk_stage[1][2], 9);
  EXPECT_EQ(il.paths[0][9].rank, 1);
  EXPECT_EQ(il.paths[0][9].chunk, 2);

  const StageLayout v = v_layout(4, 8);  // chunk 0 = stage r, chunk 1 = stage 2p-1-r
  EXPECT_EQ(v.num_stages, 8);
  EXPECT_EQ(v.chunk_stage[0][1], 7);
  EXPECT_EQ(v.chunk_stage[3][0], 3);
  EXPECT_EQ(v.chunk_stage[3][1], 4);
  EXPECT_EQ(v.paths[0][4].rank, 3);

  const StageLayout bi = bidirectional_layout(4, 8);
  EXPECT_EQ(bi.paths.size(), 2u);
  EXPECT_EQ(bi.microbatch_path[3], 0);
  EXPECT_EQ(bi.microbatch_path[4], 1);
  EXPECT_EQ(bi.paths[1][0].rank, 3);  // direction 1 enters at the last rank
  EXPECT_EQ(bi.chunk_stage[0][1], 3);
}

TEST(ScheduleIr, MakeScheduleInsertsImpliedCommunication) {
  // Two ranks, one microbatch, 1F1B-like.
  ComputeOrder order(2);
  order[0] = {{ActionKind::Forward, 0, 0, false}, {ActionKind::Backward, 0, 0, false}};
  order[1] = {{ActionKind::Forward, 0, 0, false},
              {ActionKind::Backward, 0, 0, false},
              {ActionKind::BackwardWeight, 0, 0, false}};
  const Schedule s = make_schedule("toy", linear_layout(2, 1), order);
  ASSERT_EQ(s.actions[0].size(), 4u);
  EXPECT_EQ(s.actions[0][0].kind, ActionKind::Forward);
  EXPECT_EQ(s.actions[0][1].kind, ActionKind::SendActivation);
  EXPECT_EQ(s.actions[0][1].peer, 1);
  EXPECT_EQ(s.actions[0][2].kind, ActionKind::RecvGradient);
  EXPECT_EQ(s.actions[0][3].kind, ActionKind::Backward);
  EXPECT_FALSE(s.actions[0][3].weight_deferred);  // full backward
  ASSERT_EQ(s.actions[1].size(), 5u);
  EXPECT_EQ(s.actions[1][0].kind, ActionKind::RecvActivation);
  EXPECT_EQ(s.actions[1][0].peer, 0);
  EXPECT_EQ(s.actions[1][2].kind, ActionKind::Backward);
  EXPECT_TRUE(s.actions[1][2].weight_deferred);  // a W follows on the same rank
  EXPECT_EQ(s.actions[1][3].kind, ActionKind::SendGradient);
  EXPECT_EQ(s.actions[1][4].kind, ActionKind::BackwardWeight);
}

TEST(ScheduleIr, VShapeTurnNeedsNoMessage) {
  const Schedule s = build_schedule("zb-v", ScheduleParams{2, 1, 0, 0});
  // Rank 1 computes stages 1 and 2 of microbatch 0 back to back: no send/recv between them.
  for (const Action& a : s.actions[1]) {
    if (a.kind == ActionKind::SendActivation) {
      EXPECT_NE(a.stage, 1);
    }
    if (a.kind == ActionKind::RecvActivation) {
      EXPECT_NE(a.stage, 2);
    }
  }
  EXPECT_EQ(s.location(0, 2).rank, 1);
  EXPECT_EQ(s.location(0, 3).rank, 0);
}

TEST(ScheduleIr, FusedPairsReceiveBeforeAndSendAfter) {
  const Schedule s = build_schedule("dualpipe", ScheduleParams{4, 8, 0, 0});
  bool seen = false;
  for (const auto& list : s.actions) {
    for (size_t i = 0; i + 1 < list.size(); ++i) {
      if (!list[i].fused_with_next) continue;
      seen = true;
      EXPECT_EQ(list[i].kind, ActionKind::Forward);
      EXPECT_EQ(list[i + 1].kind, ActionKind::Backward);  // the partner follows directly
      EXPECT_FALSE(list[i + 1].weight_deferred);
    }
  }
  EXPECT_TRUE(seen);
}

TEST(ScheduleIr, ParameterShareIsDoubleForDualPipe) {
  const Schedule dp = build_schedule("dualpipe", ScheduleParams{8, 16, 0, 0});
  const Schedule v = build_schedule("dualpipev", ScheduleParams{8, 16, 0, 0});
  const Schedule one = build_schedule("1f1b", ScheduleParams{8, 16, 0, 0});
  for (int r = 0; r < 8; ++r) {
    EXPECT_DOUBLE_EQ(dp.parameter_share(r), 2.0);   // stage r and stage p-1-r
    EXPECT_DOUBLE_EQ(v.parameter_share(r), 1.0);    // two half stages
    EXPECT_DOUBLE_EQ(one.parameter_share(r), 1.0);
  }
  EXPECT_EQ(dp.stage_of(1, 0), 1);
  EXPECT_EQ(dp.stage_of(1, 1), 6);
}

TEST(ScheduleLayers, EvenAndUnevenSplits) {
  EXPECT_EQ(split_layers(32, 4), (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(split_layers(30, 4, 6, 6), (std::vector<int>{6, 9, 9, 6}));
  EXPECT_EQ(split_layers(10, 2, 4, 6), (std::vector<int>{4, 6}));
  EXPECT_THROW(split_layers(31, 4), UserError);
  EXPECT_THROW(split_layers(30, 4, 5, 0), UserError);  // 25 left for 3 stages
  try {
    split_layers(31, 4);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("num_layers = 31"), std::string::npos) << e.what();
  }
  // Megatron: first/last rank layers divided over the rank's chunks; indexed by stage c*p + r.
  EXPECT_EQ(megatron_split_layers(16, 4, 2, 2, 2), (std::vector<int>{1, 3, 3, 1, 1, 3, 3, 1}));
  EXPECT_THROW(megatron_split_layers(16, 4, 2, 3, 3), UserError);
}

TEST(ScheduleLayers, AssignLayersScalesStageWork) {
  Schedule s = build_schedule("1f1b", ScheduleParams{4, 4, 0, 0});
  assign_layers(s, split_layers(30, 4, 6, 6));
  EXPECT_EQ(s.stage_layers[1].begin, 6);
  EXPECT_EQ(s.stage_layers[1].end, 15);
  EXPECT_DOUBLE_EQ(s.stage_work[0], 6.0 * 4 / 30);
  EXPECT_DOUBLE_EQ(s.stage_work[1], 9.0 * 4 / 30);
  EXPECT_THROW(assign_layers(s, {1, 2, 3}), UserError);
}

TEST(ScheduleIr, DescribeAndJson) {
  const Schedule s = build_schedule("zb-h1", ScheduleParams{2, 2, 0, 0});
  EXPECT_EQ(describe(s.actions[0][0]), "Forward(mb 0, chunk 0, stage 0)");
  const nlohmann::json j = schedule_to_json(s);
  EXPECT_EQ(j["num_ranks"], 2);
  EXPECT_EQ(j["actions"][0][0]["kind"], "Forward");
  EXPECT_EQ(j["actions"][0][1]["kind"], "SendActivation");
  EXPECT_EQ(j["actions"][0][1]["peer"], 1);
  EXPECT_EQ(j["chunk_stage"][1][0], 1);
}

}  // namespace
}  // namespace tandem
