// Cost-free analysis: the closed-form makespans, bubbles and memory of the literature.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/check.h"
#include "schedules/analysis.h"
#include "schedules/registry.h"
#include "schedules/validate.h"

namespace tandem {
namespace {

constexpr int kPipelineSizes[] = {2, 3, 4, 8, 16};

ScheduleAnalysis analyze(const std::string& name, int p, int m, int v = 0, ActionCosts c = {}) {
  return analyze_schedule(build_schedule(name, ScheduleParams{p, m, v, 0}), c);
}

// Unit costs: F = B = W = 1, a non-split backward costs B + W = 2.
TEST(ScheduleAnalysis, GpipeAnd1f1bMakespanIs3TimesMPlusPMinus1) {
  for (int p : kPipelineSizes)
    for (int m = 1; m <= 4 * p; ++m)
      for (const char* name : {"gpipe", "1f1b"})
        EXPECT_DOUBLE_EQ(analyze(name, p, m).makespan, 3.0 * (m + p - 1)) << name << " p=" << p << " m=" << m;
}

TEST(ScheduleAnalysis, InterleavedMakespanIs3TimesMPlusPMinus1OverV) {
  for (int p : kPipelineSizes)
    for (int v = 2; v <= 4; ++v)
      for (int m = p; m <= 4 * p; m += p)
        EXPECT_NEAR(analyze("interleaved", p, m, v).makespan, 3.0 * (m + (p - 1.0) / v), 1e-9)
            << "p=" << p << " v=" << v << " m=" << m;
}

TEST(ScheduleAnalysis, ZbH1MakespanIs3MPlusPMinus1) {
  for (int p : kPipelineSizes)
    for (int m = p; m <= 4 * p; ++m) {
      const ScheduleAnalysis a = analyze("zb-h1", p, m);
      EXPECT_DOUBLE_EQ(a.makespan, 3.0 * m + p - 1) << "p=" << p << " m=" << m;
      // Bubble per rank (p-1)(F+B-W) with B the input-gradient part.
      for (double busy : a.busy) EXPECT_DOUBLE_EQ(a.makespan - busy, (p - 1) * (1.0 + 1.0 - 1.0));
    }
}

TEST(ScheduleAnalysis, PeakActivationsOnRankZero) {
  for (int p : kPipelineSizes)
    for (int m = p; m <= 4 * p; ++m) {
      EXPECT_DOUBLE_EQ(analyze("gpipe", p, m).peak_activations[0], m) << "p=" << p << " m=" << m;
      EXPECT_DOUBLE_EQ(analyze("1f1b", p, m).peak_activations[0], p) << "p=" << p << " m=" << m;
      EXPECT_DOUBLE_EQ(analyze("zb-h1", p, m).peak_activations[0], p) << "p=" << p << " m=" << m;
    }
}

// ZB-H2: every rank busy without a gap inside its window (a parallelogram), 2p-1 activations.
// ZB-V: the same with 1F1B's memory.
TEST(ScheduleAnalysis, ZbH2AndZbVHaveNoBubbleInsideTheirWindows) {
  for (int p : kPipelineSizes)
    for (int m = 2 * p; m <= 4 * p; ++m) {
      const ScheduleAnalysis h2 = analyze("zb-h2", p, m);
      EXPECT_NEAR(h2.interior_bubble_fraction, 0.0, 1e-12) << "p=" << p << " m=" << m;
      EXPECT_DOUBLE_EQ(h2.peak_activations[0], 2 * p - 1);
      EXPECT_DOUBLE_EQ(h2.makespan, 3.0 * m + p - 1);
      const ScheduleAnalysis zv = analyze("zb-v", p, m);
      EXPECT_NEAR(zv.interior_bubble_fraction, 0.0, 1e-12) << "p=" << p << " m=" << m;
      EXPECT_DOUBLE_EQ(zv.peak_activations[0], p);
    }
}

// DeepSeek-V3 report, Table 2: DualPipe bubble (p/2-1)(F&B + B - 3W), B the full backward,
// with 2x parameters per rank. Unit F = B = W = 1 (full backward 2); F&B from no overlap (3)
// to a perfect one (2). The bubble is that of the rank that waits most: makespan - busy.
TEST(ScheduleAnalysis, DualPipeBubbleMatchesTheReportAndParametersAreDoubled) {
  for (double fb : {3.0, 2.5, 2.0}) {
    for (int p : {2, 4, 8, 16}) {
      for (int m = 2 * p; m <= 4 * p; m += 2) {
        ActionCosts c;
        c.overlapped = fb;
        const ScheduleAnalysis a = analyze("dualpipe", p, m, 0, c);
        const double bubble = a.makespan - *std::min_element(a.busy.begin(), a.busy.end());
        EXPECT_NEAR(bubble, (p / 2.0 - 1) * (fb + 2.0 - 3.0), 1e-9) << "p=" << p << " m=" << m << " F&B=" << fb;
        for (double params : a.parameter_memory) EXPECT_DOUBLE_EQ(params, 2.0);
        EXPECT_LE(*std::max_element(a.peak_activations.begin(), a.peak_activations.end()), p + 1.0);
      }
    }
  }
}

// DualPipeV: the same formula for S = 2p stages of half size (F = W = 1/2, full B = 1).
TEST(ScheduleAnalysis, DualPipeVBubbleMatchesTheFormulaForTwicePStages) {
  for (double fb : {3.0, 2.5, 2.0}) {
    for (int p : {2, 3, 4, 8, 16}) {
      for (int m = 2 * p; m <= 4 * p; ++m) {
        ActionCosts c;
        c.overlapped = fb;
        const ScheduleAnalysis a = analyze("dualpipev", p, m, 0, c);
        const double bubble = a.makespan - *std::min_element(a.busy.begin(), a.busy.end());
        EXPECT_NEAR(bubble, (p - 1) * (fb + 2.0 - 3.0) / 2, 1e-9) << "p=" << p << " m=" << m << " F&B=" << fb;
      }
    }
  }
}

TEST(ScheduleAnalysis, CostsScaleActionsAndLatencyDelaysMessages) {
  ActionCosts c;
  c.forward = 2;
  c.backward = 3;
  c.weight = 1;
  // 1F1B with F=2, full B=4: makespan (m + p - 1)(F + B + W).
  EXPECT_DOUBLE_EQ(analyze("1f1b", 4, 8, 0, c).makespan, 11 * 6.0);
  c = ActionCosts{};
  c.p2p_latency = 0.5;
  // GPipe: the forward wave and the backward wave each cross p-1 links.
  EXPECT_DOUBLE_EQ(analyze("gpipe", 4, 8, 0, c).makespan, 33 + 2 * 3 * 0.5);
}

TEST(ScheduleAnalysis, DeadlockedScheduleIsRefused) {
  ComputeOrder order(2);
  order[0] = {{ActionKind::Forward, 0, 0, false}, {ActionKind::Backward, 0, 0, false},
              {ActionKind::Forward, 1, 0, false}, {ActionKind::Backward, 1, 0, false}};
  order[1] = {{ActionKind::Forward, 0, 0, false}, {ActionKind::Forward, 1, 0, false},
              {ActionKind::Backward, 0, 0, false}, {ActionKind::Backward, 1, 0, false}};
  EXPECT_THROW(analyze_schedule(make_schedule("broken", linear_layout(2, 2), order)), UserError);
}

// The analysis must take milliseconds for p = 64, m = 1024 (a few hundred thousand actions).
TEST(ScheduleAnalysis, LargePipelineIsFast) {
  for (const char* name : {"1f1b", "zb-h1", "interleaved", "zb-v", "dualpipe"}) {
    const Schedule s = build_schedule(name, ScheduleParams{64, 1024, 0, 0});
    const auto t0 = std::chrono::steady_clock::now();
    const ScheduleAnalysis a = analyze_schedule(s);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    size_t actions = 0;
    for (const auto& l : s.actions) actions += l.size();
    std::printf("[ timing ] %-12s p=64 m=1024: %zu actions analysed in %.1f ms (makespan %g)\n", name,
                actions, ms, a.makespan);
    EXPECT_LT(ms, 3000.0) << name;
  }
}

}  // namespace
}  // namespace tandem
