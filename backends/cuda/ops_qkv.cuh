#pragma once
// Megatron's fused QKV layout <-> separate q, k, v (host-includable).
//
// Per row, `groups` blocks of [qpg query heads | 1 key head | 1 value head], each head d wide:
//   mixed [rows, groups * (qpg + 2) * d]  <->  q [rows, groups * qpg * d], k, v [rows, groups * d].
// One thread per element of mixed (grid-stride); split and merge are exact copies.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

struct QkvDims {
  int64_t rows = 0, groups = 0, qpg = 0, d = 0;
  int64_t mixed_width() const { return groups * (qpg + 2) * d; }
};

// Throws std::invalid_argument "<op>: <field> = <value> ..." for negative sizes or qpg < 1.
void check_qkv_dims(const char* op, const QkvDims& dims);

// mixed -> q, k, v.
void launch_split_qkv(const float* mixed, const QkvDims& dims, float* q, float* k, float* v, cudaStream_t stream);

// q, k, v -> mixed.
void launch_merge_qkv(const float* q, const float* k, const float* v, const QkvDims& dims, float* mixed,
                      cudaStream_t stream);

}  // namespace tandem::cuda
