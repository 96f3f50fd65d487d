// Renderings: the ASCII timeline and the Chrome trace of a timed schedule.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "schedules/analysis.h"
#include "schedules/registry.h"
#include "schedules/timeline.h"

namespace tandem {
namespace {

TEST(ScheduleRender, OneFOneBTimeline) {
  const Schedule s = build_schedule("1f1b", ScheduleParams{4, 8, 0, 0});
  const std::string text = render_timeline(s, analyze_schedule(s), TimelineOptions{0, false});
  const std::string expected =
      "rank 0 | F0 F1 F2 F3 .  .  .  .  .  .  B0 -- F4 B1 -- F5 B2 -- F6 B3 -- F7 B4 -- .  B5 -- .  B6 -- .  B7 --\n"
      "rank 1 | .  F0 F1 F2 .  .  .  .  B0 -- F3 B1 -- F4 B2 -- F5 B3 -- F6 B4 -- F7 B5 -- .  B6 -- .  B7 -- .  . \n"
      "rank 2 | .  .  F0 F1 .  .  B0 -- F2 B1 -- F3 B2 -- F4 B3 -- F5 B4 -- F6 B5 -- F7 B6 -- .  B7 -- .  .  .  . \n"
      "rank 3 | .  .  .  F0 B0 -- F1 B1 -- F2 B2 -- F3 B3 -- F4 B4 -- F5 B5 -- F6 B6 -- F7 B7 -- .  .  .  .  .  . \n";
  EXPECT_EQ(text, expected);
}

TEST(ScheduleRender, ChunkLabelsAndTruncation) {
  const Schedule v = build_schedule("zb-v", ScheduleParams{2, 2, 0, 0});
  const ScheduleAnalysis a = analyze_schedule(v);
  const std::string text = render_timeline(v, a, TimelineOptions{4, true});
  EXPECT_NE(text.find("upper case chunk 0, lower case chunk 1"), std::string::npos) << text;
  EXPECT_NE(text.find("(first 4 of"), std::string::npos) << text;
  const Schedule il = build_schedule("interleaved", ScheduleParams{2, 2, 3, 0});
  EXPECT_EQ(action_label(il, il.actions[0][0]), "F0:0");
}

TEST(ScheduleRender, ChromeTraceHasOneEventPerComputeAction) {
  const Schedule s = build_schedule("zb-h1", ScheduleParams{4, 8, 0, 0});
  const nlohmann::json trace = chrome_trace(s, analyze_schedule(s));
  size_t complete = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X") continue;
    ++complete;
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    EXPECT_LE(e["tid"].get<int>(), 3);
  }
  EXPECT_EQ(complete, 4u * 8u * 3u);  // F, B and W of every microbatch on every rank
}

}  // namespace
}  // namespace tandem
