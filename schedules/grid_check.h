#pragma once
// Regression harness: runs every schedule over a grid of (p, m, v), validates each accepted
// point, times it with unit costs and compares makespan, bubble fraction and peak activations
// (and which points are rejected) with golden values kept in tests/schedule_goldens.json.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "schedules/registry.h"

namespace tandem {

struct GridPoint {
  std::string schedule;
  ScheduleParams params;
};

struct GridOutcome {
  GridPoint point;
  bool accepted = false;
  std::string rejection;             // the UserError message when not accepted
  std::vector<std::string> errors;   // validation errors (first few) of an accepted point
  size_t warnings = 0;
  double makespan = 0;               // unit costs F = B = W = 1
  double bubble_fraction = 0;
  std::vector<double> peak_activations;
  bool valid() const { return accepted && errors.empty(); }
};

// p in {2, 3, 4, 8, 16}, m in 1..4p, v in the schedule's chunk range within 1..4 plus the first
// value outside it (so the rejection is covered); interleaved also with group_size = m.
std::vector<GridPoint> schedule_grid(const ScheduleInfo& info);
GridOutcome run_grid_point(const GridPoint& point);
std::vector<GridOutcome> run_grid(const std::vector<std::string>& schedules);

// "zb-h1 p=4 m=8 v=1" (+ " g=N" with a group size).
std::string golden_key(const GridPoint& point);
// {"format": 1, "entries": {key: {"accepted": false} or {makespan, bubble_fraction,
// peak_activations}}}; invalid points are left out (they fail the check anyway).
nlohmann::json outcomes_to_golden(const std::vector<GridOutcome>& outcomes);

// The golden document as text: one entry per line, so that diffs show which points changed.
std::string golden_text(const nlohmann::json& golden);

struct GoldenComparison {
  size_t compared = 0;
  std::vector<std::string> problems;  // invalid points, mismatches, points missing in the goldens
  bool ok() const { return problems.empty(); }
};
// Compares the outcomes with the golden entries of the same keys (relative tolerance).
GoldenComparison compare_with_golden(const std::vector<GridOutcome>& outcomes,
                                     const nlohmann::json& golden, double tolerance = 1e-9);

}  // namespace tandem
