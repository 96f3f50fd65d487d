#pragma once
// The order shared by the handcrafted zero-bubble schedules ZB-H1 and ZB-H2 on a linear layout.
// Rank r runs warmup(r) forwards, then steps k = 0..m-1 of
//     Backward(k) [input grad], BackwardWeight(k - lag(r)) if k >= lag(r), Forward(k + warmup(r))
// and finally the weight gradients still pending. Every rank then holds at most
// warmup(r) + lag(r) microbatches' activations (counting them live until their W).
#include <functional>

#include "core/schedule.h"

namespace tandem::sched {

ComputeOrder zero_bubble_order(int ranks, int microbatches, const std::function<int(int)>& warmup,
                               const std::function<int(int)>& lag);

}  // namespace tandem::sched
