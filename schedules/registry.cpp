#include "schedules/registry.h"

#include <utility>

#include "core/check.h"

namespace tandem {

// Built-in schedules: one line each. Every NAME is a function `ScheduleInfo NAME()` defined in
// its own file under schedules/.
#define TANDEM_BUILTIN_SCHEDULES(X) \
  X(gpipe_schedule_info)            \
  X(one_f_one_b_schedule_info)      \
  X(interleaved_schedule_info)      \
  X(zb_h1_schedule_info)            \
  X(zb_h2_schedule_info)            \
  X(zb_v_schedule_info)             \
  X(dualpipe_schedule_info)         \
  X(dualpipev_schedule_info)

#define TANDEM_DECLARE_BUILTIN(fn) ScheduleInfo fn();
TANDEM_BUILTIN_SCHEDULES(TANDEM_DECLARE_BUILTIN)
#undef TANDEM_DECLARE_BUILTIN

namespace {

std::vector<ScheduleInfo>& registry() {
#define TANDEM_LIST_BUILTIN(fn) fn(),
  static std::vector<ScheduleInfo> schedules{TANDEM_BUILTIN_SCHEDULES(TANDEM_LIST_BUILTIN)};
#undef TANDEM_LIST_BUILTIN
  return schedules;
}

std::string known_names() {
  std::string out;
  for (const ScheduleInfo& s : registry()) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

}  // namespace

bool register_schedule(ScheduleInfo info) {
  TANDEM_CHECK_MSG(!info.name.empty() && info.build && info.check, "incomplete ScheduleInfo");
  if (lookup_schedule(info.name) != nullptr)
    throw_field_error("schedule", info.name, "a schedule with this name is already registered");
  registry().push_back(std::move(info));
  return true;
}

const ScheduleInfo* lookup_schedule(const std::string& name) {
  for (const ScheduleInfo& s : registry())
    if (s.name == name) return &s;
  return nullptr;
}

const ScheduleInfo& find_schedule(const std::string& name) {
  const ScheduleInfo* info = lookup_schedule(name);
  if (info == nullptr) throw_field_error("schedule", name, "unknown; known schedules: " + known_names());
  return *info;
}

const std::vector<ScheduleInfo>& registered_schedules() { return registry(); }

std::vector<std::string> schedule_names() {
  std::vector<std::string> names;
  for (const ScheduleInfo& s : registry()) names.push_back(s.name);
  return names;
}

ScheduleParams resolve_params(const ScheduleInfo& info, ScheduleParams params) {
  if (params.pp < 1) throw_field_error("pp", params.pp, "must be at least 1");
  if (params.microbatches < 1) throw_field_error("microbatches", params.microbatches, "must be at least 1");
  if (params.chunks == 0) params.chunks = info.chunks.default_value;
  if (params.chunks < info.chunks.min || params.chunks > info.chunks.max) {
    const std::string range = info.chunks.min == info.chunks.max
                                  ? "exactly " + std::to_string(info.chunks.min)
                                  : std::to_string(info.chunks.min) + ".." + std::to_string(info.chunks.max);
    throw_field_error("chunks", params.chunks, info.name + " takes " + range + " chunks per rank");
  }
  if (params.group_size < 0) throw_field_error("group_size", params.group_size, "must be >= 0");
  info.check(params);
  return params;
}

Schedule build_schedule(const std::string& name, const ScheduleParams& params) {
  const ScheduleInfo& info = find_schedule(name);
  return info.build(resolve_params(info, params));
}

}  // namespace tandem
