#pragma once
// Attention math shared by the CPU and CUDA backends beyond the dropout keep mask (which lives in
// dropout_math.h): the log-sum-exp merge of two partial attention results over disjoint key sets
// (context-parallel ring attention), for one query row.
//
//   m = max(l1, l2),  e1 = exp(l1 - m),  e2 = exp(l2 - m)
//   out = (e1 out1 + e2 out2) / (e1 + e2),   lse = m + log(e1 + e2)
// Two empty parts (l1 = l2 = -inf: no visible key yet) keep the running part (w1 = 1, w2 = 0).
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

// Weights w1, w2 of the running part (lse l1) and the block (lse l2); *lse_out the merged lse.
template <typename Acc = double>
TANDEM_HD inline void lse_merge_weights(float l1, float l2, Acc* w1, Acc* w2, float* lse_out) {
  const Acc m = static_cast<Acc>(l1 > l2 ? l1 : l2);
  if (m == static_cast<Acc>(-INFINITY)) {
    *w1 = Acc(1);
    *w2 = Acc(0);
    *lse_out = -INFINITY;
    return;
  }
  const Acc e1 = exp(static_cast<Acc>(l1) - m), e2 = exp(static_cast<Acc>(l2) - m);
  const Acc inv = Acc(1) / (e1 + e2);
  *w1 = e1 * inv;
  *w2 = e2 * inv;
  *lse_out = static_cast<float>(m + log(e1 + e2));
}

}  // namespace tandem::kmath
