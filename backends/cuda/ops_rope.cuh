#pragma once
// Rotary position embedding, rotate-half convention (host-includable launchers), math from
// backends/kernel_math/rope_math.h. x, y [s, rows_per_pos, d] where rows_per_pos = b * heads;
// the first rot_dim features of each head rotate, the rest pass through. Angles are formed in
// double and rounded once to fp32 cos/sin, like the CPU backend: a first kernel writes the
// tables cos, sin [s, rot_dim / 2] into scratch, a second applies them.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tandem::cuda {

size_t rope_scratch_bytes(int64_t s, int64_t rot_dim);
// positions [s] (DEVICE memory, int32) or null for 0..s-1. rot_dim even, <= d (0: d).
// backward = true applies the transposed rotation (dy -> dx). y may alias x.
void launch_rope(const float* x, int64_t s, int64_t rows_per_pos, int64_t d, int64_t rot_dim,
                 const int32_t* positions, double base, bool backward, float* y, void* scratch, size_t scratch_bytes,
                 cudaStream_t stream);

}  // namespace tandem::cuda
