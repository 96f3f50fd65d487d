// Checkpoint/restart goodput (models/goodput.h): Daly's worked examples, Young's interval, the
// expected wall time against a Monte-Carlo replay of the same failure model, and determinism.
#include "models/goodput.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/check.h"
#include "models/failure_rates.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

constexpr double kMin = 60.0, kHour = 3600.0;

// Daly 2006, Figs. 3-5: delta = 5 min, R = 10 min, T_s = 500 h; M = 24 h, 6 h and 15 min give
// tau_opt = 117 min, 57 min and 9.1 min.
TEST(Goodput, DalysWorkedExamples) {
  EXPECT_NEAR(daly_interval(5 * kMin, 24 * kHour) / kMin, 117, 0.5);
  EXPECT_NEAR(daly_interval(5 * kMin, 6 * kHour) / kMin, 57, 0.5);
  EXPECT_NEAR(daly_interval(5 * kMin, 15 * kMin) / kMin, 9.1, 0.05);
  // Beyond delta >= 2M the optimum is M.
  EXPECT_DOUBLE_EQ(daly_interval(40 * kMin, 15 * kMin), 15 * kMin);
  // Young's first-order interval: sqrt(2 delta M) = 120 min for delta = 5 min, M = 24 h.
  EXPECT_NEAR(young_interval(5 * kMin, 24 * kHour) / kMin, 120, 1e-9);
}

TEST(Goodput, WallTimeFormulaAgreesWithMonteCarlo) {
  const double solve = 500 * kHour, delta = 5 * kMin, restart = 10 * kMin;
  for (double mtbf : {24 * kHour, 6 * kHour, 15 * kMin}) {
    const double tau = daly_interval(delta, mtbf);
    const double expected = daly_wall_time(solve, tau, delta, restart, mtbf);
    EXPECT_GT(expected, solve * (tau + delta) / tau);   // failures cost time beyond the checkpoints
    const GoodputTrials t = simulate_goodput(solve, tau, delta, restart, mtbf, 400, 7);
    EXPECT_NEAR(t.mean_wall_s / expected, 1.0, 0.02) << "M = " << mtbf / kHour << " h";
    EXPECT_LE(t.p10_wall_s, t.p50_wall_s);
    EXPECT_LE(t.p50_wall_s, t.p90_wall_s);
    // Failures: about wall time / M.
    EXPECT_NEAR(t.mean_failures / (t.mean_wall_s / mtbf), 1.0, 0.05);
  }
  // The optimum is a minimum of the wall time.
  const double m = 6 * kHour, tau = daly_interval(delta, m);
  EXPECT_LT(daly_wall_time(solve, tau, delta, restart, m), daly_wall_time(solve, 0.5 * tau, delta, restart, m));
  EXPECT_LT(daly_wall_time(solve, tau, delta, restart, m), daly_wall_time(solve, 2.0 * tau, delta, restart, m));
}

TEST(Goodput, SystemMtbfAddsComponentRatesAndTrialsAreDeterministic) {
  // 16,384 GPUs at 50,000 h each and 2,048 nodes at 100,000 h: 0.35 failures per hour.
  const double m = system_mtbf_s({{16384, 50000}, {2048, 100000}, {0, 10}, {5, 0}});
  EXPECT_NEAR(kHour / m, 16384.0 / 50000 + 2048.0 / 100000, 1e-12);
  EXPECT_TRUE(std::isinf(system_mtbf_s({})));
  const GoodputTrials a = simulate_goodput(100 * kHour, kHour, 5 * kMin, 10 * kMin, 3 * kHour, 50, 11);
  const GoodputTrials b = simulate_goodput(100 * kHour, kHour, 5 * kMin, 10 * kMin, 3 * kHour, 50, 11);
  EXPECT_EQ(a.mean_wall_s, b.mean_wall_s);
  EXPECT_EQ(a.p90_wall_s, b.p90_wall_s);
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// A rates file: units per GPU, node and job, the range ends and planned maintenance.
TEST(FailureRates, FileGivesComponentsRangesAndPlannedMaintenance) {
  const std::string path = write_temp("rates.json", R"({"description": "test",
    "components": [{"name": "GPU", "per": "gpu", "mtbf_hours": 40000, "mtbf_hours_range": [30000, 60000], "source": "a"},
                   {"name": "host", "per": "node", "mtbf_hours": 100000, "source": "b"},
                   {"name": "software", "per": "job", "mtbf_hours": 100, "source": "c"}],
    "planned": {"per_day": 0.5, "minutes": 20, "source": "d"}})");
  const FailureRates r = load_failure_rates(path);
  ASSERT_EQ(r.components.size(), 3u);
  EXPECT_EQ(units_of(r.components[0], 1024, 128), 1024);
  EXPECT_EQ(units_of(r.components[1], 1024, 128), 128);
  EXPECT_EQ(units_of(r.components[2], 1024, 128), 1);
  EXPECT_EQ(r.components[1].mtbf_low_hours, 100000);   // no range: the value itself
  EXPECT_DOUBLE_EQ(r.planned.per_day, 0.5);
  // System rate per hour: 1024/40000 + 128/100000 + 1/100; the low end of the GPU range fails more.
  const double central = system_mtbf_s(system_components(r, 1024, 128));
  EXPECT_NEAR(kHour / central, 1024.0 / 40000 + 128.0 / 100000 + 1.0 / 100, 1e-12);
  EXPECT_NEAR(kHour / system_mtbf_s(system_components(r, 1024, 128, -1)), 1024.0 / 30000 + 128.0 / 100000 + 0.01, 1e-12);
  EXPECT_NEAR(kHour / system_mtbf_s(system_components(r, 1024, 128, +1)), 1024.0 / 60000 + 128.0 / 100000 + 0.01, 1e-12);
}

TEST(FailureRates, BadFilesNameTheField) {
  const auto message = [](const std::string& text) {
    try {
      load_failure_rates(write_temp("bad.json", text));
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(R"({"components": []})").find("components"), std::string::npos);
  EXPECT_NE(message(R"({"components": [{"name": "GPU", "per": "gpu", "mtbf_hours": -1, "source": "x"}]})")
                .find("components[0].mtbf_hours = -1"), std::string::npos);
  EXPECT_NE(message(R"({"components": [{"name": "GPU", "per": "gpu", "mtbf_hours": 5}]})").find("components[0].source: required"),
            std::string::npos);
  EXPECT_NE(message(R"({"components": [{"name": "GPU", "per": "gpu", "mtbf_hours": 5, "source": "x", "mtbf": 3}]})")
                .find("components[0].mtbf"), std::string::npos);
  EXPECT_NE(message(R"({"components": [{"name": "GPU", "per": "gpu", "mtbf_hours": 5, "source": "x"}],
                        "planned": {"per_day": 1, "source": "x"}})").find("planned.minutes: required"), std::string::npos);
}

}  // namespace
}  // namespace tandem
