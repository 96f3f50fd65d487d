#pragma once
// Vocabulary-parallel embedding lookup and its backward (host-includable launchers).
// table [v_local, h] holds global rows [vocab_start, vocab_start + v_local); ids [tokens] are
// global ids in DEVICE memory (the CudaDevice copies the host ids to scratch first).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

// out [tokens, h] = table[ids[t] - vocab_start] for ids in this rank's rows, 0 elsewhere.
void launch_embedding_forward(const int32_t* ids, int64_t tokens, const float* table, int64_t v_local, int64_t h,
                              int64_t vocab_start, float* out, cudaStream_t stream);
// d_table [v_local, h] += d_out [tokens, h] rows scattered to ids[t] - vocab_start (rows outside
// [0, v_local) skipped). Uses float atomicAdd: repeated ids are summed in a run-dependent order,
// so this op alone is not bitwise deterministic (sums agree to rounding).
void launch_embedding_backward(const int32_t* ids, int64_t tokens, const float* d_out, int64_t v_local, int64_t h,
                               int64_t vocab_start, float* d_table, cudaStream_t stream);

}  // namespace tandem::cuda
