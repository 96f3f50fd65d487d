#include "schedules/zero_bubble_order.h"

#include <algorithm>

#include "schedules/schedule_util.h"

namespace tandem::sched {

ComputeOrder zero_bubble_order(int ranks, int microbatches, const std::function<int(int)>& warmup,
                               const std::function<int(int)>& lag) {
  ComputeOrder order(ranks);
  const int m = microbatches;
  for (int r = 0; r < ranks; ++r) {
    const int nw = std::min(warmup(r), m), delay = lag(r);
    TANDEM_CHECK(nw >= 1 && delay >= 0);
    auto& out = order[r];
    for (int mb = 0; mb < nw; ++mb) out.push_back(fwd(mb));
    int next_w = 0;
    for (int k = 0; k < m; ++k) {
      out.push_back(bwd(k));
      if (k >= delay) out.push_back(wgt(next_w++));
      if (k + nw < m) out.push_back(fwd(k + nw));
    }
    while (next_w < m) out.push_back(wgt(next_w++));
  }
  return order;
}

}  // namespace tandem::sched
