#pragma once
// Files the simulator writes besides its result: a Chrome-trace timeline and an op trace.
#include <string>
#include <vector>

#include "backends/sim/executor.h"
#include "core/parallel_grid.h"
#include "program/program.h"

namespace tandem::sim {

// Chrome trace JSON (opens in Perfetto / chrome://tracing): one process per played rank named by
// its coordinates, one thread per stream, a complete event ("ph": "X") per instruction that takes
// time, timestamps and durations in microseconds. outcomes[i] must hold the timeline of
// played[i] (ExecutorOptions::record_timeline). UserError when the file cannot be written.
void write_chrome_trace(const std::string& path, const ParallelGrid& grid, const std::vector<PlayedRank>& played,
                        const std::vector<RankOutcome>& outcomes);

// Per played rank a "# rank R" line, then op_trace_line() of each instruction in program order
// (peers renamed for the rank).
void write_op_trace(const std::string& path, const ParallelGrid& grid, const std::vector<PlayedRank>& played);

}  // namespace tandem::sim
