// Embedding lookup / scatter-add (ops_embedding.cuh): one thread per (token, feature).
#include "backends/cuda/ops_embedding.cuh"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {
namespace {

// out [tokens, h]: element i is feature i % h of token i / h.
__global__ void embedding_forward_kernel(const int32_t* ids, const float* table, int64_t v_local, int64_t h,
                                         int64_t vocab_start, float* out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t t = i / h, j = i % h;
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_start;
    out[i] = row >= 0 && row < v_local ? table[row * h + j] : 0.0f;
  }
}

// d_table [v_local, h] += d_out [tokens, h]. atomicAdd because several tokens may share an id;
// the order of their additions (hence the last bits) varies between runs.
__global__ void embedding_backward_kernel(const int32_t* ids, const float* d_out, int64_t v_local, int64_t h,
                                          int64_t vocab_start, float* d_table, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t t = i / h, j = i % h;
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_start;
    if (row >= 0 && row < v_local) atomicAdd(d_table + row * h + j, d_out[i]);
  }
}

void check_embedding(const char* op, const int32_t* ids, int64_t tokens, const float* table, int64_t v_local,
                     int64_t h, const float* out) {
  check_size(op, "tokens", tokens);
  check_size(op, "v_local", v_local);
  check_size(op, "h", h);
  if (tokens > 0 && h > 0 && (ids == nullptr || out == nullptr || (v_local > 0 && table == nullptr)))
    throw std::invalid_argument(std::string(op) + ": null ids, table or output");
}

}  // namespace

void launch_embedding_forward(const int32_t* ids, int64_t tokens, const float* table, int64_t v_local, int64_t h,
                              int64_t vocab_start, float* out, cudaStream_t stream) {
  check_embedding("embedding_forward", ids, tokens, table, v_local, h, out);
  const LaunchConfig c = grid_1d(tokens * h);
  if (c.empty()) return;
  embedding_forward_kernel<<<c.grid, c.block, 0, stream>>>(ids, table, v_local, h, vocab_start, out, tokens * h);
  TANDEM_CHECK_LAUNCH("embedding_forward_kernel");
}

void launch_embedding_backward(const int32_t* ids, int64_t tokens, const float* d_out, int64_t v_local, int64_t h,
                               int64_t vocab_start, float* d_table, cudaStream_t stream) {
  check_embedding("embedding_backward", ids, tokens, d_table, v_local, h, d_out);
  const LaunchConfig c = grid_1d(tokens * h);
  if (c.empty() || v_local == 0) return;
  embedding_backward_kernel<<<c.grid, c.block, 0, stream>>>(ids, d_out, v_local, h, vocab_start, d_table,
                                                            tokens * h);
  TANDEM_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace tandem::cuda
