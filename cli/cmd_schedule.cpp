// `tandem schedule NAME --pp P --microbatches M [--chunks V] [--cost F,B,W[,F&B]] [--json FILE]
//                  [--trace FILE] ...`  builds, validates and times one pipeline schedule, prints
//                  its ASCII timeline and a summary (makespan, bubble fraction, peak activations).
// `tandem schedule --list`               the registered schedules.
// `tandem schedule check [NAME|--all]`   validates the (p, m, v) grid and compares with goldens.
#include <cstdio>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/table.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "schedules/analysis.h"
#include "schedules/grid_check.h"
#include "schedules/registry.h"
#include "schedules/timeline.h"
#include "schedules/validate.h"

namespace tandem::cli {
namespace {

void print_schedule_help() {
  std::printf(
      "usage: tandem schedule NAME --pp P --microbatches M [--chunks V] [--group-size N]\n"
      "                        [--cost F,B,W[,F&B]] [--latency L] [--layers L [--first-stage-layers A]\n"
      "                        [--last-stage-layers B]] [--width CELLS] [--json FILE] [--trace FILE] [--ir FILE]\n"
      "       tandem schedule --list\n"
      "       tandem schedule check [NAME|--all] [--goldens FILE] [--update-goldens]\n\n"
      "Costs are per action on one stage (1/p of the model): F forward, B input-gradient backward,\n"
      "W weight-gradient backward (a full backward costs B+W), F&B an overlapped forward+backward\n"
      "pair (default: F+B+W). Default 1,1,1. --width limits the timeline (default 160 cells, 0 = all).\n"
      "--json writes makespan, bubble_fraction, peak_activations (per rank) and more; --trace writes\n"
      "a Chrome trace (Perfetto); --ir writes the schedule's per-rank action lists.\n");
}

// "--pp = x: ..." for the library's "pp = x: ..." messages.
[[noreturn]] void rethrow_as_option(const UserError& e) {
  std::string msg = e.what();
  for (const char* field : {"pp", "microbatches", "chunks", "group_size"}) {
    const std::string prefix = std::string(field) + " = ";
    if (msg.rfind(prefix, 0) != 0) continue;
    std::string option = std::string("--") + field;
    for (char& c : option) c = c == '_' ? '-' : c;
    throw UserError(option + msg.substr(std::string(field).size()));
  }
  throw e;
}

int parse_int(const std::string& option, const std::string& text, int min) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty()) throw_field_error(option, text, "expected an integer");
  if (value < min) throw_field_error(option, text, "must be at least " + std::to_string(min));
  return value;
}

double parse_number(const std::string& option, const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || !(value >= 0))
    throw_field_error(option, text, "expected a non-negative number");
  return value;
}

ActionCosts parse_costs(const std::string& text) {
  std::vector<double> v;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) v.push_back(parse_number("--cost", part));
  if (v.size() != 3 && v.size() != 4) throw_field_error("--cost", text, "expected F,B,W or F,B,W,F&B");
  if (v[0] <= 0 || v[1] <= 0) throw_field_error("--cost", text, "F and B must be positive");
  ActionCosts c;
  c.forward = v[0];
  c.backward = v[1];
  c.weight = v[2];
  if (v.size() == 4) c.overlapped = v[3];
  return c;
}

// Options of the NAME form: option -> value; positional NAME separately.
struct RunOptions {
  std::string name;
  std::map<std::string, std::string> values;
  std::optional<std::string> get(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
};

RunOptions parse_run_options(const std::vector<std::string>& args) {
  static const std::vector<std::string> valued = {
      "--pp", "--microbatches", "--chunks", "--group-size", "--cost", "--latency", "--layers",
      "--first-stage-layers", "--last-stage-layers", "--width", "--json", "--trace", "--ir"};
  RunOptions out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      if (!out.name.empty()) throw_field_error("NAME", a, "only one schedule name is expected");
      out.name = a;
      continue;
    }
    std::string key = a, value;
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      key = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw_field_error(a, "(missing)", "expects a value");
    }
    if (std::find(valued.begin(), valued.end(), key) == valued.end())
      throw_field_error("option", key, "unknown (see `tandem schedule --help`)");
    out.values[key] = value;
  }
  if (out.name.empty()) throw_field_error("NAME", "(missing)", "give a schedule name (see `tandem schedule --list`)");
  return out;
}

ScheduleParams params_from(const RunOptions& o) {
  ScheduleParams p;
  auto pp = o.get("--pp"), m = o.get("--microbatches");
  if (!pp) throw_field_error("--pp", "(missing)", "the pipeline size is required");
  if (!m) throw_field_error("--microbatches", "(missing)", "the number of microbatches is required");
  p.pp = parse_int("--pp", *pp, 1);
  p.microbatches = parse_int("--microbatches", *m, 1);
  if (auto v = o.get("--chunks")) p.chunks = parse_int("--chunks", *v, 1);
  if (auto g = o.get("--group-size")) p.group_size = parse_int("--group-size", *g, 1);
  return p;
}

void apply_layers(const RunOptions& o, Schedule& s) {
  auto layers = o.get("--layers");
  if (!layers) {
    if (o.get("--first-stage-layers") || o.get("--last-stage-layers"))
      throw_field_error("--first-stage-layers", "", "needs --layers");
    return;
  }
  const int first = o.get("--first-stage-layers") ? parse_int("--first-stage-layers", *o.get("--first-stage-layers"), 1) : 0;
  const int last = o.get("--last-stage-layers") ? parse_int("--last-stage-layers", *o.get("--last-stage-layers"), 1) : 0;
  assign_layers(s, split_layers(parse_int("--layers", *layers, 1), s.num_stages(), first, last));
}

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

nlohmann::json result_json(const Schedule& s, const ScheduleAnalysis& a, const ActionCosts& c,
                           const ValidationReport& report) {
  nlohmann::json costs = {{"forward", c.forward}, {"backward", c.backward}, {"weight", c.weight},
                          {"p2p_latency", c.p2p_latency}};
  if (c.overlapped) costs["overlapped"] = *c.overlapped;
  return nlohmann::json{{"schedule", s.name},
                        {"pp", s.num_ranks()},
                        {"microbatches", s.num_microbatches()},
                        {"chunks", s.num_chunks()},
                        {"stages", s.num_stages()},
                        {"costs", costs},
                        {"valid", report.ok()},
                        {"warnings", report.warnings.size()},
                        {"makespan", a.makespan},
                        {"bubble_fraction", a.bubble_fraction},
                        {"interior_bubble_fraction", a.interior_bubble_fraction},
                        {"peak_activations", a.peak_activations},
                        {"parameter_memory", a.parameter_memory},
                        {"busy", a.busy}};
}

void print_summary(const Schedule& s, const ScheduleAnalysis& a, const ValidationReport& report) {
  std::printf("\nmakespan %s, bubble fraction %s (inside each rank's own window: %s)\n",
              number(a.makespan).c_str(), fixed(a.bubble_fraction, 4).c_str(),
              fixed(a.interior_bubble_fraction, 4).c_str());
  Table t({"rank", "busy", "idle", "first start", "last end", "peak activations", "parameters"});
  for (int r = 0; r < s.num_ranks(); ++r)
    t.add_row({std::to_string(r), number(a.busy[r]), number(a.makespan - a.busy[r]),
               number(a.first_start[r]), number(a.last_end[r]), number(a.peak_activations[r]),
               number(a.parameter_memory[r])});
  std::printf("%s", t.render().c_str());
  std::printf("activations: microbatches x (1/p of the model); parameters: x (1/p of the model)\n");
  if (!report.warnings.empty())
    std::printf("note: %zu rank pair(s) receive messages in another order than sent (%s) — fine with\n"
                "tagged point-to-point; a transport that matches by order must reorder receives\n",
                report.warnings.size(), report.warnings.front().message.c_str());
}

int run_one(const std::vector<std::string>& args) {
  const RunOptions o = parse_run_options(args);
  const ScheduleParams params = params_from(o);
  const ActionCosts costs = [&] {
    ActionCosts c = o.get("--cost") ? parse_costs(*o.get("--cost")) : ActionCosts{};
    if (auto l = o.get("--latency")) c.p2p_latency = parse_number("--latency", *l);
    return c;
  }();
  const int width = o.get("--width") ? parse_int("--width", *o.get("--width"), 0) : 160;
  Schedule s;
  try {
    s = build_schedule(o.name, params);
  } catch (const UserError& e) {
    rethrow_as_option(e);
  }
  apply_layers(o, s);
  const ValidationReport report = validate_schedule(s);
  std::printf("schedule %s: pp %d, microbatches %d, chunks %d (%d stages); costs F=%s B=%s W=%s%s\n",
              s.name.c_str(), s.num_ranks(), s.num_microbatches(), s.num_chunks(), s.num_stages(),
              number(costs.forward).c_str(), number(costs.backward).c_str(), number(costs.weight).c_str(),
              costs.overlapped ? (" F&B=" + number(*costs.overlapped)).c_str() : "");
  if (!report.ok()) {
    std::printf("invalid schedule:\n%s", report.summary(20).c_str());
    return 1;
  }
  const ScheduleAnalysis a = analyze_schedule(s, costs);
  if (auto path = o.get("--json")) write_file_atomically("--json", *path, result_json(s, a, costs, report).dump(2) + "\n");
  if (auto path = o.get("--trace")) write_file_atomically("--trace", *path, chrome_trace(s, a).dump() + "\n");
  if (auto path = o.get("--ir")) write_file_atomically("--ir", *path, schedule_to_json(s).dump() + "\n");
  std::printf("%s", render_timeline(s, a, TimelineOptions{width, true}).c_str());
  print_summary(s, a, report);
  return 0;
}

int run_list() {
  Table t({"name", "chunks", "summary", "reference"});
  for (const ScheduleInfo& s : registered_schedules()) {
    const std::string chunks = s.chunks.min == s.chunks.max
                                   ? std::to_string(s.chunks.min)
                                   : std::to_string(s.chunks.min) + "+ (default " +
                                         std::to_string(s.chunks.default_value) + ")";
    t.add_row({s.name, chunks, s.summary, s.reference});
  }
  std::printf("%s", t.render().c_str());
  return 0;
}

}  // namespace

int run_schedule_check(const std::vector<std::string>& args);

int run_schedule(const std::vector<std::string>& args) {
  if (args.empty() || args.front() == "--help" || args.front() == "-h") return print_schedule_help(), 0;
  if (args.front() == "--list") return run_list();
  if (args.front() == "check") return run_schedule_check({args.begin() + 1, args.end()});
  return run_one(args);
}

// ---------------------------------------------------------------------------------------------
// check

namespace {

struct CheckOptions {
  std::vector<std::string> schedules;
  std::string goldens;
  bool update = false;
};

CheckOptions parse_check_options(const std::vector<std::string>& args) {
  CheckOptions o;
  o.goldens = data_dir() + "/tests/schedule_goldens.json";
  bool all = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--all") all = true;
    else if (args[i] == "--update-goldens") o.update = true;
    else if (args[i] == "--goldens" && i + 1 < args.size()) o.goldens = args[++i];
    else if (args[i].rfind("--", 0) == 0) throw_field_error("option", args[i], "unknown for `tandem schedule check`");
    else o.schedules.push_back(find_schedule(args[i]).name);
  }
  if (all || o.schedules.empty()) o.schedules = schedule_names();
  return o;
}

nlohmann::json read_goldens(const std::string& path, bool may_be_missing) {
  std::ifstream in(path);
  if (!in) {
    if (may_be_missing) return nlohmann::json::object();
    throw_field_error("--goldens", path, "cannot read the golden file");
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw_field_error("--goldens", path, std::string("not valid JSON: ") + e.what());
  }
}

// Replaces the golden entries of the checked schedules, keeps the others.
void update_goldens(const CheckOptions& o, const std::vector<GridOutcome>& outcomes) {
  nlohmann::json doc = read_goldens(o.goldens, true);
  nlohmann::json fresh = outcomes_to_golden(outcomes);
  nlohmann::json entries = doc.contains("entries") ? doc["entries"] : nlohmann::json::object();
  for (const std::string& name : o.schedules)
    for (auto it = entries.begin(); it != entries.end();)
      it = it.key().rfind(name + " ", 0) == 0 ? entries.erase(it) : std::next(it);
  for (auto& [key, value] : fresh["entries"].items()) entries[key] = value;
  fresh["entries"] = entries;
  write_file_atomically("--goldens", o.goldens, golden_text(fresh));
}

}  // namespace

int run_schedule_check(const std::vector<std::string>& args) {
  const CheckOptions o = parse_check_options(args);
  const std::vector<GridOutcome> outcomes = run_grid(o.schedules);
  std::printf("grid: p in {2,3,4,8,16}, m in 1..4p, v in 1..4 where applicable; unit costs\n");
  Table t({"schedule", "points", "valid", "rejected", "invalid"});
  for (const std::string& name : o.schedules) {
    size_t points = 0, valid = 0, rejected = 0;
    for (const GridOutcome& g : outcomes) {
      if (g.point.schedule != name) continue;
      ++points;
      valid += g.valid();
      rejected += !g.accepted;
    }
    t.add_row({name, std::to_string(points), std::to_string(valid), std::to_string(rejected),
               std::to_string(points - valid - rejected)});
  }
  std::printf("%s", t.render().c_str());
  if (o.update) {
    update_goldens(o, outcomes);
    std::printf("goldens written to %s\n", o.goldens.c_str());
    return 0;
  }
  const GoldenComparison cmp = compare_with_golden(outcomes, read_goldens(o.goldens, false));
  for (size_t i = 0; i < cmp.problems.size() && i < 30; ++i) std::printf("  %s\n", cmp.problems[i].c_str());
  if (cmp.problems.size() > 30) std::printf("  ... and %zu more\n", cmp.problems.size() - 30);
  std::printf("%s: %zu points compared with %s, %zu problem(s)\n", cmp.ok() ? "ok" : "FAILED",
              cmp.compared, o.goldens.c_str(), cmp.problems.size());
  return cmp.ok() ? 0 : 1;
}

}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(schedule, "schedule", "pipeline schedules: timeline, bubble, memory; check the grid",
                        tandem::cli::run_schedule)
