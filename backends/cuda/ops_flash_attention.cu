// Flash attention kernels, forward and deterministic backward (ops_flash_attention.cuh).
//
// Thread layout of every kernel: 128 threads, thread t works on tile row r = t / 4 and, in the
// score phase, on the tile columns c = t % 4 + 4 jj (jj < 8); its accumulators (output, dq, or
// dk/dv of key row r) are the head columns e = t % 4 + 4 ii. The 4 threads of a row are
// adjacent lanes of one warp, so row reductions are two xor-shuffles and a row's probabilities
// are shared through shared memory with __syncwarp.
#include "backends/cuda/ops_flash_attention.cuh"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "backends/cuda/attention_device.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

constexpr int kR = kFlashRows, kC = kFlashCols;
constexpr int kColsPerThread = kC / 4;

// Rows [row0, row0 + n) of head `head` of a [rows_total, p.b, heads, p.d] tensor into
// dst [n][dp] (zero beyond the tensor), rounded to bf16 when kRound.
template <bool kRound>
__device__ void load_tile(float* dst, int dp, int d_pad, const float* src, int64_t row0, int n, int64_t rows_total,
                          int64_t b, int64_t head, int64_t heads, const AttentionProblem& p) {
  for (int idx = threadIdx.x; idx < n * d_pad; idx += blockDim.x) {
    const int rr = idx / d_pad, e = idx % d_pad;
    const int64_t row = row0 + rr;
    float x = 0.0f;
    if (row < rows_total && e < p.d) {
      x = src[head_index(row, b, head, e, p.b, heads, p.d)];
      if (kRound) x = bf16_round(x);
    }
    dst[rr * dp + e] = x;
  }
}

__device__ inline float row_dot(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int e = 0; e < d; ++e) s += a[e] * b[e];
  return s;
}

__device__ inline float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ inline float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_forward_kernel(AttentionProblem p, FlashTileBounds tiles, const float* __restrict__ q,
                         const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ out,
                         float* __restrict__ lse) {
  constexpr int DP = D + 1, PER = D / 4;
  extern __shared__ float smem[];
  float* qs = smem;
  float* ks = qs + kR * DP;
  float* vs = ks + kC * DP;
  float* ps = vs + kC * DP;   // [kR][kC + 1] dropped-out probabilities of the tile
  int32_t* qpos = reinterpret_cast<int32_t*>(ps + kR * (kC + 1));
  int32_t* kpos = qpos + kR;
  const int tid = threadIdx.x, r = tid / 4, l4 = tid % 4, d = static_cast<int>(p.d);
  const int64_t bh = blockIdx.y, b = bh / p.hq, h = bh % p.hq, g = h / (p.hq / p.hkv);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kR;
  load_tile<true>(qs, DP, D, q, i0, kR, p.s_q, b, h, p.hq, p);
  if (tid < kR) qpos[tid] = i0 + tid < p.s_q ? p.q_pos[i0 + tid] : INT_MIN;
  float m = -INFINITY, l = 0.0f, acc[PER];
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) acc[ii] = 0.0f;
  const int32_t q_max = tiles.q_tile_max[blockIdx.x];
  const int64_t key_tiles = (p.s_kv + kC - 1) / kC;
  for (int64_t kt = 0; kt < key_tiles; ++kt) {
    if (tiles.kv_tile_min[kt] > q_max) continue;   // the whole key tile is in the future
    const int64_t j0 = kt * kC;
    __syncthreads();   // the previous tile's reads are done
    load_tile<true>(ks, DP, D, k, j0, kC, p.s_kv, b, g, p.hkv, p);
    load_tile<true>(vs, DP, D, v, j0, kC, p.s_kv, b, g, p.hkv, p);
    if (tid < kC) kpos[tid] = j0 + tid < p.s_kv ? p.kv_pos[j0 + tid] : INT_MAX;
    __syncthreads();
    float s[kColsPerThread];
    float tile_max = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kColsPerThread; ++jj) {
      const int c = l4 + 4 * jj;
      s[jj] = kpos[c] > qpos[r] ? -INFINITY : row_dot(qs + r * DP, ks + c * DP, d) * p.scale;
      tile_max = fmaxf(tile_max, s[jj]);
    }
    const float m_new = fmaxf(m, quad_max(tile_max));
    float alpha = 1.0f, row_sum = 0.0f;
    if (m_new != -INFINITY) {
      alpha = expf(m - m_new);   // 0 when m was -inf
#pragma unroll
      for (int jj = 0; jj < kColsPerThread; ++jj) {
        s[jj] = expf(s[jj] - m_new);   // masked: exp(-inf) = 0
        row_sum += s[jj];
      }
    } else {
#pragma unroll
      for (int jj = 0; jj < kColsPerThread; ++jj) s[jj] = 0.0f;
    }
    l = l * alpha + quad_sum(row_sum);
    m = m_new;
#pragma unroll
    for (int jj = 0; jj < kColsPerThread; ++jj) {
      const int c = l4 + 4 * jj;
      const float keep = s[jj] != 0.0f ? attention_keep_factor(p, b, h, qpos[r], kpos[c]) : 1.0f;
      ps[r * (kC + 1) + c] = s[jj] * keep;
    }
    __syncwarp();
#pragma unroll
    for (int ii = 0; ii < PER; ++ii) acc[ii] *= alpha;
    for (int c = 0; c < kC; ++c) {
      const float pc = ps[r * (kC + 1) + c];
#pragma unroll
      for (int ii = 0; ii < PER; ++ii) acc[ii] += pc * vs[c * DP + l4 + 4 * ii];
    }
  }
  const int64_t i = i0 + r;
  if (i >= p.s_q) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) {
    const int e = l4 + 4 * ii;
    if (e < d) out[head_index(i, b, h, e, p.b, p.hq, p.d)] = acc[ii] * inv;
  }
  if (l4 == 0) lse[bh * p.s_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// delta (b, h, i) = d_out . out, one thread per query row.
__global__ void flash_delta_kernel(AttentionProblem p, const float* __restrict__ out, const float* __restrict__ d_out,
                                   float* __restrict__ delta) {
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < p.b * p.hq * p.s_q;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = row % p.s_q, h = (row / p.s_q) % p.hq, b = row / (p.s_q * p.hq);
    const int64_t base = head_index(i, b, h, 0, p.b, p.hq, p.d);
    float s = 0.0f;
    for (int64_t e = 0; e < p.d; ++e) s += d_out[base + e] * out[base + e];
    delta[row] = s;
  }
}

// Query-tile state the backward kernels share: rows' lse, delta and positions.
struct RowStats {
  float* lse;
  float* delta;
  int32_t* pos;
};

__device__ void load_row_stats(const RowStats& rs, const AttentionProblem& p, const float* lse, const float* delta,
                               int64_t bh, int64_t i0) {
  if (threadIdx.x >= kR) return;
  const int64_t i = i0 + threadIdx.x;
  const bool valid = i < p.s_q;
  rs.lse[threadIdx.x] = valid ? lse[bh * p.s_q + i] : -INFINITY;
  rs.delta[threadIdx.x] = valid ? delta[bh * p.s_q + i] : 0.0f;
  rs.pos[threadIdx.x] = valid ? p.q_pos[i] : INT_MIN;
}

// P (dropped out) and dS of query row r and key column c of the current tiles.
template <int DP>
__device__ inline void prob_and_grad(const AttentionProblem& p, const float* qs, const float* dos, const float* ks,
                                     const float* vs, const RowStats& rs, const int32_t* kpos, int64_t b, int64_t h,
                                     int r, int c, float* pd, float* ds) {
  *pd = 0.0f;
  *ds = 0.0f;
  if (kpos[c] > rs.pos[r] || rs.lse[r] == -INFINITY) return;
  const int d = static_cast<int>(p.d);
  const float prob = expf(row_dot(qs + r * DP, ks + c * DP, d) * p.scale - rs.lse[r]);
  const float dp = row_dot(dos + r * DP, vs + c * DP, d);
  const float keep = attention_keep_factor(p, b, h, rs.pos[r], kpos[c]);
  *pd = prob * keep;
  *ds = p.scale * prob * (dp * keep - rs.delta[r]);
}

// dk, dv of one key tile of kv head g: every query head of the group, every query tile.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_backward_kv_kernel(AttentionProblem p, FlashTileBounds tiles, const float* __restrict__ q,
                             const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ lse,
                             const float* __restrict__ d_out, const float* __restrict__ delta, float* __restrict__ dk,
                             float* __restrict__ dv) {
  constexpr int DP = D + 1, PER = D / 4;
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + kC * DP;
  float* qs = vs + kC * DP;
  float* dos = qs + kR * DP;
  float* ps = dos + kR * DP;     // [kR][kC + 1]
  float* dss = ps + kR * (kC + 1);
  const RowStats rs{dss + kR * (kC + 1), dss + kR * (kC + 1) + kR,
                    reinterpret_cast<int32_t*>(dss + kR * (kC + 1) + 2 * kR)};
  int32_t* kpos = rs.pos + kR;
  const int tid = threadIdx.x, r = tid / 4, l4 = tid % 4;
  const int64_t b = blockIdx.y / p.hkv, g = blockIdx.y % p.hkv, qpg = p.hq / p.hkv;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kC;
  load_tile<true>(ks, DP, D, k, j0, kC, p.s_kv, b, g, p.hkv, p);
  load_tile<true>(vs, DP, D, v, j0, kC, p.s_kv, b, g, p.hkv, p);
  if (tid < kC) kpos[tid] = j0 + tid < p.s_kv ? p.kv_pos[j0 + tid] : INT_MAX;
  float dk_acc[PER], dv_acc[PER];
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) dk_acc[ii] = dv_acc[ii] = 0.0f;
  const int32_t kv_min = tiles.kv_tile_min[blockIdx.x];
  const int64_t query_tiles = (p.s_q + kR - 1) / kR;
  for (int64_t h = g * qpg; h < (g + 1) * qpg; ++h) {
    for (int64_t qt = 0; qt < query_tiles; ++qt) {
      if (tiles.q_tile_max[qt] < kv_min) continue;   // every query of the tile precedes the keys
      const int64_t i0 = qt * kR;
      __syncthreads();   // the previous tile's reads are done (and the key tile is loaded)
      load_tile<true>(qs, DP, D, q, i0, kR, p.s_q, b, h, p.hq, p);
      load_tile<false>(dos, DP, D, d_out, i0, kR, p.s_q, b, h, p.hq, p);
      load_row_stats(rs, p, lse, delta, b * p.hq + h, i0);
      __syncthreads();
#pragma unroll
      for (int jj = 0; jj < kColsPerThread; ++jj) {
        const int c = l4 + 4 * jj;
        prob_and_grad<DP>(p, qs, dos, ks, vs, rs, kpos, b, h, r, c, &ps[r * (kC + 1) + c], &dss[r * (kC + 1) + c]);
      }
      __syncthreads();
      for (int rr = 0; rr < kR; ++rr) {   // this thread's key row is r
        const float pd = ps[rr * (kC + 1) + r], ds = dss[rr * (kC + 1) + r];
#pragma unroll
        for (int ii = 0; ii < PER; ++ii) {
          dv_acc[ii] += pd * dos[rr * DP + l4 + 4 * ii];
          dk_acc[ii] += ds * qs[rr * DP + l4 + 4 * ii];
        }
      }
    }
  }
  const int64_t j = j0 + r;
  if (j >= p.s_kv) return;
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) {
    const int e = l4 + 4 * ii;
    if (e >= p.d) continue;
    dk[head_index(j, b, g, e, p.b, p.hkv, p.d)] = dk_acc[ii];
    dv[head_index(j, b, g, e, p.b, p.hkv, p.d)] = dv_acc[ii];
  }
}

// dq of one query tile of head h, walking the key tiles.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_backward_q_kernel(AttentionProblem p, FlashTileBounds tiles, const float* __restrict__ q,
                            const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ lse,
                            const float* __restrict__ d_out, const float* __restrict__ delta, float* __restrict__ dq) {
  constexpr int DP = D + 1, PER = D / 4;
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = qs + kR * DP;
  float* ks = dos + kR * DP;
  float* vs = ks + kC * DP;
  float* dss = vs + kC * DP;   // [kR][kC + 1]
  const RowStats rs{dss + kR * (kC + 1), dss + kR * (kC + 1) + kR,
                    reinterpret_cast<int32_t*>(dss + kR * (kC + 1) + 2 * kR)};
  int32_t* kpos = rs.pos + kR;
  const int tid = threadIdx.x, r = tid / 4, l4 = tid % 4;
  const int64_t bh = blockIdx.y, b = bh / p.hq, h = bh % p.hq, g = h / (p.hq / p.hkv);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kR;
  load_tile<true>(qs, DP, D, q, i0, kR, p.s_q, b, h, p.hq, p);
  load_tile<false>(dos, DP, D, d_out, i0, kR, p.s_q, b, h, p.hq, p);
  load_row_stats(rs, p, lse, delta, bh, i0);
  float dq_acc[PER];
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) dq_acc[ii] = 0.0f;
  const int32_t q_max = tiles.q_tile_max[blockIdx.x];
  const int64_t key_tiles = (p.s_kv + kC - 1) / kC;
  for (int64_t kt = 0; kt < key_tiles; ++kt) {
    if (tiles.kv_tile_min[kt] > q_max) continue;
    const int64_t j0 = kt * kC;
    __syncthreads();
    load_tile<true>(ks, DP, D, k, j0, kC, p.s_kv, b, g, p.hkv, p);
    load_tile<true>(vs, DP, D, v, j0, kC, p.s_kv, b, g, p.hkv, p);
    if (tid < kC) kpos[tid] = j0 + tid < p.s_kv ? p.kv_pos[j0 + tid] : INT_MAX;
    __syncthreads();
#pragma unroll
    for (int jj = 0; jj < kColsPerThread; ++jj) {
      const int c = l4 + 4 * jj;
      float pd;
      prob_and_grad<DP>(p, qs, dos, ks, vs, rs, kpos, b, h, r, c, &pd, &dss[r * (kC + 1) + c]);
    }
    __syncwarp();   // row r's dS values come from the 4 lanes of this row
    for (int c = 0; c < kC; ++c) {
      const float ds = dss[r * (kC + 1) + c];
#pragma unroll
      for (int ii = 0; ii < PER; ++ii) dq_acc[ii] += ds * ks[c * DP + l4 + 4 * ii];
    }
  }
  const int64_t i = i0 + r;
  if (i >= p.s_q) return;
#pragma unroll
  for (int ii = 0; ii < PER; ++ii) {
    const int e = l4 + 4 * ii;
    if (e < p.d) dq[head_index(i, b, h, e, p.b, p.hq, p.d)] = dq_acc[ii];
  }
}

// Opts the kernel in to `bytes` of dynamic shared memory (above the 48 KiB default), after
// checking the device allows it.
template <typename Kernel>
void prepare_shared(Kernel kernel, size_t bytes, const char* name) {
  int device = 0, limit = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > static_cast<size_t>(limit))
    throw std::runtime_error(std::string(name) + ": needs " + std::to_string(bytes) +
                             " bytes of shared memory, the device allows " + std::to_string(limit));
  TANDEM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

dim3 grid_of(const FlashGrid& g) { return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y)); }

template <int D>
void forward_d(const AttentionProblem& p, const FlashTileBounds& t, const float* q, const float* k, const float* v,
               float* out, float* lse, cudaStream_t stream) {
  const FlashGrid grid = flash_grid(FlashKernel::Forward, p);
  if (grid.empty()) return;
  const size_t bytes = flash_shared_bytes(FlashKernel::Forward, D);
  prepare_shared(flash_forward_kernel<D>, bytes, "flash_forward_kernel");
  flash_forward_kernel<D><<<grid_of(grid), kFlashThreads, bytes, stream>>>(p, t, q, k, v, out, lse);
  TANDEM_CHECK_LAUNCH("flash_forward_kernel");
}

template <int D>
void backward_d(const AttentionProblem& p, const FlashTileBounds& t, const float* q, const float* k, const float* v,
                const float* lse, const float* d_out, const float* delta, float* dq, float* dk, float* dv,
                cudaStream_t stream) {
  const FlashGrid kv_grid = flash_grid(FlashKernel::BackwardKv, p);
  if (!kv_grid.empty()) {
    const size_t bytes = flash_shared_bytes(FlashKernel::BackwardKv, D);
    prepare_shared(flash_backward_kv_kernel<D>, bytes, "flash_backward_kv_kernel");
    flash_backward_kv_kernel<D><<<grid_of(kv_grid), kFlashThreads, bytes, stream>>>(p, t, q, k, v, lse, d_out, delta,
                                                                                    dk, dv);
    TANDEM_CHECK_LAUNCH("flash_backward_kv_kernel");
  }
  const FlashGrid q_grid = flash_grid(FlashKernel::BackwardQ, p);
  if (!q_grid.empty()) {
    const size_t bytes = flash_shared_bytes(FlashKernel::BackwardQ, D);
    prepare_shared(flash_backward_q_kernel<D>, bytes, "flash_backward_q_kernel");
    flash_backward_q_kernel<D><<<grid_of(q_grid), kFlashThreads, bytes, stream>>>(p, t, q, k, v, lse, d_out, delta,
                                                                                  dq);
    TANDEM_CHECK_LAUNCH("flash_backward_q_kernel");
  }
}

void check_tiles(const char* op, const AttentionProblem& p, const FlashTileBounds& t) {
  if ((p.s_q > 0 && t.q_tile_max == nullptr) || (p.s_kv > 0 && t.kv_tile_min == nullptr))
    throw std::invalid_argument(std::string(op) + ": tile position bounds missing");
}

}  // namespace

int flash_head_dim(int64_t d) {
  if (d < 1 || d > kFlashMaxHeadDim)
    throw std::invalid_argument("flash attention: head dim d = " + std::to_string(d) + " is outside [1, " +
                                std::to_string(kFlashMaxHeadDim) + "]");
  return d <= 64 ? 64 : d <= 128 ? 128 : 256;
}

size_t flash_shared_bytes(FlashKernel kernel, int padded_d) {
  const size_t dp = static_cast<size_t>(padded_d) + 1, tile = static_cast<size_t>(kR) * (kC + 1);
  const size_t heads = 2 * static_cast<size_t>(kC) * dp + static_cast<size_t>(kR) * dp;   // K, V, Q tiles
  const size_t positions = static_cast<size_t>(kR + kC);
  switch (kernel) {
    case FlashKernel::Forward:
      return (heads + tile + positions) * sizeof(float);
    case FlashKernel::BackwardKv:   // + dO tile, P and dS tiles, lse and delta rows
    case FlashKernel::BackwardQ:    // + dO tile, dS tile, lse and delta rows
      return (heads + static_cast<size_t>(kR) * dp + (kernel == FlashKernel::BackwardKv ? 2 : 1) * tile + 2 * kR +
              positions) * sizeof(float);
  }
  return 0;
}

FlashGrid flash_grid(FlashKernel kernel, const AttentionProblem& p) {
  FlashGrid g;
  if (kernel == FlashKernel::BackwardKv) {
    g.x = ceil_div(p.s_kv, kC);
    g.y = p.b * p.hkv;
  } else {
    g.x = ceil_div(p.s_q, kR);
    g.y = p.b * p.hq;
  }
  if (g.y > 65535)
    throw std::invalid_argument("flash attention: b * heads = " + std::to_string(g.y) + " exceeds 65535");
  return g;
}

std::vector<int32_t> tile_max_positions(const std::vector<int32_t>& positions, int tile) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < positions.size(); i += static_cast<size_t>(tile))
    out.push_back(*std::max_element(positions.begin() + static_cast<std::ptrdiff_t>(i),
                                    positions.begin() + static_cast<std::ptrdiff_t>(std::min(positions.size(), i + tile))));
  return out;
}

std::vector<int32_t> tile_min_positions(const std::vector<int32_t>& positions, int tile) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < positions.size(); i += static_cast<size_t>(tile))
    out.push_back(*std::min_element(positions.begin() + static_cast<std::ptrdiff_t>(i),
                                    positions.begin() + static_cast<std::ptrdiff_t>(std::min(positions.size(), i + tile))));
  return out;
}

void launch_flash_attention_forward(const AttentionProblem& p, const FlashTileBounds& tiles, const float* q,
                                    const float* k, const float* v, float* out, float* lse, cudaStream_t stream) {
  check_attention_problem("flash_attention_forward", p);
  check_tiles("flash_attention_forward", p, tiles);
  if (p.s_q == 0 || p.b == 0 || p.hq == 0) return;
  switch (flash_head_dim(p.d)) {
    case 64: return forward_d<64>(p, tiles, q, k, v, out, lse, stream);
    case 128: return forward_d<128>(p, tiles, q, k, v, out, lse, stream);
    default: return forward_d<256>(p, tiles, q, k, v, out, lse, stream);
  }
}

void launch_flash_attention_backward(const AttentionProblem& p, const FlashTileBounds& tiles, const float* q,
                                     const float* k, const float* v, const float* out, const float* lse,
                                     const float* d_out, float* dq, float* dk, float* dv, float* delta,
                                     cudaStream_t stream) {
  check_attention_problem("flash_attention_backward", p);
  check_tiles("flash_attention_backward", p, tiles);
  if (p.b == 0 || p.hq == 0) return;
  const int d_pad = flash_head_dim(p.d);
  const LaunchConfig cfg = grid_1d(p.b * p.hq * p.s_q);
  if (!cfg.empty()) {
    flash_delta_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(p, out, d_out, delta);
    TANDEM_CHECK_LAUNCH("flash_delta_kernel");
  }
  switch (d_pad) {
    case 64: return backward_d<64>(p, tiles, q, k, v, lse, d_out, delta, dq, dk, dv, stream);
    case 128: return backward_d<128>(p, tiles, q, k, v, lse, d_out, delta, dq, dk, dv, stream);
    default: return backward_d<256>(p, tiles, q, k, v, lse, d_out, delta, dq, dk, dv, stream);
  }
}

}  // namespace tandem::cuda
