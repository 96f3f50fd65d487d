#include "backends/cpu/ops_embedding.h"

#include <algorithm>

#include "core/check.h"

namespace tandem::cpu {

void embedding_forward(std::span<const int32_t> ids, ConstTensorView table, int64_t vocab_start, TensorView out) {
  TANDEM_CHECK(table.shape.size() == 2);
  const int64_t tokens = static_cast<int64_t>(ids.size()), v_local = table.dim(0), h = table.dim(1);
  check_shape(out, {tokens, h}, "embedding output");
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = ids[t] - vocab_start;
    float* dst = out.ptr() + t * h;
    if (row >= 0 && row < v_local) {
      std::copy_n(table.ptr() + row * h, h, dst);
    } else {
      std::fill_n(dst, h, 0.0f);
    }
  }
}

void embedding_backward(std::span<const int32_t> ids, ConstTensorView d_out, int64_t vocab_start, TensorView d_table) {
  TANDEM_CHECK(d_table.shape.size() == 2);
  const int64_t tokens = static_cast<int64_t>(ids.size()), v_local = d_table.dim(0), h = d_table.dim(1);
  check_shape(d_out, {tokens, h}, "embedding grad output");
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t row = ids[t] - vocab_start;
    if (row < 0 || row >= v_local) continue;
    const float* src = d_out.ptr() + t * h;
    float* dst = d_table.ptr() + row * h;
    for (int64_t j = 0; j < h; ++j) dst[j] += src[j];
  }
}

}  // namespace tandem::cpu
