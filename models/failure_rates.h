#pragma once
// Failure rates of a system's components, read from a file that states each rate and its source,
// and the interruptions they add up to over a run.
//
// File (JSON):
//   {"description": "...",
//    "components": [{"name": "GPU", "per": "gpu", "mtbf_hours": 43008,
//                    "mtbf_hours_range": [32256, 64512], "source": "..."}, ...],
//    "planned": {"per_day": 0.5, "minutes": 30, "source": "..."}}          optional
//   per: "gpu" (one unit per GPU of the job), "node" (per node), "job" (one unit: software, the
//   scheduler, ...). mtbf_hours is one unit's mean time between interrupts; the optional range is
//   what the source allows (low, high); without one the range is the value itself.
//   planned: maintenance interrupts the operators schedule (firmware, upgrades, changes to the
//   run): per_day of them, each keeping the job down for `minutes` (restart included); the run
//   checkpoints before each, so no work is lost.
// Every unit fails independently with an exponential clock: the system's rate is the sum of
// count_i / MTBF_i (models/goodput.h).
#include <string>
#include <vector>

#include "models/goodput.h"

namespace tandem {

struct RatedComponent {
  std::string name;
  std::string per;               // "gpu" | "node" | "job"
  double mtbf_hours = 0;         // one unit
  double mtbf_low_hours = 0;     // range the source allows (low <= mtbf <= high)
  double mtbf_high_hours = 0;
  std::string source;
};

struct PlannedMaintenance {
  double per_day = 0;            // interrupts per day of wall time
  double minutes = 0;            // downtime of one, restart included
  std::string source;
};

struct FailureRates {
  std::string path;
  std::string description;
  std::vector<RatedComponent> components;
  PlannedMaintenance planned;
};

// UserError naming the file and the field on a missing or malformed file, an unknown key, a
// `per` other than gpu/node/job, a non-positive MTBF or a range that does not hold the value.
FailureRates load_failure_rates(const std::string& path);

// Units of a component in a job of `gpus` GPUs on `nodes` nodes.
double units_of(const RatedComponent& c, double gpus, double nodes);

// The system's components for system_mtbf_s() at the stated MTBFs (which = 0), the low ends of
// the ranges (which < 0: more failures) or the high ends (which > 0).
std::vector<FailureComponent> system_components(const FailureRates& rates, double gpus, double nodes, int which = 0);

}  // namespace tandem
