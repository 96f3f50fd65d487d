#include "backends/cpu/ops_router.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

// Top-k of row [E] restricted to the group_topk best of num_groups groups (group score: the sum
// of its top k / group_topk values), in decreasing order, ties to the lower index.
void group_limited_top_k(const float* row, int64_t experts, int64_t k, int64_t groups, int64_t group_topk,
                         int32_t* out) {
  if (groups <= 0 || group_topk <= 0) return top_k(row, experts, k, out);
  const int64_t per = experts / groups, best = k / group_topk;
  TANDEM_CHECK_MSG(per * groups == experts && best >= 1 && best <= per && group_topk <= groups,
                   "group-limited routing: " << experts << " experts, " << groups << " groups, top " << group_topk
                                             << " groups, k " << k);
  std::vector<float> group_score(static_cast<size_t>(groups));
  std::vector<int32_t> pick(static_cast<size_t>(best));
  for (int64_t g = 0; g < groups; ++g) {
    top_k(row + g * per, per, best, pick.data());
    double sum = 0;
    for (int32_t i : pick) sum += row[g * per + i];
    group_score[static_cast<size_t>(g)] = static_cast<float>(sum);
  }
  std::vector<int32_t> chosen_groups(static_cast<size_t>(group_topk));
  top_k(group_score.data(), groups, group_topk, chosen_groups.data());
  std::vector<float> masked(static_cast<size_t>(experts), -std::numeric_limits<float>::infinity());
  for (int32_t g : chosen_groups)
    for (int64_t e = g * per; e < (g + 1) * per; ++e) masked[static_cast<size_t>(e)] = row[e];
  top_k(masked.data(), experts, k, out);
}

// Choosing scores of one token [E] and its routing weights [k] (see ops_router.h).
void route_token(const float* logits, const RouterOptions& o, int64_t e_n, float* scores, int32_t* chosen,
                 float* probs) {
  const int64_t k = o.topk;
  std::vector<float> choose(static_cast<size_t>(e_n));
  if (o.sigmoid) {
    for (int64_t e = 0; e < e_n; ++e) {
      scores[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(logits[e]))));
      choose[static_cast<size_t>(e)] = scores[e] + (o.expert_bias.empty() ? 0.0f : o.expert_bias[static_cast<size_t>(e)]);
    }
  } else {
    kmath::softmax_row<double>(logits, e_n, scores);
    for (int64_t e = 0; e < e_n; ++e) choose[static_cast<size_t>(e)] = o.pre_softmax ? scores[e] : logits[e];
  }
  group_limited_top_k(choose.data(), e_n, k, o.num_groups, o.group_topk, chosen);
  if (o.sigmoid) {
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += scores[chosen[j]];
    for (int64_t j = 0; j < k; ++j)
      probs[j] = k > 1 ? static_cast<float>(scores[chosen[j]] / (sum + 1e-20)) : scores[chosen[j]];
  } else if (o.pre_softmax) {
    for (int64_t j = 0; j < k; ++j) probs[j] = scores[chosen[j]];
  } else {
    std::vector<float> sel(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) sel[static_cast<size_t>(j)] = logits[chosen[j]];
    kmath::softmax_row<double>(sel.data(), k, probs);
  }
  if (o.scaling_factor > 0)
    for (int64_t j = 0; j < k; ++j) probs[j] = static_cast<float>(probs[j] * o.scaling_factor);
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
  r.sigmoid = options.sigmoid;
  r.scaling_factor = options.scaling_factor;
  TANDEM_CHECK(options.expert_bias.empty() || static_cast<int64_t>(options.expert_bias.size()) == logits.dim(1));
  TANDEM_CHECK_MSG(r.topk >= 1 && r.topk <= r.experts, "router top-k " << r.topk << " of " << r.experts << " experts");
  const int64_t t_n = r.tokens, e_n = r.experts, k = r.topk;
  r.expert.assign(static_cast<size_t>(t_n * k), 0);
  r.kept.assign(static_cast<size_t>(t_n * k), 1);
  r.probs = Tensor({t_n, k});
  r.scores = Tensor({t_n, e_n});
  for (int64_t t = 0; t < t_n; ++t)
    route_token(logits.ptr() + t * e_n, options, e_n, r.scores.data.data() + t * e_n, r.expert.data() + t * k,
                r.probs.data.data() + t * k);
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
    const double scale = routing.scaling_factor > 0 ? routing.scaling_factor : 1.0;
    for (int64_t j = 0; j < k; ++j) sel_d[j] = kept[j] ? static_cast<float>(dp[j] * scale) : 0.0f;
    if (routing.sigmoid) {   // p_j = s_j / S (k > 1): ds_j = (dp_j - sum_i dp_i p_i) / S; ds/dlogit = s (1 - s)
      TANDEM_CHECK_MSG(!with_aux, "the aux loss with sigmoid scores is not implemented");
      double sum = 0, dot = 0;
      for (int64_t j = 0; j < k; ++j) sum += scores[chosen[j]];
      sum += 1e-20;
      for (int64_t j = 0; j < k; ++j) dot += double(sel_d[j]) * scores[chosen[j]] / sum;
      for (int64_t e = 0; e < e_n; ++e) dl[e] = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const double s = scores[chosen[j]];
        const double ds = k > 1 ? (double(sel_d[j]) - dot) / sum : double(sel_d[j]);
        dl[chosen[j]] += static_cast<float>(ds * s * (1.0 - s));
      }
      continue;
    }
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
