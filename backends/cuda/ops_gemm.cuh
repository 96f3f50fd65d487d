#pragma once
// GEMMs through cuBLASLt: bf16 operands, fp32 accumulation (CUBLAS_COMPUTE_32F) and fp32 output,
// Megatron's bf16 numerics. Host-includable (no device code).
//
// Everything is described row-major, as the tensors are stored:
//   C [m, n] = op(A) · op(B) (+ beta C) (+ bias [n] on every row)
//   A is [m, k] (or [k, m] stored when trans_a), B is [k, n] (or [n, k] stored when trans_b).
// cuBLASLt is column-major: a row-major X [r, c] is the column-major X^T [c, r]. So the product
// is issued as C^T [n, m] = op(B)^T · op(A)^T, i.e. cuBLAS's A is our B and its B is our A, with
// the same transposition flags (to_column_major below, tested on the host).
//
// Matmul descriptors, layouts and the heuristic's algorithm are cached per (handle, shape,
// flags, pointer alignment) in a small map: the same shapes repeat every micro-batch.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

// Throws std::runtime_error naming the cuBLASLt call unless status is CUBLAS_STATUS_SUCCESS.
void check_cublas(cublasStatus_t status, const char* what, const char* file, int line);
#define TANDEM_CUBLAS_CHECK(call) ::tandem::cuda::check_cublas((call), #call, __FILE__, __LINE__)

// One row-major product (see the header comment). Operands are bf16 bits, C/bias fp32.
struct LtGemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const uint16_t* a = nullptr;   // bf16 [m, k] or [k, m]
  const uint16_t* b = nullptr;   // bf16 [k, n] or [n, k]
  float* c = nullptr;            // fp32 [m, n]
  float beta = 0.0f;             // 0: C overwritten, 1: C accumulated into
  const float* bias = nullptr;   // fp32 [n] or nullptr (CUBLASLT_EPILOGUE_BIAS)
};

// The column-major problem cuBLASLt sees: D [rows_c, cols_c] = op(A') · op(B').
struct ColumnMajorGemm {
  bool trans_a = false, trans_b = false;   // op of A' and B'
  uint64_t rows_a = 0, cols_a = 0, ld_a = 0;
  uint64_t rows_b = 0, cols_b = 0, ld_b = 0;
  uint64_t rows_c = 0, cols_c = 0, ld_c = 0;
  uint64_t m = 0, n = 0, k = 0;            // cuBLAS's M, N, K
};

// A' = our B, B' = our A; M = n, N = m, K = k.
inline ColumnMajorGemm to_column_major(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k) {
  ColumnMajorGemm g;
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  g.trans_a = trans_b;
  g.rows_a = u(trans_b ? k : n);
  g.cols_a = u(trans_b ? n : k);
  g.ld_a = g.rows_a;
  g.trans_b = trans_a;
  g.rows_b = u(trans_a ? m : k);
  g.cols_b = u(trans_a ? k : m);
  g.ld_b = g.rows_b;
  g.rows_c = u(n);
  g.cols_c = u(m);
  g.ld_c = u(n);
  g.m = u(n);
  g.n = u(m);
  g.k = u(k);
  return g;
}

// Largest power of two (at most 256) dividing the address: the alignment cuBLASLt may assume.
inline uint32_t pointer_alignment(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && addr % a != 0) a /= 2;
  return a;
}

// Issues the product on `stream`. Shapes are checked (std::invalid_argument naming the field);
// m == 0 or n == 0 is a no-op; k == 0 writes C = beta C (+ bias).
void lt_matmul(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes, const LtGemm& g,
               cudaStream_t stream);

// Drops the cached descriptors of `handle` (before the handle is destroyed).
void lt_cache_release(cublasLtHandle_t handle);
// Cached plans right now (all handles), for tests and diagnostics.
size_t lt_cache_size();

}  // namespace tandem::cuda
