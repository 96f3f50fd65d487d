// CUDA kernels of part B against the CPU device: GEMMs (cuBLASLt, bf16 operands), grouped
// expert GEMMs, fused QKV split/merge, MoE router, permutation and row gather/scatter.
// Attention is in attention_b_test.cpp. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <numeric>

#include "backends/cpu/ops_permute.h"
#include "tests/cuda/kernels_b_util.h"

namespace tandem::cuda::testing {
namespace {

using exec::WeightLayout;

Shape weight_shape(WeightLayout layout, int64_t k, int64_t n) {
  return layout == WeightLayout::InOut ? Shape{k, n} : Shape{n, k};
}

struct GemmCase {
  int64_t m, k, n;
};
constexpr GemmCase kGemmCases[] = {{37, 53, 29}, {64, 128, 96}, {1, 7, 3}};

TEST_F(KernelsBTest, GemmForwardBothLayoutsWithAndWithoutBias) {
  SCOPED_TRACE(seed_text());
  for (const GemmCase& c : kGemmCases)
    for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn})
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(std::to_string(c.m) + "x" + std::to_string(c.k) + "x" + std::to_string(c.n) + " bias " +
                     std::to_string(with_bias));
        const Pair x = random_pair({c.m, c.k}), w = random_pair(weight_shape(layout, c.k, c.n), 0.1f);
        const Pair bias = with_bias ? random_pair({c.n}) : Pair{};
        const Pair y = poisoned({c.m, c.n});
        cpu_.gemm_forward(x.cpu, w.cpu, bias.cpu, layout, y.cpu);
        gpu_->gemm_forward(x.gpu, w.gpu, bias.gpu, layout, y.gpu);
        expect_bf16(y, "gemm y");
      }
}

TEST_F(KernelsBTest, GemmGradInputOverwritesBothLayouts) {
  SCOPED_TRACE(seed_text());
  for (const GemmCase& c : kGemmCases)
    for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
      const Pair dy = random_pair({c.m, c.n}), w = random_pair(weight_shape(layout, c.k, c.n), 0.1f);
      const Pair dx = poisoned({c.m, c.k});
      cpu_.gemm_grad_input(dy.cpu, w.cpu, layout, dx.cpu);
      gpu_->gemm_grad_input(dy.gpu, w.gpu, layout, dx.gpu);
      expect_bf16(dx, "gemm dx");
    }
}

TEST_F(KernelsBTest, GemmGradWeightAndBiasAccumulate) {
  SCOPED_TRACE(seed_text());
  for (const GemmCase& c : kGemmCases)
    for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
      const Pair x = random_pair({c.m, c.k}), dy = random_pair({c.m, c.n});
      // Non-zero starting gradients: the result must be start + x^T dy, not x^T dy.
      const Pair dw = random_pair(weight_shape(layout, c.k, c.n), 10.0f), db = random_pair({c.n}, 10.0f);
      cpu_.gemm_grad_weight(x.cpu, dy.cpu, layout, dw.cpu, db.cpu);
      gpu_->gemm_grad_weight(x.gpu, dy.gpu, layout, dw.gpu, db.gpu);
      expect_bf16(dw, "gemm dw");
      expect_fp32(db, "gemm dbias");   // column sums of the unrounded dy
    }
}

TEST_F(KernelsBTest, GroupedGemmsPerExpertWithEmptyExperts) {
  SCOPED_TRACE(seed_text());
  const std::vector<int64_t> counts{5, 0, 17, 3, 0};
  const int64_t rows = std::accumulate(counts.begin(), counts.end(), int64_t{0}), k = 24, n = 41, e = 5;
  const Pair x = random_pair({rows, k}), w = random_pair({e, k, n}, 0.2f), dy = random_pair({rows, n});
  const Pair y = poisoned({rows, n});
  cpu_.grouped_gemm_forward(x.cpu, w.cpu, counts, y.cpu);
  gpu_->grouped_gemm_forward(x.gpu, w.gpu, counts, y.gpu);
  expect_bf16(y, "grouped y");
  const Pair dx = poisoned({rows, k});
  cpu_.grouped_gemm_grad_input(dy.cpu, w.cpu, counts, dx.cpu);
  gpu_->grouped_gemm_grad_input(dy.gpu, w.gpu, counts, dx.gpu);
  expect_bf16(dx, "grouped dx");
  const Pair dw = random_pair({e, k, n}, 5.0f);   // accumulated; empty experts keep their values
  cpu_.grouped_gemm_grad_weight(x.cpu, dy.cpu, counts, dw.cpu);
  gpu_->grouped_gemm_grad_weight(x.gpu, dy.gpu, counts, dw.gpu);
  expect_bf16(dw, "grouped dw");
}

TEST_F(KernelsBTest, SplitAndMergeQkvAreExactCopies) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 13, groups = 3, qpg = 2, d = 7;
  const Pair mixed = random_pair({rows, groups * (qpg + 2) * d});
  const Pair q = poisoned({rows, groups * qpg * d}), k = poisoned({rows, groups * d}), v = poisoned({rows, groups * d});
  cpu_.split_qkv(mixed.cpu, groups, qpg, d, q.cpu, k.cpu, v.cpu);
  gpu_->split_qkv(mixed.gpu, groups, qpg, d, q.gpu, k.gpu, v.gpu);
  expect_equal(q, "q");
  expect_equal(k, "k");
  expect_equal(v, "v");
  const Pair back = poisoned(mixed.cpu.shape);
  cpu_.merge_qkv(q.cpu, k.cpu, v.cpu, groups, qpg, d, back.cpu);
  gpu_->merge_qkv(q.gpu, k.gpu, v.gpu, groups, qpg, d, back.gpu);
  expect_equal(back, "merged");
}

void expect_same_routing(const exec::RoutingResult& c, const exec::RoutingResult& g) {
  EXPECT_EQ(g.expert, c.expert);
  EXPECT_EQ(g.kept, c.kept);
  EXPECT_EQ(g.routed_per_expert, c.routed_per_expert);
  EXPECT_EQ(g.tokens_per_expert, c.tokens_per_expert);
}

TEST_F(KernelsBTest, RouterForwardBackwardAndAuxLossMatchTheCpu) {
  SCOPED_TRACE(seed_text());
  const int64_t tokens = 77, experts = 6;
  for (bool pre_softmax : {false, true})
    for (double capacity : {0.0, 1.0}) {
      SCOPED_TRACE("pre_softmax " + std::to_string(pre_softmax) + " capacity " + std::to_string(capacity));
      const Pair logits = random_pair({tokens, experts}, 2.0f);
      const exec::RouterArgs args{2, pre_softmax, capacity};
      const exec::RoutingResult rc = cpu_.router_forward(logits.cpu, args);
      const exec::RoutingResult rg = gpu_->router_forward(logits.gpu, args);
      expect_same_routing(rc, rg);
      expect_fp32(Pair{rc.probs, rg.probs}, "probs");
      expect_fp32(Pair{rc.scores, rg.scores}, "scores");
      const double aux_c = cpu_.router_aux_loss(rc, 0.01, rc.routed_per_expert, tokens);
      const double aux_g = gpu_->router_aux_loss(rg, 0.01, rg.routed_per_expert, tokens);
      EXPECT_NEAR(aux_g, aux_c, 1e-6 * std::abs(aux_c));
      const Pair d_probs = random_pair({tokens, 2}), d_logits = poisoned({tokens, experts});
      cpu_.router_backward(logits.cpu, rc, d_probs.cpu, 0.01, rc.routed_per_expert, tokens, 1.0, d_logits.cpu);
      gpu_->router_backward(logits.gpu, rg, d_probs.gpu, 0.01, rg.routed_per_expert, tokens, 1.0, d_logits.gpu);
      expect_fp32(d_logits, "d_logits");
    }
}

exec::PermutationPlan plan_of(const exec::RoutingResult& r) {
  const cpu::PermutePlan p = cpu::make_permute_plan(r.expert, r.kept, r.tokens, r.topk, r.experts);
  return exec::PermutationPlan{p.tokens, p.topk, p.source, p.tokens_per_expert};
}

TEST_F(KernelsBTest, PermuteAndUnpermuteForwardBackward) {
  SCOPED_TRACE(seed_text());
  const int64_t tokens = 45, experts = 4, h = 33;
  const Pair logits = random_pair({tokens, experts});
  const exec::RoutingResult routing = cpu_.router_forward(logits.cpu, exec::RouterArgs{2, false, 0.9});
  const exec::PermutationPlan plan = plan_of(routing);   // capacity drops some selections
  const int64_t n = static_cast<int64_t>(plan.source.size());
  const Pair tokens_in = random_pair({tokens, h}), permuted = poisoned({n, h});
  cpu_.permute_forward(tokens_in.cpu, plan, permuted.cpu);
  gpu_->permute_forward(tokens_in.gpu, plan, permuted.gpu);
  expect_equal(permuted, "permuted");
  const Pair d_out = random_pair({n, h}), d_tokens = poisoned({tokens, h});
  cpu_.permute_backward(d_out.cpu, plan, d_tokens.cpu);
  gpu_->permute_backward(d_out.gpu, plan, d_tokens.gpu);
  expect_fp32(d_tokens, "d_tokens");
  const Pair probs = both({tokens, 2}, cpu_.to_host(routing.probs)), expert_out = random_pair({n, h});
  const Pair y = poisoned({tokens, h});
  cpu_.unpermute_forward(expert_out.cpu, plan, probs.cpu, y.cpu);
  gpu_->unpermute_forward(expert_out.gpu, plan, probs.gpu, y.gpu);
  expect_fp32(y, "unpermuted");
  const Pair d_y = random_pair({tokens, h}), d_expert = poisoned({n, h}), d_probs = poisoned({tokens, 2});
  cpu_.unpermute_backward(expert_out.cpu, plan, probs.cpu, d_y.cpu, d_expert.cpu, d_probs.cpu);
  gpu_->unpermute_backward(expert_out.gpu, plan, probs.gpu, d_y.gpu, d_expert.gpu, d_probs.gpu);
  expect_fp32(d_expert, "d_expert_out");
  expect_fp32(d_probs, "d_probs");
}

TEST_F(KernelsBTest, GatherRowsAndScatterAddRowsWithRepeatedIndices) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 19, cols = 37;
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  std::vector<int64_t> index(50);
  for (int64_t& i : index) i = pick(rng_);   // repeats: scatter must sum them
  const Pair in = random_pair({rows, cols}), out = poisoned({50, cols});
  cpu_.gather_rows(in.cpu, index, out.cpu);
  gpu_->gather_rows(in.gpu, index, out.gpu);
  expect_equal(out, "gathered");
  const Pair src = random_pair({50, cols}), acc = random_pair({rows, cols});   // accumulated into
  cpu_.scatter_add_rows(src.cpu, index, acc.cpu);
  gpu_->scatter_add_rows(src.gpu, index, acc.gpu);
  expect_fp32(acc, "scattered");
}

}  // namespace
}  // namespace tandem::cuda::testing
