// 1F1B, a.k.a. PipeDream-Flush (Narayanan et al., "Memory-Efficient Pipeline-Parallel DNN
// Training", 2021; Megatron-LM's forward_backward_pipelining_without_interleaving).
// Rank r runs min(p-r-1, m) warm-up forwards, then alternates one forward and one (full)
// backward, then drains the remaining backwards. Peak activations on rank r: min(p-r, m).
// Unit costs (F=1, full B=2): makespan 3(m+p-1), the same as GPipe, with p instead of m
// activations in flight.
//
// TIMELINE_PLACEHOLDER
#include <algorithm>

#include "schedules/schedule_util.h"

namespace tandem {
namespace {

Schedule build_1f1b(const ScheduleParams& p) {
  ComputeOrder order(p.pp);
  const int m = p.microbatches;
  for (int r = 0; r < p.pp; ++r) {
    const int warmup = std::min(p.pp - r - 1, m);
    auto& out = order[r];
    for (int mb = 0; mb < warmup; ++mb) out.push_back(sched::fwd(mb));
    for (int k = 0; k < m - warmup; ++k) {  // steady state: F(k + warmup), B(k)
      out.push_back(sched::fwd(k + warmup));
      out.push_back(sched::bwd(k));
    }
    for (int mb = m - warmup; mb < m; ++mb) out.push_back(sched::bwd(mb));
  }
  return make_schedule("1f1b", linear_layout(p.pp, m), order);
}

void check_1f1b(const ScheduleParams& p) { sched::require_no_group_size(p, "1f1b"); }

}  // namespace

ScheduleInfo one_f_one_b_schedule_info() {
  return ScheduleInfo{"1f1b", "one forward, one backward (PipeDream-Flush, Megatron default)",
                      "Narayanan et al., PipeDream-2BW/Flush (ICML 2021); Megatron-LM",
                      ChunkRule{1, 1, 1}, check_1f1b, build_1f1b};
}

}  // namespace tandem
