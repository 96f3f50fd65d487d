// ZB-V (Qi et al., "Pipeline Parallelism with Controllable Memory", NeurIPS 2024, and the
// zero-bubble repository's handcrafted V schedule): two chunks per rank placed as a V, chunk 0 of
// rank r = stage r, chunk 1 = stage 2p-1-r, so the first and last stage share rank 0 and the turn
// at the bottom stays on rank p-1. Each chunk is half a stage. With the B/W split the schedule
// has no bubble after warm-up and holds about the activations of 1F1B (2p chunks = p stages).
//
// Phases on rank r (f = Forward, b = Backward input grad, w = BackwardWeight; suffix = chunk):
//   warm-up   (2(p-r)-1) x f0;  r x [f1 f0];  (p-r) x [f1 b1 w1]
//   steady    [f0 b0 w0 f1 b1 w1] until every microbatch is in (the f0 drops out last)
//   cool-down r x [b0 b1];  (p-r) x [b0 w];  then the pending W of chunk 1, then of chunk 0
// For m < 2p-1 the order is built for 2p-1 microbatches and the extra ones are removed.
//
// Timeline, p = 4, m = 8, unit costs F = B = W = 1 (`tandem schedule zb-v --pp 4 --microbatches 8`):
//   F forward, B input-gradient backward, W weight gradient, number = microbatch; lower case = chunk 1; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 F4 F5 F6 f0 b0 w0 f1 b1 w1 f2 b2 w2 f3 b3 w3 F7 B0 W0 f4 b4 w4 B1 W1 f5 b5 w5 B2 W2 f6 b6 w6 B3 W3 f7 b7 w7 B4 W4 B5 W5 B6 W6 B7 W7 .  .  .
//   rank 1 | .  F0 F1 F2 F3 F4 f0 F5 f1 b0 w0 f2 b1 w1 f3 b2 w2 F6 B0 W0 f4 b3 w3 F7 B1 W1 f5 b4 w4 B2 W2 f6 b5 w5 B3 W3 f7 b6 w6 B4 b7 B5 W4 B6 W5 B7 W6 w7 W7 .  .
//   rank 2 | .  .  F0 F1 F2 f0 F3 f1 F4 f2 b0 w0 f3 b1 w1 F5 B0 W0 f4 b2 w2 F6 B1 W1 f5 b3 w3 F7 B2 W2 f6 b4 w4 B3 W3 f7 b5 w5 B4 b6 B5 b7 B6 W4 B7 W5 w6 w7 W6 W7 .
//   rank 3 | .  .  .  F0 f0 F1 f1 F2 f2 F3 f3 b0 w0 F4 B0 W0 f4 b1 w1 F5 B1 W1 f5 b2 w2 F6 B2 W2 f6 b3 w3 F7 B3 W3 f7 b4 w4 B4 b5 B5 b6 B6 b7 B7 W4 w5 w6 w7 W5 W6 W7
//   makespan 25.5, bubble fraction 0.0588
#include <algorithm>
#include <deque>

#include "schedules/schedule_util.h"

namespace tandem {
namespace {

// Per-rank state: next microbatch for forward/backward of each chunk, pending weight grads.
struct VRank {
  std::vector<ComputeStep> out;
  int f[2] = {0, 0};
  int b[2] = {0, 0};
  std::deque<int> pending_w[2];
  void forward(int c) { out.push_back(sched::fwd(f[c]++, c)); }
  void backward(int c, bool then_weight) {
    const int mb = b[c]++;
    out.push_back(sched::bwd(mb, c));
    if (then_weight) out.push_back(sched::wgt(mb, c));
    else pending_w[c].push_back(mb);
  }
  void weight(int c) {
    out.push_back(sched::wgt(pending_w[c].front(), c));
    pending_w[c].pop_front();
  }
};

std::vector<ComputeStep> zb_v_rank(int p, int r, int n) {
  VRank s;
  for (int i = 0; i < 2 * (p - r) - 1; ++i) s.forward(0);
  for (int i = 0; i < r; ++i) { s.forward(1); s.forward(0); }
  for (int i = 0; i < p - r; ++i) { s.forward(1); s.backward(1, true); }
  while (s.f[1] < s.f[0] || s.f[0] < n) {
    if (s.f[0] < n) s.forward(0);
    s.backward(0, true);
    s.forward(1);
    s.backward(1, true);
  }
  for (int i = 0; i < r; ++i) { s.backward(0, false); s.backward(1, false); }
  for (int i = 0; i < p - r; ++i) { s.backward(0, false); s.weight(0); }
  while (!s.pending_w[1].empty()) s.weight(1);
  while (!s.pending_w[0].empty()) s.weight(0);
  TANDEM_CHECK(s.f[0] == n && s.f[1] == n && s.b[0] == n && s.b[1] == n);
  return s.out;
}

Schedule build_zb_v(const ScheduleParams& p) {
  const int m = p.microbatches, n = std::max(m, 2 * p.pp - 1);
  ComputeOrder order(p.pp);
  for (int r = 0; r < p.pp; ++r) {
    for (const ComputeStep& st : zb_v_rank(p.pp, r, n))
      if (st.microbatch < m) order[r].push_back(st);
  }
  return make_schedule("zb-v", v_layout(p.pp, m), order);
}

void check_zb_v(const ScheduleParams& p) { sched::require_no_group_size(p, "zb-v"); }

}  // namespace

ScheduleInfo zb_v_schedule_info() {
  return ScheduleInfo{"zb-v", "zero bubble V shape: 2 chunks per rank, 1F1B memory",
                      "Qi et al., Pipeline Parallelism with Controllable Memory (NeurIPS 2024)",
                      ChunkRule{2, 2, 2}, check_zb_v, build_zb_v};
}

}  // namespace tandem
