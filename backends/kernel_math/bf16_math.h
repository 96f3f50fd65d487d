#pragma once
// bf16 emulation: round an fp32 value to the nearest bf16 (ties to even) and widen it back.
// Mirrors what a GPU does when it stores an fp32 result as bf16 (__float2bfloat16_rn), so the
// CPU backend can reproduce GPU numerics of bf16-stored tensors.
//   - NaN stays NaN (quiet), +-inf stay infinite, values beyond the bf16 range round to +-inf.
//   - Subnormals round like any other value (bf16 keeps fp32's exponent range).
#include <cstring>

#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

TANDEM_HD inline uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

TANDEM_HD inline float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

// The 16 bits of the bf16 nearest to x (round to nearest, ties to even).
TANDEM_HD inline uint16_t float_to_bf16_bits(float x) {
  const uint32_t bits = float_bits(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);   // NaN: keep sign, force quiet
  }
  const uint32_t lsb = (bits >> 16) & 1u;
  const uint32_t rounded = bits + 0x7fffu + lsb;
  return static_cast<uint16_t>(rounded >> 16);
}

TANDEM_HD inline float bf16_bits_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// fp32 -> bf16 -> fp32.
TANDEM_HD inline float round_to_bf16(float x) { return bf16_bits_to_float(float_to_bf16_bits(x)); }

}  // namespace tandem::kmath
