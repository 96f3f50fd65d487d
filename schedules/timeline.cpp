#include "schedules/timeline.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem {

std::string action_label(const Schedule& s, const Action& a) {
  char letter = short_code(a.kind);
  if (s.num_chunks() == 2 && a.chunk == 1) letter = static_cast<char>(std::tolower(letter));
  std::string label = std::string(1, letter) + std::to_string(a.microbatch);
  if (s.num_chunks() > 2) label += ":" + std::to_string(a.chunk);
  return label;
}

namespace {

// Shortest compute duration: one cell of the timeline.
double time_quantum(const Schedule& s, const ScheduleAnalysis& an) {
  double q = 0;
  for (int r = 0; r < s.num_ranks(); ++r)
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      if (!is_compute(s.actions[r][i].kind)) continue;
      const double d = an.timing[r][i].end - an.timing[r][i].start;
      if (d > 1e-12 && (q == 0 || d < q)) q = d;
    }
  return q > 0 ? q : 1;
}

std::string legend(const Schedule& s) {
  std::string out = "F forward, B backward";
  bool split = false;
  for (const auto& list : s.actions)
    for (const Action& a : list) split = split || a.kind == ActionKind::BackwardWeight;
  out += split ? " (input gradient), W weight gradient" : " (full)";
  out += "; number = microbatch";
  if (s.num_chunks() == 2) out += "; upper case chunk 0, lower case chunk 1";
  if (s.num_chunks() > 2) out += "; :c = chunk";
  return out + "; -- continues; . idle\n";
}

}  // namespace

std::string render_timeline(const Schedule& s, const ScheduleAnalysis& an, const TimelineOptions& opt) {
  const double q = time_quantum(s, an);
  const int total = static_cast<int>(std::ceil(an.makespan / q - 1e-9));
  const int cells = opt.max_cells > 0 ? std::min(total, opt.max_cells) : total;
  size_t width = 2;
  for (const auto& list : s.actions)
    for (const Action& a : list)
      if (is_compute(a.kind)) width = std::max(width, action_label(s, a).size());
  std::ostringstream os;
  if (opt.show_legend) os << legend(s);
  const std::string rank_width = std::to_string(s.num_ranks() - 1);
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::vector<std::string> row(cells, ".");
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.kind)) continue;
      const int first = static_cast<int>(std::lround(an.timing[r][i].start / q));
      const int last = std::max(first, static_cast<int>(std::lround(an.timing[r][i].end / q)) - 1);
      for (int c = first; c <= last && c < cells; ++c) row[c] = c == first ? action_label(s, a) : "--";
    }
    std::string name = std::to_string(r);
    os << "rank " << std::string(rank_width.size() - name.size(), ' ') << name << " |";
    for (const std::string& cell : row) os << ' ' << cell << std::string(width - cell.size(), ' ');
    os << (cells < total ? " ..." : "") << "\n";
  }
  if (cells < total)
    os << "(first " << cells << " of " << total << " cells shown; one cell = " << q << " time units)\n";
  return os.str();
}

nlohmann::json chrome_trace(const Schedule& s, const ScheduleAnalysis& an, double unit_us) {
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 0},
                    {"args", {{"name", "schedule " + s.name}}}});
  for (int r = 0; r < s.num_ranks(); ++r) {
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 0}, {"tid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.kind)) continue;
      const ActionTiming t = an.timing[r][i];
      nlohmann::json args = {{"microbatch", a.microbatch}, {"chunk", a.chunk}, {"stage", a.stage},
                             {"action_index", i}};
      if (a.kind == ActionKind::Backward) args["weight_deferred"] = a.weight_deferred;
      if (a.fused_with_next) args["fused_with_next"] = true;
      events.push_back({{"name", action_label(s, a)}, {"cat", to_string(a.kind)}, {"ph", "X"},
                        {"pid", 0}, {"tid", r}, {"ts", t.start * unit_us},
                        {"dur", (t.end - t.start) * unit_us}, {"args", args}});
    }
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

}  // namespace tandem
