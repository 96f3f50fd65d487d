#pragma once
// The linear layer's row-major products as cuBLASLt column-major GEMMs (LtGemm), from the
// dimensions the shared shape rules return (backends/executor/shape_rules.h), and the softmax
// scale the attention kernels use. Host C++ (C++20): the .cuh launchers stay free of exec types.
#include <cstdint>

#include "backends/cuda/ops_gemm.cuh"
#include "backends/executor/device.h"
#include "backends/executor/shape_rules.h"

namespace tandem::cuda {

// The row-major products of the linear layer (operands: pointers filled in by the caller).
LtGemm linear_forward_gemm(const exec::LinearDims& d, exec::WeightLayout layout);       // y = x W
LtGemm linear_grad_input_gemm(const exec::LinearDims& d, exec::WeightLayout layout);    // dx = dy W^T
LtGemm linear_grad_weight_gemm(const exec::LinearDims& d, exec::WeightLayout layout);   // dW += x^T dy | dy^T x

// The scale the kernels use: args.softmax_scale, or 1 / sqrt(d) when it is 0.
float resolved_softmax_scale(const exec::AttentionArgs& args, int64_t d);

}  // namespace tandem::cuda
