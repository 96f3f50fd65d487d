// MoE router, permutation, gather and segmented-sum kernels (ops_moe.cuh).
#include "backends/cuda/ops_moe.cuh"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/softmax_math.h"

namespace tandem::cuda {

// ---- host-side plans

RowSegments make_row_segments(const char* op, const std::vector<int64_t>& target, int64_t dest_count,
                              bool every_row) {
  check_size(op, "rows", dest_count);
  std::vector<int64_t> count(static_cast<size_t>(dest_count), 0);
  for (size_t j = 0; j < target.size(); ++j) {
    if (target[j] < 0 || target[j] >= dest_count)
      throw std::invalid_argument(std::string(op) + ": index[" + std::to_string(j) + "] = " +
                                  std::to_string(target[j]) + " is outside [0, " + std::to_string(dest_count) + ")");
    ++count[static_cast<size_t>(target[j])];
  }
  RowSegments s;
  std::vector<int64_t> segment_of(static_cast<size_t>(dest_count), -1);
  s.offsets.push_back(0);
  for (int64_t r = 0; r < dest_count; ++r) {
    if (!every_row && count[static_cast<size_t>(r)] == 0) continue;
    segment_of[static_cast<size_t>(r)] = static_cast<int64_t>(s.dest_rows.size());
    s.dest_rows.push_back(r);
    s.offsets.push_back(s.offsets.back() + count[static_cast<size_t>(r)]);
  }
  s.items.assign(target.size(), 0);
  std::vector<int64_t> next(s.offsets.begin(), s.offsets.end() - 1);
  for (size_t j = 0; j < target.size(); ++j) {   // increasing j: the CPU's order inside a row
    const int64_t seg = segment_of[static_cast<size_t>(target[j])];
    s.items[static_cast<size_t>(next[static_cast<size_t>(seg)]++)] = static_cast<int64_t>(j);
  }
  return s;
}

void apply_expert_capacity(const std::vector<int32_t>& expert, int64_t experts, int64_t capacity,
                           std::vector<float>& probs, std::vector<uint8_t>& kept) {
  if (probs.size() != expert.size() || kept.size() != expert.size())
    throw std::invalid_argument("router capacity: probs/kept sizes differ from expert size " +
                                std::to_string(expert.size()));
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(experts));   // flat t * k + slot
  for (size_t i = 0; i < expert.size(); ++i) {
    if (expert[i] < 0 || expert[i] >= experts)
      throw std::invalid_argument("router capacity: expert[" + std::to_string(i) + "] = " + std::to_string(expert[i]));
    slots[static_cast<size_t>(expert[i])].push_back(static_cast<int64_t>(i));
  }
  for (auto& list : slots) {
    if (static_cast<int64_t>(list.size()) <= capacity) continue;
    std::stable_sort(list.begin(), list.end(), [&probs](int64_t a, int64_t b) { return probs[a] > probs[b]; });
    for (size_t j = static_cast<size_t>(capacity); j < list.size(); ++j) {
      kept[static_cast<size_t>(list[j])] = 0;
      probs[static_cast<size_t>(list[j])] = 0.0f;
    }
  }
}

int64_t expert_capacity(int64_t tokens, int64_t topk, int64_t experts, double capacity_factor) {
  return static_cast<int64_t>(
      std::ceil(static_cast<double>(tokens * topk) / static_cast<double>(experts) * capacity_factor));
}

namespace {

// ---- kernels

// One thread per token: softmax over E, top-k by logit, routing weights.
__global__ void router_forward_kernel(const float* __restrict__ logits, int64_t tokens, int64_t experts, int64_t topk,
                                      bool pre_softmax, float* __restrict__ scores, int32_t* __restrict__ expert,
                                      float* __restrict__ probs) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < tokens;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float* row = logits + t * experts;
    float* sc = scores + t * experts;
    kmath::softmax_row<float>(row, experts, sc);
    int32_t* chosen = expert + t * topk;
    for (int64_t j = 0; j < topk; ++j) {   // j-th largest logit, ties to the lower expert index
      int32_t best = -1;
      for (int64_t e = 0; e < experts; ++e) {
        bool taken = false;
        for (int64_t i = 0; i < j; ++i) taken = taken || chosen[i] == e;
        if (!taken && (best < 0 || row[e] > row[best])) best = static_cast<int32_t>(e);
      }
      chosen[j] = best;
    }
    float* p = probs + t * topk;
    if (pre_softmax) {
      for (int64_t j = 0; j < topk; ++j) p[j] = sc[chosen[j]];
      continue;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < topk; ++j) mx = fmaxf(mx, row[chosen[j]]);
    float sum = 0.0f;
    for (int64_t j = 0; j < topk; ++j) sum += expf(row[chosen[j]] - mx);
    for (int64_t j = 0; j < topk; ++j) p[j] = expf(row[chosen[j]] - mx) / sum;
  }
}

// One thread per token: the CPU's router_backward (softmax backward over all experts with the
// aux-loss gradient, plus the top-k softmax backward when the weights are post-softmax).
__global__ void router_backward_kernel(const float* __restrict__ logits, const float* __restrict__ scores,
                                       const int32_t* __restrict__ expert, const uint8_t* __restrict__ kept,
                                       const float* __restrict__ d_probs, const float* __restrict__ aux_grad,
                                       int64_t tokens, int64_t experts, int64_t topk, bool pre_softmax,
                                       float* __restrict__ d_logits) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < tokens;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float* row = logits + t * experts;
    const float* sc = scores + t * experts;
    const int32_t* chosen = expert + t * topk;
    const uint8_t* kp = kept + t * topk;
    const float* dp = d_probs + t * topk;
    float* dl = d_logits + t * experts;
    // d_scores[e] = aux_grad[e] (+ the selections' weight gradients when pre-softmax).
    auto d_score = [&](int64_t e) {
      float ds = aux_grad ? aux_grad[e] : 0.0f;
      if (pre_softmax)
        for (int64_t j = 0; j < topk; ++j) ds += (chosen[j] == e && kp[j]) ? dp[j] : 0.0f;
      return ds;
    };
    float dot = 0.0f;
    for (int64_t e = 0; e < experts; ++e) dot += sc[e] * d_score(e);
    for (int64_t e = 0; e < experts; ++e) dl[e] = sc[e] * (d_score(e) - dot);
    if (pre_softmax) continue;
    float mx = -INFINITY;
    for (int64_t j = 0; j < topk; ++j) mx = fmaxf(mx, row[chosen[j]]);
    float sum = 0.0f;
    for (int64_t j = 0; j < topk; ++j) sum += expf(row[chosen[j]] - mx);
    float dot2 = 0.0f;
    for (int64_t j = 0; j < topk; ++j) dot2 += (expf(row[chosen[j]] - mx) / sum) * (kp[j] ? dp[j] : 0.0f);
    for (int64_t j = 0; j < topk; ++j) {
      const float p = expf(row[chosen[j]] - mx) / sum;
      dl[chosen[j]] += p * ((kp[j] ? dp[j] : 0.0f) - dot2);
    }
  }
}

// One block per expert: column sum of scores in double (fixed order: deterministic).
__global__ void score_column_sums_kernel(const float* __restrict__ scores, int64_t tokens, int64_t experts,
                                         double* __restrict__ col_sums) {
  const int64_t e = blockIdx.x;
  double s = 0.0;
  for (int64_t t = threadIdx.x; t < tokens; t += blockDim.x) s += scores[t * experts + e];
  s = block_sum(s);
  if (threadIdx.x == 0) col_sums[e] = s;
}

__global__ void gather_rows_kernel(const float* __restrict__ in, const int64_t* __restrict__ src_rows, int64_t n,
                                   int64_t cols, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = in[src_rows[i / cols] * cols + i % cols];
}

// One block per segment, threads over the columns; sources in the segment's order.
__global__ void segment_sum_kernel(SegmentSum s) {
  const int64_t r = blockIdx.x;
  const int64_t begin = s.offsets[r], end = s.offsets[r + 1];
  float* dst = s.out + s.dest_rows[r] * s.cols;
  for (int64_t c = threadIdx.x; c < s.cols; c += blockDim.x) {
    float acc = s.accumulate ? dst[c] : 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      const float x = s.in[s.items[i] * s.cols + c];
      acc += s.weights ? s.weights[s.weight_index[i]] * x : x;
    }
    dst[c] = acc;
  }
}

// One block per permuted row j.
__global__ void unpermute_backward_kernel(const float* __restrict__ expert_out, const float* __restrict__ probs,
                                          const float* __restrict__ d_y, const int64_t* __restrict__ sel,
                                          const int64_t* __restrict__ tok, int64_t cols,
                                          float* __restrict__ d_expert_out, float* __restrict__ d_probs) {
  const int64_t j = blockIdx.x;
  const float p = probs[sel[j]];
  const float* g = d_y + tok[j] * cols;
  const float* x = expert_out + j * cols;
  float* dx = d_expert_out + j * cols;
  double dot = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    dx[c] = p * g[c];
    dot += static_cast<double>(g[c]) * x[c];
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) d_probs[sel[j]] = static_cast<float>(dot);
}

void require(bool ok, const char* op, const char* what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

}  // namespace

// ---- launchers

void launch_router_forward(const float* logits, int64_t tokens, int64_t experts, int64_t topk, bool pre_softmax,
                           float* scores, int32_t* expert, float* probs, cudaStream_t stream) {
  check_size("router_forward", "tokens", tokens);
  check_size("router_forward", "experts", experts, INT32_MAX);
  if (topk < 1 || topk > experts)
    throw std::invalid_argument("router_forward: topk = " + std::to_string(topk) + " is outside [1, " +
                                std::to_string(experts) + "]");
  const LaunchConfig cfg = grid_1d(tokens, 128);
  if (cfg.empty()) return;
  require(logits && scores && expert && probs, "router_forward", "null buffer");
  router_forward_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(logits, tokens, experts, topk,
                                                                                  pre_softmax, scores, expert, probs);
  TANDEM_CHECK_LAUNCH("router_forward_kernel");
}

void launch_router_backward(const float* logits, const float* scores, const int32_t* expert, const uint8_t* kept,
                            const float* d_probs, const float* aux_grad, int64_t tokens, int64_t experts,
                            int64_t topk, bool pre_softmax, float* d_logits, cudaStream_t stream) {
  check_size("router_backward", "tokens", tokens);
  check_size("router_backward", "experts", experts, INT32_MAX);
  if (topk < 1 || topk > experts)
    throw std::invalid_argument("router_backward: topk = " + std::to_string(topk) + " is outside [1, " +
                                std::to_string(experts) + "]");
  const LaunchConfig cfg = grid_1d(tokens, 128);
  if (cfg.empty()) return;
  require(logits && scores && expert && kept && d_probs && d_logits, "router_backward", "null buffer");
  router_backward_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(
      logits, scores, expert, kept, d_probs, aux_grad, tokens, experts, topk, pre_softmax, d_logits);
  TANDEM_CHECK_LAUNCH("router_backward_kernel");
}

void launch_score_column_sums(const float* scores, int64_t tokens, int64_t experts, double* col_sums,
                              cudaStream_t stream) {
  check_size("router_aux_loss", "tokens", tokens);
  check_size("router_aux_loss", "experts", experts, kMaxGridX);
  if (experts == 0) return;
  require(col_sums != nullptr && (tokens == 0 || scores != nullptr), "router_aux_loss", "null buffer");
  score_column_sums_kernel<<<static_cast<unsigned>(experts), kDefaultBlock, 0, stream>>>(scores, tokens, experts,
                                                                                         col_sums);
  TANDEM_CHECK_LAUNCH("score_column_sums_kernel");
}

void launch_gather_rows(const float* in, const int64_t* src_rows, int64_t n, int64_t cols, float* out,
                        cudaStream_t stream) {
  check_size("gather_rows", "rows", n);
  check_size("gather_rows", "cols", cols);
  const LaunchConfig cfg = grid_1d(n * cols);
  if (cfg.empty()) return;
  require(in && src_rows && out, "gather_rows", "null buffer");
  gather_rows_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(in, src_rows, n, cols, out);
  TANDEM_CHECK_LAUNCH("gather_rows_kernel");
}

void launch_segment_sum(const SegmentSum& s, cudaStream_t stream) {
  const LaunchConfig cfg = rows_config(s.segments, s.cols);
  if (cfg.empty() || s.cols == 0) return;
  require(s.dest_rows && s.offsets && s.out, "segment_sum", "null buffer");
  require(!s.weights || s.weight_index, "segment_sum", "weights without weight_index");
  segment_sum_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(s);
  TANDEM_CHECK_LAUNCH("segment_sum_kernel");
}

void launch_unpermute_backward(const float* expert_out, const float* probs, const float* d_y, const int64_t* sel,
                               const int64_t* tok, int64_t n, int64_t cols, float* d_expert_out, float* d_probs,
                               cudaStream_t stream) {
  const LaunchConfig cfg = rows_config(n, cols);
  if (cfg.empty()) return;
  require(expert_out && probs && d_y && sel && tok && d_expert_out && d_probs, "unpermute_backward", "null buffer");
  unpermute_backward_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(
      expert_out, probs, d_y, sel, tok, cols, d_expert_out, d_probs);
  TANDEM_CHECK_LAUNCH("unpermute_backward_kernel");
}

}  // namespace tandem::cuda
