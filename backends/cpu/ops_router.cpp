#include "backends/cpu/ops_router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/kernel_math/softmax_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

// Indices of the k largest values of row [E], in decreasing order, ties to the lower index.
void top_k(const float* row, int64_t experts, int64_t k, int32_t* out) {
  std::vector<int32_t> idx(static_cast<size_t>(experts));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  std::copy_n(idx.begin(), k, out);
}

// Drops, per expert, the routed tokens beyond the capacity (smallest weights first).
void apply_capacity(Routing& r) {
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(r.experts));   // flat t * k + slot
  for (int64_t i = 0; i < r.tokens * r.topk; ++i) slots[r.expert[i]].push_back(i);
  for (auto& list : slots) {
    if (static_cast<int64_t>(list.size()) <= r.capacity) continue;
    std::stable_sort(list.begin(), list.end(), [&r](int64_t a, int64_t b) { return r.probs.data[a] > r.probs.data[b]; });
    for (size_t j = static_cast<size_t>(r.capacity); j < list.size(); ++j) {
      r.kept[list[j]] = 0;
      r.probs.data[list[j]] = 0.0f;
    }
  }
}

}  // namespace

Routing router_forward(ConstTensorView logits, const RouterOptions& options) {
  TANDEM_CHECK(logits.shape.size() == 2);
  Routing r;
  r.tokens = logits.dim(0);
  r.experts = logits.dim(1);
  r.topk = options.topk;
  r.pre_softmax = options.pre_softmax;
  TANDEM_CHECK_MSG(r.topk >= 1 && r.topk <= r.experts, "router top-k " << r.topk << " of " << r.experts << " experts");
  const int64_t t_n = r.tokens, e_n = r.experts, k = r.topk;
  r.expert.assign(static_cast<size_t>(t_n * k), 0);
  r.kept.assign(static_cast<size_t>(t_n * k), 1);
  r.probs = Tensor({t_n, k});
  r.scores = Tensor({t_n, e_n});
  std::vector<float> sel(static_cast<size_t>(k));
  for (int64_t t = 0; t < t_n; ++t) {
    const float* row = logits.ptr() + t * e_n;
    float* scores = r.scores.data.data() + t * e_n;
    kmath::softmax_row<double>(row, e_n, scores);
    int32_t* chosen = r.expert.data() + t * k;
    top_k(row, e_n, k, chosen);
    float* probs = r.probs.data.data() + t * k;
    if (options.pre_softmax) {
      for (int64_t j = 0; j < k; ++j) probs[j] = scores[chosen[j]];
    } else {
      for (int64_t j = 0; j < k; ++j) sel[j] = row[chosen[j]];
      kmath::softmax_row<double>(sel.data(), k, probs);
    }
  }
  r.routed_per_expert.assign(static_cast<size_t>(e_n), 0);
  for (int32_t e : r.expert) ++r.routed_per_expert[e];
  if (options.capacity_factor > 0) {
    r.capacity = static_cast<int64_t>(
        std::ceil(static_cast<double>(t_n * k) / static_cast<double>(e_n) * options.capacity_factor));
    apply_capacity(r);
  }
  r.tokens_per_expert.assign(static_cast<size_t>(e_n), 0);
  for (int64_t i = 0; i < t_n * k; ++i) r.tokens_per_expert[r.expert[i]] += r.kept[i];
  return r;
}

double router_aux_loss(const Routing& routing, const AuxLossInputs& aux) {
  if (aux.coeff == 0.0) return 0.0;
  TANDEM_CHECK(static_cast<int64_t>(aux.routed_per_expert.size()) == routing.experts && aux.total_tokens > 0);
  double sum = 0;
  for (int64_t t = 0; t < routing.tokens; ++t) {
    for (int64_t e = 0; e < routing.experts; ++e) {
      sum += static_cast<double>(routing.scores.data[t * routing.experts + e]) *
             static_cast<double>(aux.routed_per_expert[e]);
    }
  }
  const double tt = static_cast<double>(aux.total_tokens);
  return sum * aux.coeff * static_cast<double>(routing.experts) / (static_cast<double>(routing.topk) * tt * tt);
}

void router_backward(ConstTensorView logits, const Routing& routing, ConstTensorView d_probs, const AuxLossInputs& aux,
                     double d_aux, TensorView d_logits) {
  const int64_t t_n = routing.tokens, e_n = routing.experts, k = routing.topk;
  check_shape(logits, {t_n, e_n}, "router logits");
  check_shape(d_probs, {t_n, k}, "router grad probs");
  check_shape(d_logits, {t_n, e_n}, "router grad logits");
  const bool with_aux = aux.coeff != 0.0 && d_aux != 0.0;
  double aux_scale = 0;
  if (with_aux) {
    TANDEM_CHECK(static_cast<int64_t>(aux.routed_per_expert.size()) == e_n && aux.total_tokens > 0);
    const double tt = static_cast<double>(aux.total_tokens);
    aux_scale = d_aux * aux.coeff * static_cast<double>(e_n) / (static_cast<double>(k) * tt * tt);
  }
  std::vector<float> d_scores(static_cast<size_t>(e_n)), sel(static_cast<size_t>(k)), sel_p(static_cast<size_t>(k)),
      sel_d(static_cast<size_t>(k));
  for (int64_t t = 0; t < t_n; ++t) {
    const float* row = logits.ptr() + t * e_n;
    const float* scores = routing.scores.data.data() + t * e_n;
    const int32_t* chosen = routing.expert.data() + t * k;
    const uint8_t* kept = routing.kept.data() + t * k;
    const float* dp = d_probs.ptr() + t * k;
    float* dl = d_logits.ptr() + t * e_n;
    // d aux / d scores[t, e] = aux_scale * routed[e]; dropped selections get no weight gradient.
    for (int64_t e = 0; e < e_n; ++e) {
      d_scores[e] = with_aux ? static_cast<float>(aux_scale * static_cast<double>(aux.routed_per_expert[e])) : 0.0f;
    }
    for (int64_t j = 0; j < k; ++j) sel_d[j] = kept[j] ? dp[j] : 0.0f;
    if (routing.pre_softmax) {
      for (int64_t j = 0; j < k; ++j) d_scores[chosen[j]] += sel_d[j];
      kmath::softmax_row_backward<double>(scores, d_scores.data(), e_n, dl);
      continue;
    }
    kmath::softmax_row_backward<double>(scores, d_scores.data(), e_n, dl);
    for (int64_t j = 0; j < k; ++j) sel[j] = row[chosen[j]];
    kmath::softmax_row<double>(sel.data(), k, sel_p.data());
    kmath::softmax_row_backward<double>(sel_p.data(), sel_d.data(), k, sel_d.data());
    for (int64_t j = 0; j < k; ++j) dl[chosen[j]] += sel_d[j];
  }
}

}  // namespace tandem::cpu
