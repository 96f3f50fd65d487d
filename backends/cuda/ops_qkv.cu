// Fused QKV split/merge kernels (ops_qkv.cuh).
#include "backends/cuda/ops_qkv.cuh"

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

// Element i of mixed [rows, groups * (qpg + 2) * d] <-> its place in q, k or v. Split copies
// mixed -> parts, merge parts -> mixed.
template <bool kSplit>
__global__ void qkv_kernel(float* __restrict__ mixed, float* __restrict__ q, float* __restrict__ k,
                           float* __restrict__ v, int64_t rows, int64_t groups, int64_t qpg, int64_t d) {
  const int64_t block = (qpg + 2) * d;   // one group's columns in mixed
  const int64_t n = rows * groups * block;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rg = i / block;   // row * groups + group
    const int64_t c = i % block;
    float* part;
    if (c < qpg * d) part = q + rg * qpg * d + c;
    else if (c < (qpg + 1) * d) part = k + rg * d + (c - qpg * d);
    else part = v + rg * d + (c - (qpg + 1) * d);
    if (kSplit) *part = mixed[i];
    else mixed[i] = *part;
  }
}

}  // namespace

void check_qkv_dims(const char* op, const QkvDims& dims) {
  check_size(op, "rows", dims.rows);
  check_size(op, "groups", dims.groups);
  check_size(op, "d", dims.d);
  if (dims.qpg < 1) throw std::invalid_argument(std::string(op) + ": qpg = " + std::to_string(dims.qpg) + " is below 1");
}

void launch_split_qkv(const float* mixed, const QkvDims& dims, float* q, float* k, float* v, cudaStream_t stream) {
  check_qkv_dims("split_qkv", dims);
  const LaunchConfig cfg = grid_1d(dims.rows * dims.mixed_width());
  if (cfg.empty()) return;
  qkv_kernel<true><<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(
      const_cast<float*>(mixed), q, k, v, dims.rows, dims.groups, dims.qpg, dims.d);
  TANDEM_CHECK_LAUNCH("split_qkv");
}

void launch_merge_qkv(const float* q, const float* k, const float* v, const QkvDims& dims, float* mixed,
                      cudaStream_t stream) {
  check_qkv_dims("merge_qkv", dims);
  const LaunchConfig cfg = grid_1d(dims.rows * dims.mixed_width());
  if (cfg.empty()) return;
  qkv_kernel<false><<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(
      mixed, const_cast<float*>(q), const_cast<float*>(k), const_cast<float*>(v), dims.rows, dims.groups, dims.qpg,
      dims.d);
  TANDEM_CHECK_LAUNCH("merge_qkv");
}

}  // namespace tandem::cuda
