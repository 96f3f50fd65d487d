#include "backends/cpu/ops_activation.h"

#include "backends/kernel_math/activation_math.h"
#include "core/check.h"

namespace tandem::cpu {

void gelu_forward(ConstTensorView x, GeluForm form, TensorView y) {
  check_shape(y, x.shape, "gelu output");
  const int64_t n = x.numel();
  if (form == GeluForm::Tanh) {
    for (int64_t i = 0; i < n; ++i) y.data[i] = kmath::gelu_tanh(x.data[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y.data[i] = kmath::gelu_erf(x.data[i]);
  }
}

void gelu_backward(ConstTensorView x, ConstTensorView dy, GeluForm form, TensorView dx) {
  check_shape(dy, x.shape, "gelu grad output");
  check_shape(dx, x.shape, "gelu grad input");
  const int64_t n = x.numel();
  if (form == GeluForm::Tanh) {
    for (int64_t i = 0; i < n; ++i) dx.data[i] = dy.data[i] * kmath::gelu_tanh_grad(x.data[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dx.data[i] = dy.data[i] * kmath::gelu_erf_grad(x.data[i]);
  }
}

void swiglu_forward(ConstTensorView x, TensorView y) {
  TANDEM_CHECK(x.shape.size() == 2 && x.dim(1) % 2 == 0);
  const int64_t rows = x.dim(0), f = x.dim(1) / 2;
  check_shape(y, {rows, f}, "swiglu output");
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = x.ptr() + r * 2 * f;
    const float* up = gate + f;
    float* out = y.ptr() + r * f;
    for (int64_t i = 0; i < f; ++i) out[i] = kmath::swiglu(gate[i], up[i]);
  }
}

void swiglu_backward(ConstTensorView x, ConstTensorView dy, TensorView dx) {
  TANDEM_CHECK(x.shape.size() == 2 && x.dim(1) % 2 == 0);
  const int64_t rows = x.dim(0), f = x.dim(1) / 2;
  check_shape(dy, {rows, f}, "swiglu grad output");
  check_shape(dx, x.shape, "swiglu grad input");
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = x.ptr() + r * 2 * f;
    const float* up = gate + f;
    const float* g = dy.ptr() + r * f;
    float* d_gate = dx.ptr() + r * 2 * f;
    float* d_up = d_gate + f;
    for (int64_t i = 0; i < f; ++i) kmath::swiglu_grad(gate[i], up[i], g[i], d_gate + i, d_up + i);
  }
}

}  // namespace tandem::cpu
