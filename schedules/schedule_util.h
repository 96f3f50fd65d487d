#pragma once
// Small helpers shared by the schedule files: compute-step constructors and parameter checks
// whose messages name the field and the value.
#include <string>

#include "core/check.h"
#include "core/schedule.h"
#include "schedules/registry.h"

namespace tandem::sched {

inline ComputeStep fwd(int microbatch, int chunk = 0, bool fused_with_next = false) {
  return ComputeStep{ActionKind::Forward, microbatch, chunk, fused_with_next};
}
inline ComputeStep bwd(int microbatch, int chunk = 0) {
  return ComputeStep{ActionKind::Backward, microbatch, chunk, false};
}
inline ComputeStep wgt(int microbatch, int chunk = 0) {
  return ComputeStep{ActionKind::BackwardWeight, microbatch, chunk, false};
}

inline void require_even_pp(const ScheduleParams& p, const std::string& schedule) {
  if (p.pp < 2 || p.pp % 2 != 0)
    throw_field_error("pp", p.pp, schedule + " needs an even number of pipeline ranks >= 2");
}

inline void require_min_microbatches(const ScheduleParams& p, int min, const std::string& why) {
  if (p.microbatches < min) throw_field_error("microbatches", p.microbatches, why);
}

inline void require_no_group_size(const ScheduleParams& p, const std::string& schedule) {
  if (p.group_size != 0)
    throw_field_error("group_size", p.group_size, schedule + " has no microbatch groups");
}

}  // namespace tandem::sched
