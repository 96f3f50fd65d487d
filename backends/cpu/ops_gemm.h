#pragma once
// GEMM kernels of the CPU backend: the linear layer (forward, grad-input, grad-weight, optional
// bias) and the grouped form used by MoE experts. One place (sgemm) calls BLAS.
//
// A linear layer computes y [m, n] = x [m, k] · W + bias [n], m = tokens. The weight is stored
//   WeightLayout::InOut  W [k, n]   (the program's convention: [m, k] x [k, n] -> [m, n])
//   WeightLayout::OutIn  W [n, k]   (torch.nn.Linear and Megatron checkpoints: y = x W^T)
// Gradients: dx [m, k] = dy · W^T (overwritten); dW += x^T · dy (resp. dy^T · x for OutIn);
// dbias [n] += column sums of dy.
#include <cstdint>
#include <span>

#include "backends/cpu/tensor.h"

namespace tandem::cpu {

enum class WeightLayout { InOut, OutIn };

// C [m, n] = alpha * op(A) · op(B) + beta * C, row-major, op = transpose when trans_* is set.
// A is [m, k] (or [k, m] when trans_a), B is [k, n] (or [n, k] when trans_b); ld* are row strides.
// beta == 0 never reads C. OpenBLAS when built with it, Eigen otherwise.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The same product through Eigen's own GEMM, whatever sgemm uses (benchmarks, fallback).
void sgemm_eigen(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Which implementation sgemm uses: "openblas" or "eigen".
const char* gemm_backend_name();

// Threads the GEMMs may use (OpenBLAS; Eigen's path is single-threaded here). Several MPI ranks
// on one machine should each ask for cores / ranks, not the OpenBLAS default of every core.
void set_gemm_threads(int threads);

// x [m, k], w [k, n] | [n, k], bias [n] or empty -> y [m, n].
void gemm_forward(ConstTensorView x, ConstTensorView w, ConstTensorView bias, WeightLayout layout, TensorView y);

// dy [m, n], w [k, n] | [n, k] -> dx [m, k].
void gemm_grad_input(ConstTensorView dy, ConstTensorView w, WeightLayout layout, TensorView dx);

// x [m, k], dy [m, n] -> dw [k, n] | [n, k] accumulated; dbias [n] accumulated (empty: no bias).
void gemm_grad_weight(ConstTensorView x, ConstTensorView dy, WeightLayout layout, TensorView dw, TensorView dbias);

// Grouped GEMM of E experts over permuted tokens: rows [offset_e, offset_e + counts[e]) of x use
// weight e. x [sum(counts), k], w [E, k, n] | [E, n, k], counts [E] -> y [sum(counts), n].
void grouped_gemm_forward(ConstTensorView x, ConstTensorView w, std::span<const int64_t> counts, WeightLayout layout,
                          TensorView y);

// dy [sum(counts), n], w [E, k, n] | [E, n, k] -> dx [sum(counts), k].
void grouped_gemm_grad_input(ConstTensorView dy, ConstTensorView w, std::span<const int64_t> counts,
                             WeightLayout layout, TensorView dx);

// x [sum(counts), k], dy [sum(counts), n] -> dw [E, k, n] | [E, n, k] accumulated.
void grouped_gemm_grad_weight(ConstTensorView x, ConstTensorView dy, std::span<const int64_t> counts,
                              WeightLayout layout, TensorView dw);

}  // namespace tandem::cpu
