// CPU kernels, MoE and optimizer part: router (top-k, aux loss, capacity), permute/unpermute,
// chunk sorting, AdamW, global-norm helpers and bf16 rounding. Gradients against central
// differences, fresh inputs each run (seed printed on failure), NaN-poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backends/cpu/ops_optimizer.h"
#include "backends/cpu/ops_permute.h"
#include "backends/cpu/ops_router.h"
#include "backends/kernel_math/bf16_math.h"
#include "tests/cpu/kernel_test_support.h"

namespace tandem::cpu {
namespace {

using testing::all_finite;
using testing::check_gradient;
using testing::KernelTest;
using testing::weighted_sum;

using RouterTest = KernelTest;
using PermuteTest = KernelTest;
using OptimizerTest = KernelTest;

struct RouterCase {
  bool pre_softmax;
  double capacity_factor;
  double aux_coeff;
};

void check_router_gradient(KernelTest& t, const RouterCase& c) {
  const int64_t tokens = 8, experts = 4, k = 2;
  Tensor logits = t.random({tokens, experts}, -2, 2), w = t.random({tokens, k});
  const RouterOptions opt{k, c.pre_softmax, c.capacity_factor};
  const Routing base = router_forward(logits, opt);
  const AuxLossInputs aux{c.aux_coeff, base.routed_per_expert, tokens};
  const double d_aux = 0.7;
  Tensor d_logits = KernelTest::poisoned(logits.shape);
  router_backward(logits, base, w, aux, d_aux, d_logits);
  ASSERT_TRUE(all_finite(d_logits));
  check_gradient(logits, d_logits, [&] {
    const Routing r = router_forward(logits, opt);
    if (r.expert != base.expert || r.kept != base.kept) return std::numeric_limits<double>::quiet_NaN();
    return weighted_sum(r.probs, w) + d_aux * router_aux_loss(r, aux);
  }, "router d logits", 1e-3f);
}

TEST_F(RouterTest, GradientsForEveryMode) {
  for (bool pre : {false, true}) {
    for (double cf : {0.0, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "pre_softmax " << pre << ", capacity factor " << cf);
      check_router_gradient(*this, {pre, cf, 1.0});
      check_router_gradient(*this, {pre, cf, 0.0});
    }
  }
}

TEST_F(RouterTest, TopKSelectionAndWeights) {
  const int64_t tokens = 6, experts = 5, k = 2;
  Tensor logits = random({tokens, experts}, -3, 3);
  const Routing post = router_forward(logits, {k, false, 0.0});
  const Routing pre = router_forward(logits, {k, true, 0.0});
  EXPECT_EQ(post.expert, pre.expert);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = logits.data.data() + t * experts;
    const int32_t first = post.expert[t * k], second = post.expert[t * k + 1];
    for (int64_t e = 0; e < experts; ++e) {
      if (e != first) {
        EXPECT_GE(row[first], row[e]);
      }
      if (e != first && e != second) {
        EXPECT_GE(row[second], row[e]);
      }
    }
    EXPECT_NEAR(post.probs.data[t * k] + post.probs.data[t * k + 1], 1.0, 1e-6);   // softmax over the k
    EXPECT_NEAR(post.probs.data[t * k] / post.probs.data[t * k + 1], std::exp(row[first] - row[second]), 1e-4);
    EXPECT_EQ(pre.probs.data[t * k], pre.scores.data[t * experts + first]);          // entry of the full softmax
  }
  EXPECT_EQ(std::accumulate(post.tokens_per_expert.begin(), post.tokens_per_expert.end(), int64_t{0}), tokens * k);
  EXPECT_EQ(post.tokens_per_expert, post.routed_per_expert);
  EXPECT_EQ(post.capacity, 0);
}

TEST_F(RouterTest, AuxLossFollowsTheSwitchFormula) {
  const int64_t tokens = 10, experts = 4, k = 2;
  Tensor logits = random({tokens, experts}, -2, 2);
  const Routing r = router_forward(logits, {k, false, 0.0});
  const double coeff = 0.01;
  const double loss = router_aux_loss(r, {coeff, r.routed_per_expert, tokens});
  double want = 0;
  for (int64_t e = 0; e < experts; ++e) {
    double p = 0;
    for (int64_t t = 0; t < tokens; ++t) p += r.scores.data[t * experts + e];
    const double f_e = static_cast<double>(r.routed_per_expert[e]) / (tokens * k);   // fraction of selections
    want += f_e * (p / tokens);                                                        // times mean probability
  }
  want *= coeff * experts;
  EXPECT_NEAR(loss, want, 1e-9);
  // Perfect balance of uniform routing gives coeff exactly.
  Tensor flat({tokens, experts}, 0.0f);
  const Routing u = router_forward(flat, {k, false, 0.0});
  const std::vector<int64_t> balanced(experts, tokens * k / experts);
  EXPECT_NEAR(router_aux_loss(u, {coeff, balanced, tokens}), coeff, 1e-9);
}

TEST_F(RouterTest, CapacityDropsTheLowestWeights) {
  const int64_t tokens = 12, experts = 3, k = 1;
  Tensor logits = random({tokens, experts}, -1, 1);
  for (int64_t t = 0; t < tokens; ++t) logits.data[t * experts] += 3.0f;   // everyone prefers expert 0
  const Routing r = router_forward(logits, {k, false, 1.0});
  EXPECT_EQ(r.capacity, 4);   // ceil(12 * 1 / 3 * 1.0)
  EXPECT_EQ(r.routed_per_expert[0], tokens);
  EXPECT_EQ(r.tokens_per_expert[0], 4);
  const Routing dropless = router_forward(logits, {k, false, 0.0});
  for (int64_t t = 0; t < tokens; ++t) {
    ASSERT_EQ(r.expert[t], 0);
    EXPECT_EQ(r.probs.data[t] == 0.0f, r.kept[t] == 0);
    EXPECT_EQ(dropless.probs.data[t], 1.0f);   // top-1 softmax over one logit: equal weights
    EXPECT_EQ(r.kept[t], t < 4 ? 1 : 0);       // ties go to the lower token index
  }
  // Pre-softmax weights differ per token: every kept weight is >= every dropped one.
  const Routing pre = router_forward(logits, {k, true, 1.0});
  EXPECT_EQ(pre.tokens_per_expert[0], 4);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t u = 0; u < tokens; ++u) {
      if (pre.kept[t] && !pre.kept[u]) {
        EXPECT_GE(pre.scores.data[t * experts], pre.scores.data[u * experts]);
      }
    }
  }
}

TEST_F(PermuteTest, PlanIsExpertMajorAndStable) {
  // 4 tokens, top-2; token 2's second choice dropped.
  const std::vector<int32_t> expert = {1, 0, 2, 1, 0, 1, 2, 0};
  const std::vector<uint8_t> kept = {1, 1, 1, 1, 1, 0, 1, 1};
  const PermutePlan plan = make_permute_plan(expert, kept, 4, 2, 3);
  EXPECT_EQ(plan.tokens_per_expert, (std::vector<int64_t>{3, 2, 2}));
  // expert 0: tokens 0, 2, 3; expert 1: tokens 0, 1; expert 2: tokens 1, 3.
  EXPECT_EQ(plan.source, (std::vector<int64_t>{1, 4, 7, 0, 3, 2, 6}));
}

TEST_F(PermuteTest, PermuteUnpermuteGradientsAndIdentityExperts) {
  const int64_t tokens = 6, experts = 3, k = 2, h = 4;
  Tensor logits = random({tokens, experts}, -2, 2);
  const Routing routing = router_forward(logits, {k, false, 0.0});
  const PermutePlan plan = make_permute_plan(routing);
  const int64_t n = static_cast<int64_t>(plan.source.size());
  ASSERT_EQ(n, tokens * k);
  Tensor x = random({tokens, h}), permuted = poisoned({n, h});
  permute_forward(x, plan, permuted);
  Tensor y = poisoned({tokens, h});
  unpermute_forward(permuted, plan, routing.probs, y);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(y.data[i], x.data[i], 1e-6);   // weights sum to 1
  Tensor w_perm = random({n, h}), d_x = poisoned(x.shape);
  permute_backward(w_perm, plan, d_x);
  check_gradient(x, d_x, [&] {
    permute_forward(x, plan, permuted);
    return weighted_sum(permuted, w_perm);
  }, "permute d tokens");
  Tensor expert_out = random({n, h}), probs = routing.probs, w_y = random({tokens, h});
  Tensor d_out = poisoned({n, h}), d_probs = poisoned({tokens, k});
  unpermute_backward(expert_out, plan, probs, w_y, d_out, d_probs);
  ASSERT_TRUE(all_finite(d_out) && all_finite(d_probs));
  auto loss = [&] {
    unpermute_forward(expert_out, plan, probs, y);
    return weighted_sum(y, w_y);
  };
  check_gradient(expert_out, d_out, loss, "unpermute d expert_out");
  check_gradient(probs, d_probs, loss, "unpermute d probs");
}

TEST_F(PermuteTest, DroppedSelectionsGetZeroOutputAndGradient) {
  const std::vector<int32_t> expert = {0, 1};
  const std::vector<uint8_t> kept = {1, 0};
  const PermutePlan plan = make_permute_plan(expert, kept, 2, 1, 2);
  Tensor expert_out = random({1, 3}), probs({2, 1}, std::vector<float>{0.5f, 0.0f}), y = poisoned({2, 3});
  unpermute_forward(expert_out, plan, probs, y);
  for (int64_t j = 0; j < 3; ++j) {
    EXPECT_FLOAT_EQ(y.data[j], 0.5f * expert_out.data[j]);
    EXPECT_EQ(y.data[3 + j], 0.0f);
  }
  Tensor d_out = poisoned({1, 3}), d_probs = poisoned({2, 1});
  unpermute_backward(expert_out, plan, probs, random({2, 3}), d_out, d_probs);
  EXPECT_EQ(d_probs.data[1], 0.0f);
}

TEST_F(PermuteTest, SortChunksAndItsGradientAreInverse) {
  const std::vector<int64_t> sizes = {2, 0, 3, 1}, order = {2, 0, 3, 1};
  Tensor x = random({6, 2}), y = poisoned({6, 2}), back = poisoned({6, 2});
  sort_chunks_forward(x, sizes, order, y);
  EXPECT_EQ(y.data[0], x.data[2 * 2]);   // first row of chunk 2 comes first
  sort_chunks_backward(y, sizes, order, back);
  EXPECT_EQ(back.data, x.data);
}

TEST_F(OptimizerTest, AdamWMatchesTheDecoupledFormulaOverSteps) {
  const int64_t n = 16;
  Tensor p = random({n}), m({n}, 0.0f), v({n}, 0.0f);
  std::vector<double> pr(p.data.begin(), p.data.end()), mr(n, 0.0), vr(n, 0.0);
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5;
  for (int64_t step = 1; step <= 3; ++step) {
    Tensor g = random({n});
    adamw_step(p.data, g.data, m.data, v.data, kmath::adamw_step_constants(lr, b1, b2, eps, wd, step),
               static_cast<float>(scale));
    for (int64_t i = 0; i < n; ++i) {
      const double gi = g.data[i] * scale;
      pr[i] *= 1 - lr * wd;
      mr[i] = b1 * mr[i] + (1 - b1) * gi;
      vr[i] = b2 * vr[i] + (1 - b2) * gi * gi;
      const double mh = mr[i] / (1 - std::pow(b1, step)), vh = vr[i] / (1 - std::pow(b2, step));
      pr[i] -= lr * mh / (std::sqrt(vh) + eps);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(p.data[i], pr[i], 1e-6);
    EXPECT_NEAR(m.data[i], mr[i], 1e-6);
    EXPECT_NEAR(v.data[i], vr[i], 1e-7);
  }
}

TEST_F(OptimizerTest, NormHelpersAndClipCoefficient) {
  const std::vector<float> x = {3.0f, -4.0f};
  EXPECT_DOUBLE_EQ(sum_of_squares(x), 25.0);
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0f);
  EXPECT_NEAR(clip_coefficient(5.0, 1.0), 1.0 / (5.0 + 1e-6), 1e-7);
  std::vector<float> y = x;
  scale_in_place(y, 0.5f);
  EXPECT_EQ(y, (std::vector<float>{1.5f, -2.0f}));
}

TEST_F(OptimizerTest, Bf16RoundsToNearestEven) {
  const float one = 1.0f, ulp = std::ldexp(1.0f, -7);   // bf16 spacing just above 1
  EXPECT_EQ(kmath::round_to_bf16(one), one);
  EXPECT_EQ(kmath::round_to_bf16(one + ulp / 2), one);                  // tie -> even (1.0)
  EXPECT_EQ(kmath::round_to_bf16(one + 3 * ulp / 2), one + 2 * ulp);    // tie -> even (1 + 2 ulp)
  EXPECT_EQ(kmath::round_to_bf16(one + ulp * 0.51f), one + ulp);        // above the tie
  EXPECT_EQ(kmath::round_to_bf16(-(one + ulp / 2)), -one);
  EXPECT_TRUE(std::isnan(kmath::round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(kmath::round_to_bf16(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_EQ(kmath::round_to_bf16(std::numeric_limits<float>::max()), std::numeric_limits<float>::infinity());
  std::vector<float> buf = {one + ulp / 2, 2.0f};
  round_to_bf16_in_place(buf);
  EXPECT_EQ(buf, (std::vector<float>{one, 2.0f}));
}

}  // namespace
}  // namespace tandem::cpu
