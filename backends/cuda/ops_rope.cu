// RoPE kernels (ops_rope.cuh): a cos/sin table per (position, pair), then one thread per pair
// (or pass-through feature) of every head row.
#include "backends/cuda/ops_rope.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"
#include "backends/kernel_math/rope_math.h"

namespace tandem::cuda {
namespace {

// cos_t, sin_t [s, half] of the angle of pair i at the position of sequence row p.
__global__ void rope_table_kernel(const int32_t* positions, int64_t s, int64_t half, int64_t rot, double base,
                                  float* cos_t, float* sin_t) {
  const int64_t n = s * half, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int64_t p = k / half, i = k % half;
    const int64_t pos = positions ? static_cast<int64_t>(positions[p]) : p;
    const double angle = kmath::rope_angle(pos, i, rot, base);
    cos_t[k] = static_cast<float>(cos(angle));
    sin_t[k] = static_cast<float>(sin(angle));
  }
}

// Work item k of row (p, r): k < half rotates the pair (k, k + half); k >= half copies feature
// rot + (k - half). One thread owns every element it writes, so y may alias x.
__global__ void rope_apply_kernel(const float* x, int64_t rows_per_pos, int64_t d, int64_t half, int64_t rot,
                                  bool backward, const float* cos_t, const float* sin_t, float* y, int64_t n) {
  const int64_t per_row = half + (d - rot), stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n; idx += stride) {
    const int64_t row = idx / per_row, k = idx % per_row, p = row / rows_per_pos;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    if (k < half) {
      const float c = cos_t[p * half + k], s = sin_t[p * half + k];
      const float a = xr[k], b = xr[k + half];
      if (backward) kmath::rope_rotate_grad(a, b, c, s, yr + k, yr + k + half);
      else kmath::rope_rotate(a, b, c, s, yr + k, yr + k + half);
    } else {
      const int64_t i = rot + (k - half);
      yr[i] = xr[i];
    }
  }
}

int64_t rotary_dim(int64_t d, int64_t rot_dim) { return rot_dim == 0 ? d : rot_dim; }

}  // namespace

size_t rope_scratch_bytes(int64_t s, int64_t rot_dim) {
  check_size("rope", "s", s);
  check_size("rope", "rot_dim", rot_dim);
  return 2 * static_cast<size_t>(s) * static_cast<size_t>(rot_dim / 2) * sizeof(float);
}

void launch_rope(const float* x, int64_t s, int64_t rows_per_pos, int64_t d, int64_t rot_dim,
                 const int32_t* positions, double base, bool backward, float* y, void* scratch, size_t scratch_bytes,
                 cudaStream_t stream) {
  check_size("rope", "s", s);
  check_size("rope", "rows_per_pos", rows_per_pos);
  check_size("rope", "d", d);
  const int64_t rot = rotary_dim(d, rot_dim);
  if (rot < 0 || rot % 2 != 0 || rot > d)
    throw std::invalid_argument("rope: rot_dim = " + std::to_string(rot) + " must be even and <= head_dim " +
                                std::to_string(d));
  if (!(base > 0)) throw std::invalid_argument("rope: base = " + std::to_string(base) + " must be positive");
  const int64_t half = rot / 2, n = s * rows_per_pos * (half + (d - rot));
  if (n == 0) return;
  if (x == nullptr || y == nullptr) throw std::invalid_argument("rope: null input or output");
  const size_t need = rope_scratch_bytes(s, rot);
  if (scratch_bytes < need || (need > 0 && scratch == nullptr))
    throw std::invalid_argument("rope: scratch_bytes = " + std::to_string(scratch_bytes) + " but " +
                                std::to_string(need) + " are needed");
  auto* cos_t = static_cast<float*>(scratch);
  float* sin_t = cos_t + s * half;
  if (half > 0) {
    const LaunchConfig t = grid_1d(s * half);
    rope_table_kernel<<<t.grid, t.block, 0, stream>>>(positions, s, half, rot, base, cos_t, sin_t);
    TANDEM_CHECK_LAUNCH("rope_table_kernel");
  }
  const LaunchConfig c = grid_1d(n);
  rope_apply_kernel<<<c.grid, c.block, 0, stream>>>(x, rows_per_pos, d, half, rot, backward, cos_t, sin_t, y, n);
  TANDEM_CHECK_LAUNCH("rope_apply_kernel");
}

}  // namespace tandem::cuda
