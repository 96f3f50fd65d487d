#include "backends/cpu/ops_permute.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace tandem::cpu {
namespace {

int64_t hidden_of(ConstTensorView t) {
  TANDEM_CHECK(t.shape.size() == 2);
  return t.dim(1);
}

int64_t rows_of(const PermutePlan& plan) { return static_cast<int64_t>(plan.source.size()); }

// Row offsets of the chunks: offsets[c] = sum(sizes[0..c)).
std::vector<int64_t> chunk_offsets(std::span<const int64_t> sizes) {
  std::vector<int64_t> offsets(sizes.size() + 1, 0);
  for (size_t c = 0; c < sizes.size(); ++c) {
    TANDEM_CHECK(sizes[c] >= 0);
    offsets[c + 1] = offsets[c] + sizes[c];
  }
  return offsets;
}

void check_order(std::span<const int64_t> order, size_t chunks) {
  TANDEM_CHECK(order.size() == chunks);
  std::vector<int64_t> sorted(order.begin(), order.end());
  std::sort(sorted.begin(), sorted.end());
  for (size_t c = 0; c < chunks; ++c) TANDEM_CHECK_MSG(sorted[c] == static_cast<int64_t>(c), "chunk order is not a permutation");
}

}  // namespace

PermutePlan make_permute_plan(std::span<const int32_t> expert, std::span<const uint8_t> kept, int64_t tokens,
                              int64_t topk, int64_t experts) {
  TANDEM_CHECK(static_cast<int64_t>(expert.size()) == tokens * topk);
  TANDEM_CHECK(kept.empty() || kept.size() == expert.size());
  PermutePlan plan;
  plan.tokens = tokens;
  plan.topk = topk;
  plan.tokens_per_expert.assign(static_cast<size_t>(experts), 0);
  for (size_t i = 0; i < expert.size(); ++i) {
    TANDEM_CHECK_MSG(expert[i] >= 0 && expert[i] < experts, "expert id " << expert[i] << " of " << experts);
    if (kept.empty() || kept[i]) ++plan.tokens_per_expert[expert[i]];
  }
  std::vector<int64_t> next(static_cast<size_t>(experts) + 1, 0);   // next free row of each expert
  for (int64_t e = 0; e < experts; ++e) next[e + 1] = next[e] + plan.tokens_per_expert[e];
  plan.source.assign(static_cast<size_t>(next[experts]), 0);
  for (size_t i = 0; i < expert.size(); ++i) {   // i increases with the token: stable per expert
    if (kept.empty() || kept[i]) plan.source[next[expert[i]]++] = static_cast<int64_t>(i);
  }
  return plan;
}

PermutePlan make_permute_plan(const Routing& routing) {
  return make_permute_plan(routing.expert, routing.kept, routing.tokens, routing.topk, routing.experts);
}

void permute_forward(ConstTensorView tokens, const PermutePlan& plan, TensorView out) {
  const int64_t h = hidden_of(tokens), n = rows_of(plan);
  check_shape(tokens, {plan.tokens, h}, "permute input");
  check_shape(out, {n, h}, "permute output");
  for (int64_t j = 0; j < n; ++j) std::copy_n(tokens.ptr() + (plan.source[j] / plan.topk) * h, h, out.ptr() + j * h);
}

void permute_backward(ConstTensorView d_out, const PermutePlan& plan, TensorView d_tokens) {
  const int64_t h = hidden_of(d_out), n = rows_of(plan);
  check_shape(d_out, {n, h}, "permute grad output");
  check_shape(d_tokens, {plan.tokens, h}, "permute grad input");
  std::fill(d_tokens.data.begin(), d_tokens.data.end(), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float* src = d_out.ptr() + j * h;
    float* dst = d_tokens.ptr() + (plan.source[j] / plan.topk) * h;
    for (int64_t c = 0; c < h; ++c) dst[c] += src[c];
  }
}

void unpermute_forward(ConstTensorView expert_out, const PermutePlan& plan, ConstTensorView probs, TensorView y) {
  const int64_t h = hidden_of(expert_out), n = rows_of(plan);
  check_shape(expert_out, {n, h}, "unpermute input");
  check_shape(probs, {plan.tokens, plan.topk}, "unpermute probs");
  check_shape(y, {plan.tokens, h}, "unpermute output");
  std::fill(y.data.begin(), y.data.end(), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float p = probs.data[plan.source[j]];
    const float* src = expert_out.ptr() + j * h;
    float* dst = y.ptr() + (plan.source[j] / plan.topk) * h;
    for (int64_t c = 0; c < h; ++c) dst[c] += p * src[c];
  }
}

void unpermute_backward(ConstTensorView expert_out, const PermutePlan& plan, ConstTensorView probs,
                        ConstTensorView d_y, TensorView d_expert_out, TensorView d_probs) {
  const int64_t h = hidden_of(expert_out), n = rows_of(plan);
  check_shape(expert_out, {n, h}, "unpermute input");
  check_shape(probs, {plan.tokens, plan.topk}, "unpermute probs");
  check_shape(d_y, {plan.tokens, h}, "unpermute grad output");
  check_shape(d_expert_out, {n, h}, "unpermute grad input");
  check_shape(d_probs, {plan.tokens, plan.topk}, "unpermute grad probs");
  std::fill(d_probs.data.begin(), d_probs.data.end(), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float p = probs.data[plan.source[j]];
    const float* g = d_y.ptr() + (plan.source[j] / plan.topk) * h;
    const float* x = expert_out.ptr() + j * h;
    float* dx = d_expert_out.ptr() + j * h;
    double dot = 0;
    for (int64_t c = 0; c < h; ++c) {
      dx[c] = p * g[c];
      dot += static_cast<double>(g[c]) * x[c];
    }
    d_probs.data[plan.source[j]] = static_cast<float>(dot);
  }
}

void sort_chunks_forward(ConstTensorView input, std::span<const int64_t> sizes, std::span<const int64_t> order,
                         TensorView out) {
  const int64_t h = hidden_of(input);
  const std::vector<int64_t> offsets = chunk_offsets(sizes);
  check_order(order, sizes.size());
  check_shape(input, {offsets.back(), h}, "sort_chunks input");
  check_shape(out, {offsets.back(), h}, "sort_chunks output");
  int64_t row = 0;
  for (int64_t c : order) {
    std::copy_n(input.ptr() + offsets[c] * h, sizes[c] * h, out.ptr() + row * h);
    row += sizes[c];
  }
}

void sort_chunks_backward(ConstTensorView d_out, std::span<const int64_t> sizes, std::span<const int64_t> order,
                          TensorView d_input) {
  const int64_t h = hidden_of(d_out);
  const std::vector<int64_t> offsets = chunk_offsets(sizes);
  check_order(order, sizes.size());
  check_shape(d_out, {offsets.back(), h}, "sort_chunks grad output");
  check_shape(d_input, {offsets.back(), h}, "sort_chunks grad input");
  int64_t row = 0;
  for (int64_t c : order) {
    std::copy_n(d_out.ptr() + row * h, sizes[c] * h, d_input.ptr() + offsets[c] * h);
    row += sizes[c];
  }
}

}  // namespace tandem::cpu
