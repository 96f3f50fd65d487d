// Validation: every built-in schedule is valid over the grid, bad parameters are rejected with a
// message naming the field and the value, and broken fixtures are reported precisely.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "core/check.h"
#include "schedules/grid_check.h"
#include "schedules/registry.h"
#include "schedules/schedule_util.h"
#include "schedules/validate.h"

namespace tandem {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// p in {2,3,4,8,16}, m in 1..4p, v in 1..4: every accepted combination validates, and every
// rejected one says why, naming the field and its value.
TEST(ScheduleValidate, EveryScheduleValidatesOnTheGrid) {
  for (const std::string& name : schedule_names()) {
    size_t accepted = 0;
    for (const GridPoint& point : schedule_grid(find_schedule(name))) {
      const GridOutcome o = run_grid_point(point);
      if (!o.accepted) {
        const ScheduleParams& p = point.params;
        const bool names_field = contains(o.rejection, "pp = " + std::to_string(p.pp)) ||
                                 contains(o.rejection, "microbatches = " + std::to_string(p.microbatches)) ||
                                 contains(o.rejection, "chunks = " + std::to_string(p.chunks)) ||
                                 contains(o.rejection, "group_size = ");
        EXPECT_TRUE(names_field) << golden_key(point) << ": " << o.rejection;
        continue;
      }
      ++accepted;
      EXPECT_TRUE(o.errors.empty()) << golden_key(point) << ": " << o.errors.front();
    }
    EXPECT_GT(accepted, 0u) << name;
  }
}

std::string rejection(const std::string& name, ScheduleParams p) {
  try {
    build_schedule(name, p);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(ScheduleValidate, InvalidCombinationsAreRejectedWithClearMessages) {
  EXPECT_TRUE(contains(rejection("dualpipe", {3, 12, 0, 0}), "pp = 3: dualpipe needs an even number"));
  EXPECT_TRUE(contains(rejection("dualpipe", {4, 9, 0, 0}), "microbatches = 9"));
  EXPECT_TRUE(contains(rejection("dualpipe", {4, 6, 0, 0}), ">= 2*pp = 8"));
  EXPECT_TRUE(contains(rejection("dualpipev", {4, 7, 0, 0}), "microbatches = 7: dualpipev needs at least 2*pp = 8"));
  EXPECT_TRUE(contains(rejection("interleaved", {4, 8, 1, 0}), "chunks = 1: interleaved takes 2.."));
  EXPECT_TRUE(contains(rejection("interleaved", {4, 3, 2, 0}), "microbatches = 3: interleaved needs at least pp = 4"));
  EXPECT_TRUE(contains(rejection("interleaved", {4, 6, 2, 0}), "the last group has 2 microbatches, fewer than pp = 4"));
  EXPECT_TRUE(contains(rejection("interleaved", {4, 6, 2, 3}), "group_size = 3"));
  EXPECT_TRUE(contains(rejection("zb-v", {4, 8, 3, 0}), "chunks = 3: zb-v takes exactly 2 chunks"));
  EXPECT_TRUE(contains(rejection("1f1b", {4, 8, 2, 0}), "chunks = 2"));
  EXPECT_TRUE(contains(rejection("gpipe", {0, 8, 0, 0}), "pp = 0"));
  EXPECT_TRUE(contains(rejection("1f1b", {4, 8, 0, 5}), "group_size = 5: 1f1b has no microbatch groups"));
  EXPECT_TRUE(contains(rejection("no-such", {4, 8, 0, 0}), "schedule = no-such: unknown; known schedules: gpipe"));
}

// Megatron allows m not divisible by p for the interleaved schedule when the microbatch group
// size leaves a last group of 0 or >= p microbatches.
TEST(ScheduleValidate, InterleavedWithMicrobatchesNotAMultipleOfPp) {
  for (auto [p, m, g] : {std::tuple{4, 6, 6}, std::tuple{4, 9, 5}, std::tuple{8, 13, 13}, std::tuple{3, 7, 4}}) {
    const Schedule s = build_schedule("interleaved", ScheduleParams{p, m, 2, g});
    const ValidationReport r = validate_schedule(s);
    EXPECT_TRUE(r.ok()) << "p=" << p << " m=" << m << " g=" << g << "\n" << r.summary();
  }
}

// A two-rank schedule whose first rank runs F0 B0 F1 B1 while the second runs F0 F1 B0 B1:
// rank 0 waits for the gradient of microbatch 0 before sending the activation of microbatch 1
// that rank 1 needs first. Classic cross-rank deadlock.
Schedule broken_fixture() {
  ComputeOrder order(2);
  using sched::bwd;
  using sched::fwd;
  order[0] = {fwd(0), bwd(0), fwd(1), bwd(1)};
  order[1] = {fwd(0), fwd(1), bwd(0), bwd(1)};
  return make_schedule("broken", linear_layout(2, 2), order);
}

TEST(ScheduleValidate, BrokenFixtureIsReportedAsDeadlockedNamingRankAndAction) {
  const ValidationReport r = validate_schedule(broken_fixture());
  ASSERT_FALSE(r.ok());
  const ValidationIssue* rank0 = nullptr;
  const ValidationIssue* rank1 = nullptr;
  bool cycle = false;
  for (const ValidationIssue& i : r.errors) {
    ASSERT_EQ(i.kind, IssueKind::Deadlock) << i.message;
    if (i.rank == 0) rank0 = &i;
    if (i.rank == 1) rank1 = &i;
    cycle = cycle || contains(i.message, "dependency cycle");
  }
  ASSERT_NE(rank0, nullptr) << r.summary();
  ASSERT_NE(rank1, nullptr) << r.summary();
  // Rank 0 blocks on the gradient of microbatch 0; rank 1 on the activation of microbatch 1.
  EXPECT_EQ(rank0->microbatch, 0);
  EXPECT_TRUE(contains(rank0->message, "rank 0, action #2 RecvGradient(mb 0, chunk 0, stage 0) from rank 1"))
      << rank0->message;
  EXPECT_EQ(rank1->microbatch, 1);
  EXPECT_TRUE(contains(rank1->message, "rank 1, action #2 RecvActivation(mb 1, chunk 0, stage 1) from rank 0"))
      << rank1->message;
  EXPECT_TRUE(contains(rank1->message, "waits for rank 0, action #5 SendActivation(mb 1")) << rank1->message;
  EXPECT_TRUE(cycle) << r.summary();
}

TEST(ScheduleValidate, ReceiveMovedAfterItsUseIsALocalDeadlock) {
  Schedule s = build_schedule("1f1b", ScheduleParams{2, 2, 0, 0});
  auto& list = s.actions[1];
  ASSERT_EQ(list[0].kind, ActionKind::RecvActivation);
  std::swap(list[0], list[1]);  // Forward before its input arrives
  const ValidationReport r = validate_schedule(s);
  ASSERT_FALSE(r.ok());
  bool found = false;
  for (const ValidationIssue& i : r.errors)
    found = found || (i.kind == IssueKind::Deadlock && i.rank == 1 && i.action_index == 0 &&
                      contains(i.message, "rank 1, action #0 Forward(mb 0, chunk 0, stage 1)") &&
                      contains(i.message, "needs this rank's action #1 RecvActivation") &&
                      contains(i.message, "ordered after it"));
  EXPECT_TRUE(found) << r.summary();
}

TEST(ScheduleValidate, MissingDuplicatedAndMisplacedWork) {
  Schedule s = build_schedule("zb-h1", ScheduleParams{2, 3, 0, 0});
  // Drop the last BackwardWeight of rank 0 and duplicate its first Forward.
  auto& list = s.actions[0];
  for (size_t i = list.size(); i-- > 0;)
    if (list[i].kind == ActionKind::BackwardWeight) {
      list.erase(list.begin() + static_cast<long>(i));
      break;
    }
  list.push_back(list.front());
  const ValidationReport r = validate_schedule(s);
  bool missing = false, duplicate = false;
  for (const ValidationIssue& i : r.errors) {
    missing = missing || (i.kind == IssueKind::MissingWork && contains(i.message, "missing BackwardWeight of microbatch 2"));
    duplicate = duplicate || (i.kind == IssueKind::DuplicateWork && i.rank == 0 &&
                              contains(i.message, "Forward(mb 0, chunk 0, stage 0): duplicate of rank 0, action #0"));
  }
  EXPECT_TRUE(missing) << r.summary();
  EXPECT_TRUE(duplicate) << r.summary();

  // Stage and chunk disagree.
  Schedule u = build_schedule("1f1b", ScheduleParams{2, 1, 0, 0});
  u.actions[1][1].stage = 0;
  EXPECT_TRUE(contains(validate_schedule(u).summary(), "chunk 0 of this rank holds stage 1"))
      << validate_schedule(u).summary();

  // DualPipe: microbatch 2 travels in the reverse direction; rank 0 chunk 0 cannot compute it.
  Schedule d = build_schedule("dualpipe", ScheduleParams{2, 4, 0, 0});
  ASSERT_EQ(d.actions[0][0].kind, ActionKind::Forward);
  ASSERT_EQ(d.actions[0][0].chunk, 0);
  d.actions[0][0].microbatch = 2;
  EXPECT_TRUE(contains(validate_schedule(d).summary(),
                       "rank 0, action #0 Forward(mb 2, chunk 0, stage 0): microbatch 2 computes "
                       "stage 0 on rank 1 chunk 1, not here"))
      << validate_schedule(d).summary();
}

TEST(ScheduleValidate, UnmatchedCommunication) {
  Schedule s = build_schedule("1f1b", ScheduleParams{2, 2, 0, 0});
  auto& list = s.actions[1];
  for (size_t i = 0; i < list.size(); ++i)
    if (list[i].kind == ActionKind::RecvActivation && list[i].microbatch == 1) {
      list.erase(list.begin() + static_cast<long>(i));
      break;
    }
  const ValidationReport r = validate_schedule(s);
  bool found = false;
  for (const ValidationIssue& i : r.errors)
    found = found || (i.kind == IssueKind::UnmatchedComm && i.rank == 0 && i.microbatch == 1 &&
                      contains(i.message, "SendActivation(mb 1, chunk 0, stage 0) to rank 1: rank 1 never receives it"));
  EXPECT_TRUE(found) << r.summary();

  Schedule t = build_schedule("1f1b", ScheduleParams{2, 1, 0, 0});
  t.actions[0][1].peer = 0;  // the activation goes to rank 1, not rank 0
  EXPECT_TRUE(contains(validate_schedule(t).summary(), "the peer is rank 1 chunk 0, not rank 0")) << validate_schedule(t).summary();
}

TEST(ScheduleValidate, PeakLiveActivationsPerRank) {
  const ValidationReport r = validate_schedule(build_schedule("1f1b", ScheduleParams{4, 8, 0, 0}));
  EXPECT_EQ(r.peak_live_chunks, (std::vector<int>{4, 3, 2, 1}));
  const ValidationReport v = validate_schedule(build_schedule("zb-v", ScheduleParams{4, 8, 0, 0}));
  // 2p chunks of half a stage each on rank 0: p stage-activations, as 1F1B.
  EXPECT_EQ(v.peak_live_chunks[0], 8);
  EXPECT_DOUBLE_EQ(v.peak_activations[0], 4.0);
}

}  // namespace
}  // namespace tandem
