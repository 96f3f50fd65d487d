// Baseline attention kernels: scores materialised in scratch, one thread per output element
// (ops_attention.cuh). Written for clarity; the flash kernels are the fast path.
#include "backends/cuda/ops_attention.cuh"

#include <cmath>
#include <stdexcept>
#include <string>

#include "backends/cuda/attention_device.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/attention_math.h"
#include "backends/kernel_math/softmax_math.h"

namespace tandem::cuda {
namespace {

#define TANDEM_GRID_STRIDE(i, n)                                                              \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Scaled score of (b, h, i, j) from bf16-rounded q and k; -inf where masked.
__device__ float masked_score(const AttentionProblem& p, const float* q, const float* k, int64_t b, int64_t h,
                              int64_t i, int64_t j) {
  if (p.kv_pos[j] > p.q_pos[i]) return -INFINITY;
  const int64_t g = h / (p.hq / p.hkv);
  const float* qr = q + head_index(i, b, h, 0, p.b, p.hq, p.d);
  const float* kr = k + head_index(j, b, g, 0, p.b, p.hkv, p.d);
  float s = 0.0f;
  for (int64_t e = 0; e < p.d; ++e) s += bf16_round(qr[e]) * bf16_round(kr[e]);
  return s * p.scale;
}

// scores [b, hq, s_q, s_kv].
__global__ void scores_kernel(AttentionProblem p, const float* q, const float* k, float* scores) {
  TANDEM_GRID_STRIDE(x, p.b * p.hq * p.s_q * p.s_kv) {
    const int64_t j = x % p.s_kv, i = (x / p.s_kv) % p.s_q, bh = x / (p.s_kv * p.s_q);
    scores[x] = masked_score(p, q, k, bh / p.hq, bh % p.hq, i, j);
  }
}

// Row (b, h, i): softmax in place, lse.
__global__ void softmax_rows_kernel(AttentionProblem p, float* scores, float* lse) {
  TANDEM_GRID_STRIDE(row, p.b * p.hq * p.s_q) {
    float* r = scores + row * p.s_kv;
    lse[row] = kmath::softmax_row<float>(r, p.s_kv, r);
  }
}

// out (i, b, h, e) = sum_j P (dropped out) v.
__global__ void pv_kernel(AttentionProblem p, const float* probs, const float* v, float* out) {
  TANDEM_GRID_STRIDE(x, p.s_q * p.b * p.hq * p.d) {
    const int64_t e = x % p.d, h = (x / p.d) % p.hq, b = (x / (p.d * p.hq)) % p.b, i = x / (p.d * p.hq * p.b);
    const int64_t g = h / (p.hq / p.hkv);
    const float* pr = probs + ((b * p.hq + h) * p.s_q + i) * p.s_kv;
    float acc = 0.0f;
    for (int64_t j = 0; j < p.s_kv; ++j) {
      if (pr[j] == 0.0f) continue;
      const float m = attention_keep_factor(p, b, h, p.q_pos[i], p.kv_pos[j]);
      acc += pr[j] * m * bf16_round(v[head_index(j, b, g, e, p.b, p.hkv, p.d)]);
    }
    out[x] = acc;
  }
}

// delta (b, h, i) = d_out . out over the head.
__global__ void delta_kernel(AttentionProblem p, const float* out, const float* d_out, float* delta) {
  TANDEM_GRID_STRIDE(row, p.b * p.hq * p.s_q) {
    const int64_t i = row % p.s_q, h = (row / p.s_q) % p.hq, b = row / (p.s_q * p.hq);
    const int64_t base = head_index(i, b, h, 0, p.b, p.hq, p.d);
    float s = 0.0f;
    for (int64_t e = 0; e < p.d; ++e) s += d_out[base + e] * out[base + e];
    delta[row] = s;
  }
}

// Per (b, h, i, j): pd = P * mask (weights of dv), ds = scale P (dP * mask - delta).
__global__ void probs_grad_kernel(AttentionProblem p, const float* q, const float* k, const float* v,
                                  const float* lse, const float* d_out, const float* delta, float* pd, float* ds) {
  TANDEM_GRID_STRIDE(x, p.b * p.hq * p.s_q * p.s_kv) {
    const int64_t j = x % p.s_kv, row = x / p.s_kv, i = row % p.s_q, bh = row / p.s_q;
    const int64_t b = bh / p.hq, h = bh % p.hq, g = h / (p.hq / p.hkv);
    const float s = masked_score(p, q, k, b, h, i, j);
    if (s == -INFINITY || lse[row] == -INFINITY) {
      pd[x] = 0.0f;
      ds[x] = 0.0f;
      continue;
    }
    const float prob = expf(s - lse[row]);
    const float* dor = d_out + head_index(i, b, h, 0, p.b, p.hq, p.d);
    const float* vr = v + head_index(j, b, g, 0, p.b, p.hkv, p.d);
    float dp = 0.0f;
    for (int64_t e = 0; e < p.d; ++e) dp += dor[e] * bf16_round(vr[e]);
    const float m = attention_keep_factor(p, b, h, p.q_pos[i], p.kv_pos[j]);
    pd[x] = prob * m;
    ds[x] = p.scale * prob * (dp * m - delta[row]);
  }
}

// dq (i, b, h, e) = sum_j ds k.
__global__ void dq_kernel(AttentionProblem p, const float* ds, const float* k, float* dq) {
  TANDEM_GRID_STRIDE(x, p.s_q * p.b * p.hq * p.d) {
    const int64_t e = x % p.d, h = (x / p.d) % p.hq, b = (x / (p.d * p.hq)) % p.b, i = x / (p.d * p.hq * p.b);
    const int64_t g = h / (p.hq / p.hkv);
    const float* dr = ds + ((b * p.hq + h) * p.s_q + i) * p.s_kv;
    float acc = 0.0f;
    for (int64_t j = 0; j < p.s_kv; ++j) acc += dr[j] * bf16_round(k[head_index(j, b, g, e, p.b, p.hkv, p.d)]);
    dq[x] = acc;
  }
}

// dk (j, b, g, e) = sum over the group's heads and queries of ds q; dv likewise of pd d_out.
__global__ void dkv_kernel(AttentionProblem p, const float* pd, const float* ds, const float* q, const float* d_out,
                           float* dk, float* dv) {
  TANDEM_GRID_STRIDE(x, p.s_kv * p.b * p.hkv * p.d) {
    const int64_t e = x % p.d, g = (x / p.d) % p.hkv, b = (x / (p.d * p.hkv)) % p.b, j = x / (p.d * p.hkv * p.b);
    const int64_t qpg = p.hq / p.hkv;
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int64_t h = g * qpg; h < (g + 1) * qpg; ++h) {
      for (int64_t i = 0; i < p.s_q; ++i) {
        const int64_t sx = ((b * p.hq + h) * p.s_q + i) * p.s_kv + j;
        const int64_t qx = head_index(i, b, h, e, p.b, p.hq, p.d);
        acc_k += ds[sx] * bf16_round(q[qx]);
        acc_v += pd[sx] * d_out[qx];
      }
    }
    dk[x] = acc_k;
    dv[x] = acc_v;
  }
}

// Merge of row (i, b, h) of a block into the running result.
__global__ void merge_kernel(float* out, float* lse, const float* out_blk, const float* lse_blk, int64_t s_q, int64_t nb,
                             int64_t hq, int64_t d, int64_t s_blk, int64_t row0) {
  TANDEM_GRID_STRIDE(x, s_blk * nb * hq) {
    const int64_t h = x % hq, b = (x / hq) % nb, i = x / (hq * nb);
    float* l1 = lse + (b * hq + h) * s_q + row0 + i;
    const float l2 = lse_blk[(b * hq + h) * s_blk + i];
    double w1, w2;
    float merged;
    kmath::lse_merge_weights<double>(*l1, l2, &w1, &w2, &merged);
    float* acc = out + head_index(row0 + i, b, h, 0, nb, hq, d);
    const float* blk = out_blk + head_index(i, b, h, 0, nb, hq, d);
    for (int64_t e = 0; e < d; ++e) acc[e] = static_cast<float>(w1 * acc[e] + w2 * blk[e]);
    *l1 = merged;
  }
}

template <typename Kernel, typename... Args>
void launch_1d(const char* name, int64_t n, Kernel kernel, cudaStream_t stream, Args... args) {
  const LaunchConfig cfg = grid_1d(n);
  if (cfg.empty()) return;
  kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(args...);
  check_launch(name, __FILE__, __LINE__);
}

}  // namespace

void check_attention_problem(const char* op, const AttentionProblem& p) {
  check_size(op, "s_q", p.s_q, INT32_MAX);
  check_size(op, "s_kv", p.s_kv, INT32_MAX);
  check_size(op, "b", p.b);
  check_size(op, "hq", p.hq);
  check_size(op, "hkv", p.hkv);
  check_size(op, "d", p.d);
  const auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (p.hkv == 0 || p.hq % p.hkv != 0)
    fail("hq = " + std::to_string(p.hq) + " is not a multiple of hkv = " + std::to_string(p.hkv));
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) fail("softmax_scale = " + std::to_string(p.scale) + " is not positive");
  if (!(p.dropout >= 0.0f && p.dropout < 1.0f)) fail("dropout = " + std::to_string(p.dropout) + " is outside [0, 1)");
  if ((p.s_q > 0 && p.q_pos == nullptr) || (p.s_kv > 0 && p.kv_pos == nullptr)) fail("positions missing");
  if (p.dropout > 0.0f && p.b > 0 && p.samples == nullptr) fail("dropout without sample indices");
}

size_t attention_reference_forward_scratch(const AttentionProblem& p) {
  return static_cast<size_t>(p.b * p.hq * p.s_q * p.s_kv);
}

size_t attention_reference_backward_scratch(const AttentionProblem& p) {
  return 2 * attention_reference_forward_scratch(p) + static_cast<size_t>(p.b * p.hq * p.s_q);
}

void launch_attention_forward_reference(const AttentionProblem& p, const float* q, const float* k, const float* v,
                                        float* out, float* lse, float* scratch, cudaStream_t stream) {
  check_attention_problem("attention_forward_reference", p);
  launch_1d("scores_kernel", p.b * p.hq * p.s_q * p.s_kv, scores_kernel, stream, p, q, k, scratch);
  launch_1d("softmax_rows_kernel", p.b * p.hq * p.s_q, softmax_rows_kernel, stream, p, scratch, lse);
  launch_1d("pv_kernel", p.s_q * p.b * p.hq * p.d, pv_kernel, stream, p, static_cast<const float*>(scratch), v, out);
}

void launch_attention_backward_reference(const AttentionProblem& p, const float* q, const float* k, const float* v,
                                         const float* out, const float* lse, const float* d_out, float* dq, float* dk,
                                         float* dv, float* scratch, cudaStream_t stream) {
  check_attention_problem("attention_backward_reference", p);
  const int64_t s = p.b * p.hq * p.s_q * p.s_kv;
  float* pd = scratch;
  float* ds = scratch + s;
  float* delta = scratch + 2 * s;
  launch_1d("delta_kernel", p.b * p.hq * p.s_q, delta_kernel, stream, p, out, d_out, delta);
  launch_1d("probs_grad_kernel", s, probs_grad_kernel, stream, p, q, k, v, lse, d_out,
            static_cast<const float*>(delta), pd, ds);
  launch_1d("dq_kernel", p.s_q * p.b * p.hq * p.d, dq_kernel, stream, p, static_cast<const float*>(ds), k, dq);
  launch_1d("dkv_kernel", p.s_kv * p.b * p.hkv * p.d, dkv_kernel, stream, p, static_cast<const float*>(pd),
            static_cast<const float*>(ds), q, d_out, dk, dv);
}

void launch_attention_merge(float* out, float* lse, const float* out_blk, const float* lse_blk, int64_t s_q,
                            int64_t b, int64_t hq, int64_t d, int64_t s_blk, int64_t row0, cudaStream_t stream) {
  check_size("attention_merge", "s_blk", s_blk);
  if (row0 < 0 || row0 + s_blk > s_q)
    throw std::invalid_argument("attention_merge: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + s_blk) +
                                ") are outside s_q = " + std::to_string(s_q));
  launch_1d("merge_kernel", s_blk * b * hq, merge_kernel, stream, out, lse, out_blk, lse_blk, s_q, b, hq, d, s_blk,
            row0);
}

}  // namespace tandem::cuda
