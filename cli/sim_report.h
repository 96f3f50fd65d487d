#pragma once
// Terminal rendering of simulation results and a progress line on stderr.
#include <functional>
#include <string>

#include "backends/sim/simulator.h"
#include "core/job.h"

namespace tandem::cli {

// Iteration time, throughput, MFU/HFU, memory and the time breakdown as a table.
std::string simulation_text(const Job& job, const sim::SimResult& result);

// A progress callback that draws "[#####     ]  50% message" on stderr once a run has taken more
// than two seconds (a new line per 10% when stderr is not a terminal). finish_progress() ends it.
std::function<void(double, const std::string&)> stderr_progress();
void finish_progress();

}  // namespace tandem::cli
