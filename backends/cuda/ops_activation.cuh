#pragma once
// Activations and their gradients (host-includable launchers), math from
// backends/kernel_math/activation_math.h. GeLU is elementwise over n; SwiGLU reads
// x [rows, 2f] = [gate | up] per row and writes y [rows, f].
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

enum class GeluForm { Tanh, Erf };

// y [n] = gelu(x [n]) (y may alias x).
void launch_gelu_forward(GeluForm form, const float* x, int64_t n, float* y, cudaStream_t stream);
// dx [n] = dy [n] * gelu'(x [n]) (overwritten; dx may alias dy).
void launch_gelu_backward(GeluForm form, const float* x, const float* dy, int64_t n, float* dx, cudaStream_t stream);
// y [rows, f] = silu(gate) * up.
void launch_swiglu_forward(const float* x, int64_t rows, int64_t f, float* y, cudaStream_t stream);
// dy [rows, f] -> dx [rows, 2f] = [d gate | d up] (overwritten).
void launch_swiglu_backward(const float* x, const float* dy, int64_t rows, int64_t f, float* dx,
                            cudaStream_t stream);

}  // namespace tandem::cuda
