#pragma once
// Cost-free analysis: times a schedule by list scheduling over its dependency DAG with fixed
// per-action costs, no simulator. Every rank runs its actions in order, one at a time; an action
// starts when the previous action of its rank and all its dependencies have finished.
#include <optional>
#include <vector>

#include "core/schedule.h"

namespace tandem {

// Costs of one action on a stage of stage_work 1 (1/p of the model); scaled by stage_work.
struct ActionCosts {
  double forward = 1;         // F
  double backward = 1;        // B: input-gradient part
  double weight = 1;          // W: weight-gradient part; a full backward costs B + W
  // F&B: a forward and a full backward fused with fused_with_next, run overlapped.
  // Unset: no overlap, the pair costs the sum of its parts.
  std::optional<double> overlapped;
  double p2p_latency = 0;     // added between a send and its receive
};

struct ActionTiming {
  double start = 0;
  double end = 0;
};

struct ScheduleAnalysis {
  double makespan = 0;             // last end over all ranks (all ranks start at 0)
  double bubble_fraction = 0;      // 1 - sum(busy) / (ranks * makespan)
  // Idle time inside each rank's own window [first start, last end], summed, over sum of windows:
  // the bubble left when iterations overlap (ZB-H2's parallelogram has none).
  double interior_bubble_fraction = 0;
  std::vector<double> busy;                 // [rank] sum of compute time
  std::vector<double> first_start;          // [rank]
  std::vector<double> last_end;             // [rank]
  std::vector<double> peak_activations;     // [rank] units of one microbatch through 1/p of the model
  std::vector<double> parameter_memory;     // [rank] units of 1/p of the model's parameters
  std::vector<std::vector<ActionTiming>> timing;  // [rank][action]
};

// Cost of a compute action under `costs` (fused pairs: see analyze_schedule). 0 for messages.
double action_cost(const Schedule& schedule, const Action& action, const ActionCosts& costs);

// Throws UserError when the schedule deadlocks (run validate_schedule for the details).
// The two actions of a fused pair share [start, start + F&B]; for display, timing splits that
// window between them in proportion to their unfused costs.
ScheduleAnalysis analyze_schedule(const Schedule& schedule, const ActionCosts& costs = {});

}  // namespace tandem
