#pragma once
// LayerNorm and RMSNorm over the last dimension, forward and backward (math in
// backends/kernel_math/norm_math.h, accumulated in double on the CPU).
#include "backends/cpu/tensor.h"

namespace tandem::cpu {

// x [rows, h], gamma [h], beta [h] or empty -> y [rows, h], mean [rows], rstd [rows] (saved for
// backward).
void layernorm_forward(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta, float eps, TensorView y,
                       TensorView mean, TensorView rstd);

// x [rows, h], gamma [h], mean [rows], rstd [rows], dy [rows, h] -> dx [rows, h];
// dgamma [h] and dbeta [h] (empty: no bias) accumulated.
void layernorm_backward(ConstTensorView x, ConstTensorView gamma, ConstTensorView mean, ConstTensorView rstd,
                        ConstTensorView dy, TensorView dx, TensorView dgamma, TensorView dbeta);

// x [rows, h], gamma [h] -> y [rows, h], rstd [rows].
void rmsnorm_forward(ConstTensorView x, ConstTensorView gamma, float eps, TensorView y, TensorView rstd);

// x [rows, h], gamma [h], rstd [rows], dy [rows, h] -> dx [rows, h]; dgamma [h] accumulated.
void rmsnorm_backward(ConstTensorView x, ConstTensorView gamma, ConstTensorView rstd, ConstTensorView dy,
                      TensorView dx, TensorView dgamma);

}  // namespace tandem::cpu
