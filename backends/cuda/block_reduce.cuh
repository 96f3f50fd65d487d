#pragma once
// Device-side reductions shared by the kernel files (device code only: include from .cu files).
// Every reduction has a fixed order for a given block size (shuffle tree within a warp, then the
// warps' values in warp order), so the same input gives byte-identical results run to run.
#if !defined(__CUDACC__)
#error "block_reduce.cuh holds device code: include it from .cu files only"
#endif
#include <cuda_runtime.h>

namespace tandem::cuda {

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduction over the 32 lanes of a warp; every lane receives the result.
template <typename T, typename Op>
__device__ inline T warp_reduce(T v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Reduction over a whole block (blockDim.x a multiple of 32, at most 1024); every thread
// receives the result. `identity` fills the lanes of missing warps. Uses 32 values of shared
// memory and two __syncthreads, so it may be called several times in a row.
template <typename T, typename Op>
__device__ inline T block_reduce(T v, Op op, T identity) {
  __shared__ T warp_values[32];
  __shared__ T result;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_reduce(v, op);
  if (lane == 0) warp_values[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? warp_values[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) result = w;
  }
  __syncthreads();
  const T out = result;
  __syncthreads();   // the next call may overwrite warp_values / result
  return out;
}

template <typename T>
__device__ inline T block_sum(T v) {
  return block_reduce(v, SumOp{}, T(0));
}

__device__ inline float block_max(float v) { return block_reduce(v, MaxOp{}, -INFINITY); }

}  // namespace tandem::cuda
