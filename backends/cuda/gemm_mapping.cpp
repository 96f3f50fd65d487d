// cuBLASLt mappings of the linear layer and the attention scale (gemm_mapping.h).
#include "backends/cuda/gemm_mapping.h"

#include <cmath>

namespace tandem::cuda {

LtGemm linear_forward_gemm(const exec::LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // y [m, n] = x [m, k] . W ([k, n], or [n, k] transposed)
  g.m = d.m;
  g.n = d.n;
  g.k = d.k;
  g.trans_b = layout == exec::WeightLayout::OutIn;
  return g;
}

LtGemm linear_grad_input_gemm(const exec::LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // dx [m, k] = dy [m, n] . W^T (W^T: InOut [k, n] transposed, OutIn [n, k] as is)
  g.m = d.m;
  g.n = d.k;
  g.k = d.n;
  g.trans_b = layout == exec::WeightLayout::InOut;
  return g;
}

LtGemm linear_grad_weight_gemm(const exec::LinearDims& d, exec::WeightLayout layout) {
  LtGemm g;   // InOut: dW [k, n] += x^T dy (a = x, b = dy); OutIn: dW [n, k] += dy^T x (a = dy, b = x)
  const bool in_out = layout == exec::WeightLayout::InOut;
  g.trans_a = true;
  g.m = in_out ? d.k : d.n;
  g.n = in_out ? d.n : d.k;
  g.k = d.m;
  g.beta = 1.0f;
  return g;
}

float resolved_softmax_scale(const exec::AttentionArgs& args, int64_t d) {
  return args.softmax_scale != 0.0f ? args.softmax_scale : 1.0f / std::sqrt(static_cast<float>(d));
}

}  // namespace tandem::cuda
