// A schedule added outside the built-in list: this file plus one registry line
// (TANDEM_REGISTER_SCHEDULE below) make it usable like any built-in schedule.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/check.h"
#include "schedules/analysis.h"
#include "schedules/registry.h"
#include "schedules/validate.h"

namespace {

// Toy schedule "one-at-a-time": each microbatch goes all the way forward and back before the
// next one starts. No overlap at all: makespan m * p * (F + full B).
tandem::Schedule build_one_at_a_time(const tandem::ScheduleParams& p) {
  tandem::ComputeOrder order(p.pp);
  for (int r = 0; r < p.pp; ++r)
    for (int mb = 0; mb < p.microbatches; ++mb) {
      order[r].push_back({tandem::ActionKind::Forward, mb, 0, false});
      order[r].push_back({tandem::ActionKind::Backward, mb, 0, false});
    }
  return tandem::make_schedule("one-at-a-time", tandem::linear_layout(p.pp, p.microbatches), order);
}

tandem::ScheduleInfo one_at_a_time_info() {
  return tandem::ScheduleInfo{"one-at-a-time", "toy: one microbatch in flight", "test fixture",
                              tandem::ChunkRule{1, 1, 1}, [](const tandem::ScheduleParams&) {},
                              build_one_at_a_time};
}

}  // namespace

TANDEM_REGISTER_SCHEDULE(one_at_a_time, one_at_a_time_info())

namespace tandem {
namespace {

TEST(ScheduleRegistry, ToyScheduleRegisteredFromATestFile) {
  const auto names = schedule_names();
  ASSERT_NE(std::find(names.begin(), names.end(), "one-at-a-time"), names.end());
  EXPECT_EQ(names.front(), "gpipe");  // built-ins first
  const Schedule s = build_schedule("one-at-a-time", ScheduleParams{4, 3, 0, 0});
  EXPECT_TRUE(validate_schedule(s).ok()) << validate_schedule(s).summary();
  const ScheduleAnalysis a = analyze_schedule(s);
  EXPECT_DOUBLE_EQ(a.makespan, 3 * 4 * 3.0);
  EXPECT_DOUBLE_EQ(a.peak_activations[0], 1.0);
}

TEST(ScheduleRegistry, BuiltinsAndErrors) {
  for (const char* name : {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"})
    EXPECT_NE(lookup_schedule(name), nullptr) << name;
  EXPECT_THROW(register_schedule(one_at_a_time_info()), UserError);  // name taken
  EXPECT_THROW(find_schedule("zb-h3"), UserError);
  EXPECT_EQ(resolve_params(find_schedule("interleaved"), ScheduleParams{4, 8, 0, 0}).chunks, 2);
  EXPECT_EQ(resolve_params(find_schedule("zb-v"), ScheduleParams{4, 8, 0, 0}).chunks, 2);
}

TEST(ScheduleRegistry, SchedulesArePureFunctions) {
  for (const std::string& name : schedule_names()) {
    const ScheduleParams p{4, 8, 0, 0};
    const Schedule a = build_schedule(name, p), b = build_schedule(name, p);
    EXPECT_EQ(a.actions, b.actions) << name;
  }
}

}  // namespace
}  // namespace tandem
