#pragma once
// Text and trace renderings of a timed schedule.
//
// ASCII timeline: one row per rank, one cell per time quantum (the shortest compute action), in
// the style of the zero-bubble and DualPipe papers. A cell holds the label of the action that
// starts in it (F forward, B backward, W weight gradient, then the microbatch; for two chunks the
// letter is upper case on chunk 0 and lower case on chunk 1, for more chunks ":c" follows),
// "--" while the action continues, "." when the rank is idle.
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/schedule.h"
#include "schedules/analysis.h"

namespace tandem {

struct TimelineOptions {
  int max_cells = 0;        // 0: no limit; otherwise the rows stop after this many cells
  bool show_legend = true;
};

std::string render_timeline(const Schedule& schedule, const ScheduleAnalysis& analysis,
                            const TimelineOptions& options = {});

// Label of a compute action as used in the timeline ("F3", "b12", "W0:2").
std::string action_label(const Schedule& schedule, const Action& action);

// Chrome trace-event JSON (opens in Perfetto / chrome://tracing): one thread per rank, one
// complete event per compute action; one cost unit is written as `unit_us` microseconds.
nlohmann::json chrome_trace(const Schedule& schedule, const ScheduleAnalysis& analysis,
                            double unit_us = 1000.0);

}  // namespace tandem
