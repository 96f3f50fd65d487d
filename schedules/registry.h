#pragma once
// Schedule registry: name -> (parameter check, pure builder).
//
// Adding a built-in schedule is one file plus one line:
//   schedules/my_schedule.cpp defines `ScheduleInfo my_schedule_info()`;
//   registry.cpp lists `X(my_schedule_info)` in TANDEM_BUILTIN_SCHEDULES.
// Code that links its own translation unit directly (tests, tools) may instead write
//   TANDEM_REGISTER_SCHEDULE(my_schedule, my_schedule_info());
// in that file. (A static registrar inside the tandem_schedules static library would be dropped by
// the linker, hence the explicit list for built-ins.)
#include <functional>
#include <string>
#include <vector>

#include "core/schedule.h"

namespace tandem {

struct ScheduleParams {
  int pp = 0;            // pipeline ranks
  int microbatches = 0;  // microbatches per iteration (all directions together)
  int chunks = 0;        // model chunks per rank; 0 = the schedule's default
  int group_size = 0;    // interleaved: microbatches per virtual-stage group; 0 = pp (Megatron)
};

// Which chunk counts a schedule accepts, and the one it uses when none is given.
struct ChunkRule {
  int min = 1;
  int max = 1;
  int default_value = 1;
};

// Throws UserError naming the field ("pp", "microbatches", "chunks", "group_size") and its value
// when the schedule cannot be built for these parameters. Runs after the chunk rule is applied.
using ScheduleCheckFn = std::function<void(const ScheduleParams&)>;
// Pure: equal parameters give equal schedules. Called only with checked parameters.
using ScheduleBuildFn = std::function<Schedule(const ScheduleParams&)>;

struct ScheduleInfo {
  std::string name;        // registry key, e.g. "zb-h1"
  std::string summary;     // one line for `tandem schedule --list`
  std::string reference;   // paper or code the schedule follows
  ChunkRule chunks;
  ScheduleCheckFn check;
  ScheduleBuildFn build;
};

// Adds a schedule; UserError if the name is taken. Returns true so it can initialise a static.
bool register_schedule(ScheduleInfo info);
// nullptr when unknown.
const ScheduleInfo* lookup_schedule(const std::string& name);
// UserError naming the unknown value and listing the known names.
const ScheduleInfo& find_schedule(const std::string& name);
// All registered schedules: built-ins first, in registry order, then later registrations.
const std::vector<ScheduleInfo>& registered_schedules();
std::vector<std::string> schedule_names();

// Applies the chunk rule (default, range) and the schedule's check; returns the resolved params.
ScheduleParams resolve_params(const ScheduleInfo& info, ScheduleParams params);
// resolve_params + build.
Schedule build_schedule(const std::string& name, const ScheduleParams& params);

}  // namespace tandem

#define TANDEM_REGISTER_SCHEDULE(ident, info_expr)                                \
  namespace {                                                                    \
  [[maybe_unused]] const bool tandem_schedule_registered_##ident =               \
      ::tandem::register_schedule(info_expr);                                    \
  }
