#include "backends/cpu/ops_norm.h"

#include <vector>

#include "backends/kernel_math/norm_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

// Parameter gradients summed over rows in double, then added to the fp32 accumulators:
// dgamma [h] += sum_r dy[r] * xhat[r], dbeta [h] += sum_r dy[r] (when dbeta is given).
// centred: LayerNorm (xhat = (x - mean) rstd) vs RMSNorm (xhat = x rstd).
void accumulate_norm_param_grads(ConstTensorView x, ConstTensorView mean, ConstTensorView rstd, ConstTensorView dy,
                                 bool centred, TensorView dgamma, TensorView dbeta) {
  const int64_t rows = x.dim(0), h = x.dim(1);
  std::vector<double> g(static_cast<size_t>(h), 0.0), b(static_cast<size_t>(h), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.ptr() + r * h;
    const float* dyr = dy.ptr() + r * h;
    const float mu = centred ? mean.data[r] : 0.0f;
    for (int64_t i = 0; i < h; ++i) {
      g[i] += static_cast<double>(dyr[i]) * ((xr[i] - mu) * rstd.data[r]);
      b[i] += dyr[i];
    }
  }
  for (int64_t i = 0; i < h; ++i) dgamma.data[i] += static_cast<float>(g[i]);
  if (!dbeta.empty()) {
    for (int64_t i = 0; i < h; ++i) dbeta.data[i] += static_cast<float>(b[i]);
  }
}

}  // namespace

void layernorm_forward(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta, float eps, TensorView y,
                       TensorView mean, TensorView rstd) {
  TANDEM_CHECK(x.shape.size() == 2);
  const int64_t rows = x.dim(0), h = x.dim(1);
  check_shape(gamma, {h}, "layernorm gamma");
  check_optional_shape(beta, {h}, "layernorm beta");
  check_shape(y, {rows, h}, "layernorm output");
  check_shape(mean, {rows}, "layernorm mean");
  check_shape(rstd, {rows}, "layernorm rstd");
  const float* b = beta.empty() ? nullptr : beta.ptr();
  for (int64_t r = 0; r < rows; ++r) {
    kmath::layernorm_row_forward<double>(x.ptr() + r * h, gamma.ptr(), b, h, eps, y.ptr() + r * h, mean.ptr() + r,
                                         rstd.ptr() + r);
  }
}

void layernorm_backward(ConstTensorView x, ConstTensorView gamma, ConstTensorView mean, ConstTensorView rstd,
                        ConstTensorView dy, TensorView dx, TensorView dgamma, TensorView dbeta) {
  TANDEM_CHECK(x.shape.size() == 2);
  const int64_t rows = x.dim(0), h = x.dim(1);
  check_shape(gamma, {h}, "layernorm gamma");
  check_shape(mean, {rows}, "layernorm mean");
  check_shape(rstd, {rows}, "layernorm rstd");
  check_shape(dy, {rows, h}, "layernorm grad output");
  check_shape(dx, {rows, h}, "layernorm grad input");
  check_shape(dgamma, {h}, "layernorm grad gamma");
  check_optional_shape(dbeta, {h}, "layernorm grad beta");
  for (int64_t r = 0; r < rows; ++r) {
    kmath::layernorm_row_backward<double>(x.ptr() + r * h, gamma.ptr(), dy.ptr() + r * h, h, mean.data[r],
                                          rstd.data[r], dx.ptr() + r * h, nullptr, nullptr);
  }
  accumulate_norm_param_grads(x, mean, rstd, dy, true, dgamma, dbeta);
}

void rmsnorm_forward(ConstTensorView x, ConstTensorView gamma, float eps, TensorView y, TensorView rstd) {
  TANDEM_CHECK(x.shape.size() == 2);
  const int64_t rows = x.dim(0), h = x.dim(1);
  check_shape(gamma, {h}, "rmsnorm gamma");
  check_shape(y, {rows, h}, "rmsnorm output");
  check_shape(rstd, {rows}, "rmsnorm rstd");
  for (int64_t r = 0; r < rows; ++r) {
    kmath::rmsnorm_row_forward<double>(x.ptr() + r * h, gamma.ptr(), h, eps, y.ptr() + r * h, rstd.ptr() + r);
  }
}

void rmsnorm_backward(ConstTensorView x, ConstTensorView gamma, ConstTensorView rstd, ConstTensorView dy,
                      TensorView dx, TensorView dgamma) {
  TANDEM_CHECK(x.shape.size() == 2);
  const int64_t rows = x.dim(0), h = x.dim(1);
  check_shape(gamma, {h}, "rmsnorm gamma");
  check_shape(rstd, {rows}, "rmsnorm rstd");
  check_shape(dy, {rows, h}, "rmsnorm grad output");
  check_shape(dx, {rows, h}, "rmsnorm grad input");
  check_shape(dgamma, {h}, "rmsnorm grad gamma");
  for (int64_t r = 0; r < rows; ++r) {
    kmath::rmsnorm_row_backward<double>(x.ptr() + r * h, gamma.ptr(), dy.ptr() + r * h, h, rstd.data[r],
                                        dx.ptr() + r * h, nullptr);
  }
  accumulate_norm_param_grads(x, rstd, rstd, dy, false, dgamma, TensorView{});
}

}  // namespace tandem::cpu
