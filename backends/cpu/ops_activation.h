#pragma once
// MLP activations, forward and backward (math in backends/kernel_math/activation_math.h).
//   GeLU over [rows, f]: tanh approximation (Megatron's bias_gelu fusion) or exact erf form.
//   SwiGLU: input [rows, 2f] laid out [gate | up] along the last dimension per rank (Megatron's
//   torch.chunk(x, 2, -1) of the fc1 output) -> [rows, f] = silu(gate) * up.
#include "backends/cpu/tensor.h"

namespace tandem::cpu {

enum class GeluForm { Tanh, Erf };

// x [rows, f] -> y [rows, f].
void gelu_forward(ConstTensorView x, GeluForm form, TensorView y);

// x [rows, f], dy [rows, f] -> dx [rows, f].
void gelu_backward(ConstTensorView x, ConstTensorView dy, GeluForm form, TensorView dx);

// x [rows, 2f] -> y [rows, f].
void swiglu_forward(ConstTensorView x, TensorView y);

// x [rows, 2f], dy [rows, f] -> dx [rows, 2f].
void swiglu_backward(ConstTensorView x, ConstTensorView dy, TensorView dx);

}  // namespace tandem::cpu
