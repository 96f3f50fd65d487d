#pragma once
// Elementwise kernels over flat fp32 device buffers (host-includable launchers).
// Every launcher takes device pointers, sizes in elements and a stream; it checks its sizes on
// the host (std::invalid_argument naming the op and the bad size), launches a grid-stride kernel
// (launch_config.h grid_1d), then checks the launch. Zero elements launch nothing.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

// x [n] = value.
void launch_fill(float* x, int64_t n, float value, cudaStream_t stream);
// dst [n] = src [n] (device to device; src and dst must not partly overlap).
void launch_copy(const float* src, float* dst, int64_t n, cudaStream_t stream);
// out [n] = a [n] + b [n] (out may alias a or b).
void launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream);
// y [n] += alpha * x [n].
void launch_axpy(float alpha, const float* x, float* y, int64_t n, cudaStream_t stream);
// x [n] *= factor.
void launch_scale(float* x, int64_t n, float factor, cudaStream_t stream);
// x [rows, cols] += bias [cols] on every row.
void launch_add_row_vector(float* x, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);
// src [rows, cols] -> dst [rows, width] = columns [begin, begin + width).
void launch_copy_columns(const float* src, int64_t rows, int64_t cols, int64_t begin, float* dst, int64_t width,
                         cudaStream_t stream);
// x [rows, cols] *= keep / (1 - p), keep from backends/kernel_math/dropout_math.h with the
// global row ids row_ids [rows] (device memory). p in [0, 1] (1 drops all).
void launch_dropout(float* x, const int64_t* row_ids, int64_t rows, int64_t cols, float p, uint64_t key,
                    cudaStream_t stream);

}  // namespace tandem::cuda
