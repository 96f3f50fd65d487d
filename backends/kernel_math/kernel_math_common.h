#pragma once
// Common ground of the shared kernel math: the host/device qualifier and a few helpers.
//
// TANDEM_HD marks a function usable from host C++ and from CUDA device code. Everything in
// backends/kernel_math is `TANDEM_HD inline` and depends only on <cmath>/<cstdint>, so the CPU
// backend and the CUDA backend compute GeLU, norms, softmax, AdamW, RoPE and bf16 rounding with
// one source. Math is written in float (the dtype both backends accumulate in), except where a
// double is stated.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_HD __host__ __device__
#else
#define TANDEM_HD
#endif

namespace tandem::kmath {

// Overloaded math for templated accumulators (float on the GPU, double on the CPU reference).
using std::exp;
using std::log;
using std::pow;
using std::sqrt;

inline constexpr float kSqrt2OverPi = 0.7978845608028654f;   // sqrt(2 / pi)
inline constexpr float kInvSqrt2 = 0.7071067811865476f;      // 1 / sqrt(2)
inline constexpr float kInvSqrt2Pi = 0.3989422804014327f;    // 1 / sqrt(2 pi)

TANDEM_HD inline float max_f(float a, float b) { return a > b ? a : b; }

}  // namespace tandem::kmath
