#pragma once
// bf16 <-> fp32 conversion of flat buffers (GEMM and attention operands). Host-includable.
//
// bf16 values are stored as their 16 bits (uint16_t, the layout of __nv_bfloat16); rounding is
// to nearest, ties to even (kmath::float_to_bf16_bits, what __float2bfloat16_rn does), so the
// CPU can reproduce the rounding exactly.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

// src [n] fp32 -> dst [n] bf16 bits.
void launch_fp32_to_bf16(const float* src, uint16_t* dst, int64_t n, cudaStream_t stream);

// src [n] bf16 bits -> dst [n] fp32.
void launch_bf16_to_fp32(const uint16_t* src, float* dst, int64_t n, cudaStream_t stream);

}  // namespace tandem::cuda
