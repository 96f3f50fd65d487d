// Regression harness: the whole (schedule, p, m, v) grid against tests/schedule_goldens.json.
// Regenerate after an intended change with `tandem schedule check --all --update-goldens`.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "schedules/grid_check.h"

namespace tandem {
namespace {

TEST(ScheduleGolden, GridMatchesGoldenValues) {
  const std::string path = std::string(TANDEM_SOURCE_DIR) + "/tests/schedule_goldens.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  const nlohmann::json golden = nlohmann::json::parse(in);
  const std::vector<GridOutcome> outcomes = run_grid(schedule_names());
  const GoldenComparison cmp = compare_with_golden(outcomes, golden);
  EXPECT_GT(cmp.compared, 2000u);
  for (size_t i = 0; i < cmp.problems.size() && i < 20; ++i) ADD_FAILURE() << cmp.problems[i];
  EXPECT_TRUE(cmp.ok()) << cmp.problems.size() << " problem(s)";
}

}  // namespace
}  // namespace tandem
