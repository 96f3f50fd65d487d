#pragma once
// Flash attention (forward and backward) for the problem of ops_attention.cuh: tiles of
// kFlashRows queries x kFlashCols keys in shared memory, online softmax, never an s x s matrix.
// Host-includable.
//
//   forward   grid (query tiles, b * hq): running max / sum per query row, output accumulated
//             in registers (each of the 4 threads of a row owns every 4th column), lse written.
//   backward  (1) delta = d_out . out per query row; (2) dk/dv: grid (key tiles, b * hkv), the
//             block walks every query head of its kv group and every query tile, recomputing
//             P = exp(s - lse); (3) dq: grid (query tiles, b * hq), walking the key tiles.
//             Each output element is owned by one thread of one block: deterministic, no atomics.
// Tiles entirely in the causal future (min key position of the tile > max query position of
// the query tile, from the host's per-tile position bounds) are skipped.
// Head dims up to kFlashMaxHeadDim; the kernels are instantiated for d padded to 64, 128, 256.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backends/cuda/ops_attention.cuh"

namespace tandem::cuda {

inline constexpr int kFlashRows = 32;      // queries per tile
inline constexpr int kFlashCols = 32;      // keys per tile
inline constexpr int kFlashThreads = 128;  // 4 threads per query (or key) row
inline constexpr int64_t kFlashMaxHeadDim = 256;

enum class FlashKernel { Forward, BackwardKv, BackwardQ };

// The padded head dimension the kernels are instantiated for (64, 128 or 256); throws
// std::invalid_argument for d outside [1, kFlashMaxHeadDim].
int flash_head_dim(int64_t d);

// Dynamic shared memory of a kernel for padded head dim `padded_d`, in bytes.
size_t flash_shared_bytes(FlashKernel kernel, int padded_d);

// Grid of a kernel: x = tiles (query tiles, or key tiles for BackwardKv), y = b * heads.
struct FlashGrid {
  int64_t x = 0, y = 0;
  bool empty() const { return x == 0 || y == 0; }
};
FlashGrid flash_grid(FlashKernel kernel, const AttentionProblem& p);

// Per-tile causal bounds from host positions: max position of each query tile, min of each key
// tile (what the kernels compare to skip whole tiles).
std::vector<int32_t> tile_max_positions(const std::vector<int32_t>& positions, int tile);
std::vector<int32_t> tile_min_positions(const std::vector<int32_t>& positions, int tile);

// Device arrays of the per-tile bounds.
struct FlashTileBounds {
  const int32_t* q_tile_max = nullptr;    // [ceil(s_q / kFlashRows)]
  const int32_t* kv_tile_min = nullptr;   // [ceil(s_kv / kFlashCols)]
};

// q, k, v -> out, lse (overwritten).
void launch_flash_attention_forward(const AttentionProblem& p, const FlashTileBounds& tiles, const float* q,
                                    const float* k, const float* v, float* out, float* lse, cudaStream_t stream);

// The block backward (see launch_attention_backward_reference): dq, dk, dv overwritten.
// delta: scratch of b * hq * s_q floats.
void launch_flash_attention_backward(const AttentionProblem& p, const FlashTileBounds& tiles, const float* q,
                                     const float* k, const float* v, const float* out, const float* lse,
                                     const float* d_out, float* dq, float* dk, float* dv, float* delta,
                                     cudaStream_t stream);

}  // namespace tandem::cuda
