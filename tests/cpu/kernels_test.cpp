// CPU kernels, dense part: every backward checked against central differences of its forward on
// tiny random shapes (fresh inputs each run, seed printed on failure), outputs NaN-poisoned before
// each call. Values against an independent implementation: tests/cpu/torch_reference.py.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "backends/cpu/ops_activation.h"
#include "backends/cpu/ops_attention.h"
#include "backends/cpu/ops_cross_entropy.h"
#include "backends/cpu/ops_embedding.h"
#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/ops_norm.h"
#include "backends/cpu/ops_rope.h"
#include "tests/cpu/kernel_test_support.h"

namespace tandem::cpu {
namespace {

using testing::all_finite;
using testing::check_gradient;
using testing::KernelTest;
using testing::weighted_sum;

using EmbeddingTest = KernelTest;
using NormTest = KernelTest;
using GemmTest = KernelTest;
using AttentionTest = KernelTest;
using RopeTest = KernelTest;
using ActivationTest = KernelTest;
using CrossEntropyTest = KernelTest;

TEST_F(EmbeddingTest, VocabShardLookupAndScatterAddGradient) {
  const int64_t tokens = 7, v_local = 5, h = 3, vocab_start = 5;
  std::vector<int32_t> ids = random_ids(tokens, 0, 14);   // some ids belong to other shards
  ids[0] = ids[1] = 6;                                      // a repeated id accumulates
  Tensor table = random({v_local, h}), w = random({tokens, h});
  Tensor out = poisoned({tokens, h});
  embedding_forward(ids, table, vocab_start, out);
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = ids[t] - vocab_start;
    for (int64_t j = 0; j < h; ++j) {
      const float want = (row >= 0 && row < v_local) ? table.data[row * h + j] : 0.0f;
      EXPECT_EQ(out.data[t * h + j], want);
    }
  }
  Tensor d_table({v_local, h}, 0.0f);
  embedding_backward(ids, w, vocab_start, d_table);
  check_gradient(table, d_table, [&] {
    embedding_forward(ids, table, vocab_start, out);
    return weighted_sum(out, w);
  }, "d table");
}

TEST_F(NormTest, LayerNormGradients) {
  const int64_t rows = 4, h = 6;
  const float eps = 1e-5f;
  for (bool with_beta : {true, false}) {
    Tensor x = random({rows, h}, -2, 2), gamma = random({h}, 0.5f, 1.5f), beta = random({h}), w = random({rows, h});
    Tensor no_beta;
    Tensor& b = with_beta ? beta : no_beta;
    Tensor y = poisoned({rows, h}), mean = poisoned({rows}), rstd = poisoned({rows});
    layernorm_forward(x, gamma, b, eps, y, mean, rstd);
    ASSERT_TRUE(all_finite(y) && all_finite(mean) && all_finite(rstd));
    Tensor dx = poisoned({rows, h}), dgamma({h}, 0.0f), dbeta({h}, 0.0f);
    layernorm_backward(x, gamma, mean, rstd, w, dx, dgamma, with_beta ? dbeta.view() : TensorView{});
    ASSERT_TRUE(all_finite(dx));
    auto loss = [&] {
      layernorm_forward(x, gamma, b, eps, y, mean, rstd);
      return weighted_sum(y, w);
    };
    check_gradient(x, dx, loss, "layernorm dx");
    check_gradient(gamma, dgamma, loss, "layernorm dgamma");
    if (with_beta) check_gradient(beta, dbeta, loss, "layernorm dbeta");
  }
}

TEST_F(NormTest, RmsNormGradients) {
  const int64_t rows = 5, h = 4;
  Tensor x = random({rows, h}, -2, 2), gamma = random({h}, 0.5f, 1.5f), w = random({rows, h});
  Tensor y = poisoned({rows, h}), rstd = poisoned({rows});
  rmsnorm_forward(x, gamma, 1e-6f, y, rstd);
  Tensor dx = poisoned({rows, h}), dgamma({h}, 0.0f);
  rmsnorm_backward(x, gamma, rstd, w, dx, dgamma);
  ASSERT_TRUE(all_finite(y) && all_finite(dx));
  auto loss = [&] {
    rmsnorm_forward(x, gamma, 1e-6f, y, rstd);
    return weighted_sum(y, w);
  };
  check_gradient(x, dx, loss, "rmsnorm dx");
  check_gradient(gamma, dgamma, loss, "rmsnorm dgamma");
}

TEST_F(GemmTest, LinearGradientsBothLayoutsAccumulate) {
  const int64_t m = 5, k = 4, n = 3;
  for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
    const Shape ws = layout == WeightLayout::InOut ? Shape{k, n} : Shape{n, k};
    Tensor x = random({m, k}), w = random(ws), bias = random({n}), g = random({m, n});
    Tensor y = poisoned({m, n});
    gemm_forward(x, w, bias, layout, y);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double want = bias.data[j];
        for (int64_t c = 0; c < k; ++c) {
          want += static_cast<double>(x.data[i * k + c]) *
                  (layout == WeightLayout::InOut ? w.data[c * n + j] : w.data[j * k + c]);
        }
        EXPECT_NEAR(y.data[i * n + j], want, 1e-5);
      }
    }
    Tensor dx = poisoned({m, k});
    gemm_grad_input(g, w, layout, dx);
    Tensor dw_prior = random(ws), db_prior = random({n});
    Tensor dw = dw_prior, db = db_prior;
    gemm_grad_weight(x, g, layout, dw, db);
    for (int64_t i = 0; i < dw.numel(); ++i) dw.data[i] -= dw_prior.data[i];   // accumulation: remove the prior
    for (int64_t i = 0; i < db.numel(); ++i) db.data[i] -= db_prior.data[i];
    auto loss = [&] {
      gemm_forward(x, w, bias, layout, y);
      return weighted_sum(y, g);
    };
    check_gradient(x, dx, loss, "gemm dx");
    check_gradient(w, dw, loss, "gemm dw");
    check_gradient(bias, db, loss, "gemm dbias");
  }
}

TEST_F(GemmTest, GroupedGemmGradientsWithAnEmptyExpert) {
  const int64_t k = 3, n = 4;
  const std::vector<int64_t> counts = {2, 0, 3};
  const int64_t rows = 5, experts = 3;
  for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
    const Shape ws = layout == WeightLayout::InOut ? Shape{experts, k, n} : Shape{experts, n, k};
    Tensor x = random({rows, k}), w = random(ws), g = random({rows, n});
    Tensor y = poisoned({rows, n});
    grouped_gemm_forward(x, w, counts, layout, y);
    ASSERT_TRUE(all_finite(y));
    // Row 3 belongs to expert 2: equal to an ordinary GEMM with that expert's weight.
    const int64_t per = k * n;
    Tensor w2(layout == WeightLayout::InOut ? Shape{k, n} : Shape{n, k},
              std::vector<float>(w.data.begin() + 2 * per, w.data.begin() + 3 * per));
    Tensor x3({1, k}, std::vector<float>(x.data.begin() + 3 * k, x.data.begin() + 4 * k)), y3({1, n});
    gemm_forward(x3, w2, ConstTensorView{}, layout, y3);
    for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(y.data[3 * n + j], y3.data[j], 1e-6);
    Tensor dx = poisoned({rows, k}), dw(ws, 0.0f);
    grouped_gemm_grad_input(g, w, counts, layout, dx);
    grouped_gemm_grad_weight(x, g, counts, layout, dw);
    auto loss = [&] {
      grouped_gemm_forward(x, w, counts, layout, y);
      return weighted_sum(y, g);
    };
    check_gradient(x, dx, loss, "grouped gemm dx");
    check_gradient(w, dw, loss, "grouped gemm dw");
  }
}

struct AttentionCase {
  int64_t s_q, s_kv, b, hq, hkv, d;
  bool causal;
  std::vector<int32_t> q_pos, kv_pos;
};

void run_attention_case(KernelTest& t, const AttentionCase& c) {
  Tensor q = t.random({c.s_q, c.b, c.hq, c.d}), k = t.random({c.s_kv, c.b, c.hkv, c.d});
  Tensor v = t.random({c.s_kv, c.b, c.hkv, c.d}), w = t.random({c.s_q, c.b, c.hq, c.d});
  AttentionOptions opt;
  opt.causal = c.causal;
  opt.q_positions = c.q_pos;
  opt.kv_positions = c.kv_pos;
  Tensor out = KernelTest::poisoned(q.shape), lse = KernelTest::poisoned({c.b, c.hq, c.s_q});
  attention_forward(q, k, v, opt, out, lse);
  ASSERT_TRUE(all_finite(out) && all_finite(lse));
  Tensor dq = KernelTest::poisoned(q.shape), dk = KernelTest::poisoned(k.shape), dv = KernelTest::poisoned(v.shape);
  attention_backward(q, k, v, out, lse, w, opt, dq, dk, dv);
  ASSERT_TRUE(all_finite(dq) && all_finite(dk) && all_finite(dv));
  auto loss = [&] {
    attention_forward(q, k, v, opt, out, lse);
    return weighted_sum(out, w);
  };
  check_gradient(q, dq, loss, "attention dq");
  check_gradient(k, dk, loss, "attention dk");
  check_gradient(v, dv, loss, "attention dv");
}

TEST_F(AttentionTest, CausalGqaGradients) { run_attention_case(*this, {5, 5, 2, 4, 2, 3, true, {}, {}}); }

TEST_F(AttentionTest, NonCausalMultiHeadGradients) { run_attention_case(*this, {3, 4, 1, 2, 2, 4, false, {}, {}}); }

TEST_F(AttentionTest, ContextParallelShardWithGlobalPositions) {
  // A load-balanced CP shard: queries at positions {1, 6} against all 8 keys in chunk order.
  run_attention_case(*this, {2, 8, 1, 2, 1, 3, true, {1, 6}, {0, 1, 6, 7, 2, 3, 4, 5}});
}

TEST_F(AttentionTest, FirstQueryAttendsOnlyToItself) {
  Tensor q = random({3, 1, 2, 4}), k = random({3, 1, 1, 4}), v = random({3, 1, 1, 4});
  Tensor out = poisoned(q.shape), lse = poisoned({1, 2, 3});
  attention_forward(q, k, v, {}, out, lse);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(out.data[h * 4 + j], v.data[j], 1e-6);
  }
}

TEST_F(AttentionTest, SplitAndMergeOfFusedQkvAreInverse) {
  const int64_t rows = 3, groups = 2, qpg = 2, d = 2;
  Tensor mixed = random({rows, groups * (qpg + 2) * d});
  Tensor q = poisoned({rows, groups * qpg * d}), k = poisoned({rows, groups * d}), v = poisoned({rows, groups * d});
  split_qkv(mixed, groups, qpg, d, q, k, v);
  EXPECT_EQ(k.data[0], mixed.data[qpg * d]);                       // row 0, group 0, key
  EXPECT_EQ(v.data[d], mixed.data[(qpg + 2) * d + (qpg + 1) * d]);  // row 0, group 1, value
  Tensor back = poisoned(mixed.shape);
  merge_qkv(q, k, v, groups, qpg, d, back);
  EXPECT_EQ(back.data, mixed.data);
}

TEST_F(RopeTest, RotationGradientAndPassThrough) {
  const int64_t s = 4, b = 2, heads = 2, d = 6;
  const std::vector<int32_t> positions = {3, 9, 0, 17};
  for (int64_t rot : {int64_t{0}, int64_t{4}}) {
    RopeOptions opt;
    opt.rot_dim = rot;
    opt.base = 500.0;
    opt.positions = positions;
    Tensor x = random({s, b, heads, d}), w = random({s, b, heads, d});
    Tensor y = poisoned(x.shape), dx = poisoned(x.shape);
    rope_forward(x, opt, y);
    rope_backward(w, opt, dx);
    ASSERT_TRUE(all_finite(y) && all_finite(dx));
    if (rot == 4) {
      EXPECT_EQ(y.data[5], x.data[5]);   // feature 5 is outside the rotary dimension
    }
    check_gradient(x, dx, [&] {
      rope_forward(x, opt, y);
      return weighted_sum(y, w);
    }, "rope dx");
  }
}

TEST_F(RopeTest, PositionZeroIsIdentityAndInPlaceWorks) {
  Tensor x = random({1, 1, 1, 8});
  Tensor y = x;
  rope_forward(y, {}, y);
  EXPECT_EQ(y.data, x.data);
}

TEST_F(ActivationTest, GeluBothFormsAndSwigluGradients) {
  for (GeluForm form : {GeluForm::Tanh, GeluForm::Erf}) {
    Tensor x = random({3, 5}, -3, 3), w = random({3, 5});
    Tensor y = poisoned(x.shape), dx = poisoned(x.shape);
    gelu_forward(x, form, y);
    gelu_backward(x, w, form, dx);
    check_gradient(x, dx, [&] {
      gelu_forward(x, form, y);
      return weighted_sum(y, w);
    }, form == GeluForm::Tanh ? "gelu tanh dx" : "gelu erf dx");
  }
  Tensor x = random({3, 8}, -3, 3), w = random({3, 4});
  Tensor y = poisoned({3, 4}), dx = poisoned(x.shape);
  swiglu_forward(x, y);
  swiglu_backward(x, w, dx);
  check_gradient(x, dx, [&] {
    swiglu_forward(x, y);
    return weighted_sum(y, w);
  }, "swiglu dx");
}

TEST_F(CrossEntropyTest, SingleRankGradient) {
  const int64_t tokens = 4, vocab = 7;
  Tensor logits = random({tokens, vocab}, -3, 3), w = random({tokens});
  const std::vector<int32_t> targets = random_ids(tokens, 0, vocab - 1);
  Tensor loss = poisoned({tokens}), mx = poisoned({tokens}), se = poisoned({tokens});
  cross_entropy_forward(logits, targets, loss, mx, se);
  for (int64_t t = 0; t < tokens; ++t) {
    double z = 0;
    for (int64_t j = 0; j < vocab; ++j) z += std::exp(static_cast<double>(logits.data[t * vocab + j]));
    EXPECT_NEAR(loss.data[t], std::log(z) - logits.data[t * vocab + targets[t]], 1e-5);
  }
  Tensor d_logits = poisoned(logits.shape);
  cross_entropy_backward(logits, targets, 0, mx, se, w, d_logits);
  check_gradient(logits, d_logits, [&] {
    cross_entropy_forward(logits, targets, loss, mx, se);
    return weighted_sum(loss, w);
  }, "cross-entropy d logits");
}

TEST_F(CrossEntropyTest, TwoVocabShardsWithCallerAllReduceMatchOneRank) {
  const int64_t tokens = 5, vocab = 8, half = vocab / 2;
  Tensor logits = random({tokens, vocab}, -4, 4), d_loss = random({tokens});
  const std::vector<int32_t> targets = random_ids(tokens, 0, vocab - 1);
  Tensor loss1({tokens}), mx1({tokens}), se1({tokens}), grad1(logits.shape);
  cross_entropy_forward(logits, targets, loss1, mx1, se1);
  cross_entropy_backward(logits, targets, 0, mx1, se1, d_loss, grad1);
  std::vector<Tensor> shards(2, Tensor({tokens, half}));
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < half; ++j) shards[r].data[t * half + j] = logits.data[t * vocab + r * half + j];
    }
  }
  Tensor mx({tokens}, -INFINITY), se({tokens}, 0.0f), tl({tokens}, 0.0f);
  for (int64_t r = 0; r < 2; ++r) {   // all-reduce MAX
    Tensor m = poisoned({tokens});
    cross_entropy_local_max(shards[r], m);
    for (int64_t t = 0; t < tokens; ++t) mx.data[t] = std::max(mx.data[t], m.data[t]);
  }
  for (int64_t r = 0; r < 2; ++r) {   // all-reduce SUM of both
    Tensor s = poisoned({tokens}), l = poisoned({tokens});
    cross_entropy_local_sums(shards[r], targets, r * half, mx, s, l);
    for (int64_t t = 0; t < tokens; ++t) {
      se.data[t] += s.data[t];
      tl.data[t] += l.data[t];
    }
  }
  Tensor loss = poisoned({tokens});
  cross_entropy_loss(se, tl, loss);
  for (int64_t t = 0; t < tokens; ++t) EXPECT_NEAR(loss.data[t], loss1.data[t], 1e-5 * (1 + std::fabs(loss1.data[t])));
  for (int64_t r = 0; r < 2; ++r) {
    Tensor g = poisoned({tokens, half});
    cross_entropy_backward(shards[r], targets, r * half, mx, se, d_loss, g);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < half; ++j) EXPECT_NEAR(g.data[t * half + j], grad1.data[t * vocab + r * half + j], 1e-6);
    }
  }
}

}  // namespace
}  // namespace tandem::cpu
