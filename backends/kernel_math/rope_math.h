#pragma once
// Rotary position embedding (RoPE), Megatron's default "rotate half" convention:
// a head vector of rotary dimension r is split into halves x1 = x[0:r/2], x2 = x[r/2:r], and the
// pair (x1[i], x2[i]) is rotated by the angle  theta_i(p) = p * base^(-2i / r)  of position p:
//   y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin          (t * cos + rotate_half(t) * sin)
// Backward rotates by -theta:
//   dx1 = dy1 cos + dy2 sin,   dx2 = dy2 cos - dy1 sin
// Dimensions r..head_dim (when rotary_percent < 1) pass through unchanged (the caller's loop).
// The angle is formed in double: p * inv_freq in fp32 loses ~1e-4 rad at p ~ 4k.
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

// Angle of pair i (0 <= i < rot_dim / 2) at position pos.
TANDEM_HD inline double rope_angle(int64_t pos, int64_t i, int64_t rot_dim, double base) {
  const double inv_freq = pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(rot_dim));
  return static_cast<double>(pos) * inv_freq;
}

TANDEM_HD inline void rope_rotate(float x1, float x2, float c, float s, float* y1, float* y2) {
  *y1 = x1 * c - x2 * s;
  *y2 = x2 * c + x1 * s;
}

// Gradient of rope_rotate: the transpose of the rotation.
TANDEM_HD inline void rope_rotate_grad(float dy1, float dy2, float c, float s, float* dx1, float* dx2) {
  *dx1 = dy1 * c + dy2 * s;
  *dx2 = dy2 * c - dy1 * s;
}

}  // namespace tandem::kmath
