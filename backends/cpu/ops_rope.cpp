#include "backends/cpu/ops_rope.h"

#include <cmath>
#include <vector>

#include "backends/kernel_math/rope_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

// Rotates x into y (forward) or applies the transposed rotation (backward).
void rope_apply(ConstTensorView x, const RopeOptions& options, bool backward, TensorView y) {
  TANDEM_CHECK(x.shape.size() == 4);
  check_shape(y, x.shape, "rope output");
  const int64_t s = x.dim(0), rows_per_pos = x.dim(1) * x.dim(2), d = x.dim(3);
  const int64_t rot = options.rot_dim == 0 ? d : options.rot_dim;
  TANDEM_CHECK_MSG(rot % 2 == 0 && rot <= d, "rope rot_dim " << rot << " with head_dim " << d);
  TANDEM_CHECK(options.positions.empty() || static_cast<int64_t>(options.positions.size()) == s);
  const int64_t half = rot / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int64_t p = 0; p < s; ++p) {
    const int64_t pos = options.positions.empty() ? p : options.positions[p];
    for (int64_t i = 0; i < half; ++i) {
      const double angle = kmath::rope_angle(pos, i, rot, options.base);
      cos_t[i] = static_cast<float>(std::cos(angle));
      sin_t[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t r = 0; r < rows_per_pos; ++r) {
      const float* xr = x.ptr() + (p * rows_per_pos + r) * d;
      float* yr = y.ptr() + (p * rows_per_pos + r) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float a = xr[i], b = xr[i + half];
        if (backward) {
          kmath::rope_rotate_grad(a, b, cos_t[i], sin_t[i], yr + i, yr + i + half);
        } else {
          kmath::rope_rotate(a, b, cos_t[i], sin_t[i], yr + i, yr + i + half);
        }
      }
      for (int64_t i = rot; i < d; ++i) yr[i] = xr[i];
    }
  }
}

}  // namespace

void rope_forward(ConstTensorView x, const RopeOptions& options, TensorView y) { rope_apply(x, options, false, y); }

void rope_backward(ConstTensorView dy, const RopeOptions& options, TensorView dx) { rope_apply(dy, options, true, dx); }

}  // namespace tandem::cpu
