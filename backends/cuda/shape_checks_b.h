#pragma once
// Host-side shape rules of the CUDA kernels of part B (GEMMs, grouped GEMMs, attention, QKV,
// MoE): what CudaDevice checks before it launches, as plain functions of shapes so that tests
// run without a device. A violation throws std::invalid_argument naming the op, the field and
// the offending shape or value. Host C++ (C++20): the .cuh launchers stay free of exec types.
#include <cstdint>
#include <span>
#include <string>

#include "backends/cuda/ops_gemm.cuh"
#include "backends/executor/device.h"

namespace tandem::cuda {

// ---- shape rules of the linear layer and the grouped (expert) GEMM, checked on the host.
// A linear layer [k] -> [n] over m rows; W is [k, n] (InOut) or [n, k] (OutIn).
struct LinearDims {
  int64_t m = 0, n = 0, k = 0;
};

// Throws std::invalid_argument "<op>: <field> has shape [..], expected [..]".
void expect_shape(const char* op, const char* field, const exec::Shape& got, const exec::Shape& want);
exec::Shape linear_weight_shape(exec::WeightLayout layout, int64_t k, int64_t n);

// x [m, k], w, bias [n] (has_bias), y [m, n].
LinearDims check_gemm_forward(const exec::Shape& x, const exec::Shape& w, const exec::Shape* bias,
                              exec::WeightLayout layout, const exec::Shape& y);
// dy [m, n], w, dx [m, k].
LinearDims check_gemm_grad_input(const exec::Shape& dy, const exec::Shape& w, exec::WeightLayout layout,
                                 const exec::Shape& dx);
// x [m, k], dy [m, n], dw, dbias [n] (optional).
LinearDims check_gemm_grad_weight(const exec::Shape& x, const exec::Shape& dy, exec::WeightLayout layout,
                                  const exec::Shape& dw, const exec::Shape* dbias);

// Grouped: rows = sum(counts) (each >= 0), x [rows, k], w [E, k, n] (InOut), y [rows, n].
// Returns {rows, n, k}.
LinearDims check_grouped_forward(const exec::Shape& x, const exec::Shape& w, std::span<const int64_t> counts,
                                 const exec::Shape& y);
LinearDims check_grouped_grad_input(const exec::Shape& dy, const exec::Shape& w, std::span<const int64_t> counts,
                                    const exec::Shape& dx);
LinearDims check_grouped_grad_weight(const exec::Shape& x, const exec::Shape& dy, std::span<const int64_t> counts,
                                     const exec::Shape& dw);

// The row-major products of the linear layer (operands: pointers filled in by the caller).
LtGemm linear_forward_gemm(const LinearDims& d, exec::WeightLayout layout);       // y = x W
LtGemm linear_grad_input_gemm(const LinearDims& d, exec::WeightLayout layout);    // dx = dy W^T
LtGemm linear_grad_weight_gemm(const LinearDims& d, exec::WeightLayout layout);   // dW += x^T dy | dy^T x

}  // namespace tandem::cuda
