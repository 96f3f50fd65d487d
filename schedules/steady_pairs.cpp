// Steady-state forward/backward pairs (schedules/steady_pairs.h).
#include "schedules/steady_pairs.h"

namespace tandem {

namespace {

// One stage, one chunk (F0 B0 F1 B1 ...): Megatron-Core's combined 1F1B runs one forward ahead,
// F0 [F1 B0] [F2 B1] ... B(m-1), with two microbatches' activations alive instead of one.
std::vector<ComputeStep> one_ahead(int microbatches) {
  std::vector<ComputeStep> steps;
  steps.push_back(ComputeStep{ActionKind::Forward, 0, 0, false});
  for (int mb = 0; mb < microbatches; ++mb) {
    if (mb + 1 < microbatches) steps.push_back(ComputeStep{ActionKind::Forward, mb + 1, 0, false});
    steps.push_back(ComputeStep{ActionKind::Backward, mb, 0, false});
  }
  return steps;
}

bool plain_single_stage(const Schedule& s) {
  if (s.num_ranks() != 1 || s.num_chunks() != 1) return false;
  for (const Action& a : s.actions[0])
    if (a.kind == ActionKind::BackwardWeight || a.fused_with_next) return false;
  return true;
}

}  // namespace

Schedule pair_steady_state(const Schedule& schedule, int* pairs) {
  ComputeOrder order(static_cast<size_t>(schedule.num_ranks()));
  int count = 0;
  for (int r = 0; r < schedule.num_ranks(); ++r) {
    std::vector<ComputeStep>& steps = order[static_cast<size_t>(r)];
    if (plain_single_stage(schedule)) steps = one_ahead(schedule.num_microbatches());
    else
      for (const Action& a : schedule.actions[static_cast<size_t>(r)])
        if (is_compute(a.kind)) steps.push_back(ComputeStep{a.kind, a.microbatch, a.chunk, a.fused_with_next});
    for (size_t i = 0; i + 1 < steps.size(); ++i) {
      const ComputeStep& f = steps[i];
      const ComputeStep& b = steps[i + 1];
      const bool fused_before = i > 0 && steps[i - 1].fused_with_next;
      if (f.kind != ActionKind::Forward || b.kind != ActionKind::Backward || f.fused_with_next || b.fused_with_next ||
          fused_before || (f.microbatch == b.microbatch && f.chunk == b.chunk))
        continue;
      steps[i].fused_with_next = true;
      ++count;
      ++i;
    }
  }
  if (pairs != nullptr) *pairs = count;
  Schedule out = make_schedule(schedule.name, schedule.layout, order);
  out.stage_work = schedule.stage_work;
  out.stage_layers = schedule.stage_layers;
  return out;
}

}  // namespace tandem
