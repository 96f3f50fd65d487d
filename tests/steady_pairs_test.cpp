// Steady-state F/B pairs (--overlap-moe-expert-parallel-comm): the paired schedules stay valid,
// keep every unit of work and pair only a forward with the backward of another (microbatch, chunk).
#include <gtest/gtest.h>

#include <map>
#include <tuple>

#include "schedules/registry.h"
#include "schedules/steady_pairs.h"
#include "schedules/validate.h"

namespace tandem {
namespace {

std::map<std::tuple<int, int, int, int>, int> work(const Schedule& s) {
  std::map<std::tuple<int, int, int, int>, int> count;   // (rank, kind, microbatch, chunk)
  for (int r = 0; r < s.num_ranks(); ++r)
    for (const Action& a : s.actions[static_cast<size_t>(r)])
      if (is_compute(a.kind)) ++count[{r, int(a.kind), a.microbatch, a.chunk}];
  return count;
}

TEST(SteadyPairs, InterleavedAnd1f1bStayValidWithEveryUnitOfWork) {
  for (const auto& [name, p, m, v] : {std::tuple{"interleaved", 4, 8, 2}, std::tuple{"interleaved", 8, 16, 4},
                                      std::tuple{"interleaved", 2, 12, 3}, std::tuple{"1f1b", 1, 6, 0}}) {
    const Schedule s = build_schedule(name, ScheduleParams{p, m, v, 0});
    int pairs = -1;
    const Schedule paired = pair_steady_state(s, &pairs);
    const ValidationReport report = validate_schedule(paired);
    EXPECT_TRUE(report.ok()) << name << " p" << p << " m" << m << ": " << report.summary();
    EXPECT_GT(pairs, 0) << name << " p" << p;
    EXPECT_EQ(work(paired), work(s)) << name;
    int fused = 0;
    for (const auto& rank : paired.actions)
      for (size_t i = 0; i < rank.size(); ++i) {
        if (!rank[i].fused_with_next) continue;
        ++fused;
        size_t j = i + 1;
        while (j < rank.size() && !is_compute(rank[j].kind)) ++j;
        ASSERT_LT(j, rank.size());
        EXPECT_EQ(rank[i].kind, ActionKind::Forward);
        EXPECT_EQ(rank[j].kind, ActionKind::Backward);
        EXPECT_FALSE(rank[i].microbatch == rank[j].microbatch && rank[i].chunk == rank[j].chunk);
        EXPECT_FALSE(rank[j].fused_with_next);
      }
    EXPECT_EQ(fused, pairs);
  }
}

// Without pipelining (PP 1) every forward after the first is paired with the previous backward.
TEST(SteadyPairs, OneStagePairsEachForwardWithThePreviousMicrobatchsBackward) {
  const Schedule s = build_schedule("1f1b", ScheduleParams{1, 5, 0, 0});
  int pairs = 0;
  pair_steady_state(s, &pairs);
  EXPECT_EQ(pairs, 4);
}

}  // namespace
}  // namespace tandem
