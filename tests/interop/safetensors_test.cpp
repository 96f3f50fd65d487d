// safetensors writer/reader and the bf16 / f16 conversions (interop/safetensors.h).
#include "interop/safetensors.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include <unistd.h>

#include "core/check.h"

namespace tandem::interop {
namespace {

// Round to nearest bf16, ties to even, decided on exact distances in double (independent of the
// bit trick in float_to_bf16): the two bf16 neighbours of x are its truncation and the next one up.
uint16_t reference_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t lo = static_cast<uint16_t>(u >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dx = x, dlo = bf16_to_float(lo), dhi = bf16_to_float(hi);
  const double a = std::fabs(dx - dlo), b = std::isinf(dhi) ? std::fabs(0x1p128 - std::fabs(dx)) : std::fabs(dhi - dx);
  if (a < b) return lo;
  if (b < a) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16, KnownValues) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);   // tie, even stays
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);   // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);   // above the tie
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to +inf
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  const uint16_t nan = float_to_bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(bf16_to_float(nan)));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0x7F800001u)))));   // signalling, low bits only
}

TEST(Bf16, RandomBitPatternsRoundToNearestEven) {
  std::mt19937 rng(5);
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (!std::isfinite(x) || std::fabs(x) > 3.3e38f) continue;
    ASSERT_EQ(float_to_bf16(x), reference_bf16(x)) << std::hexfloat << x;
    ++checked;
  }
  EXPECT_GT(checked, 190000);
}

TEST(F16, KnownValues) {
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));   // smallest subnormal
  EXPECT_EQ(f16_to_float(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(f16_to_float(0x8000)));
  EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
}

class SafetensorsFile : public ::testing::Test {
 protected:
  std::string path = (std::filesystem::temp_directory_path() / ("st_test_" + std::to_string(::getpid()) + ".safetensors")).string();
  void TearDown() override { std::filesystem::remove(path); }
  void write(const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
};

TEST_F(SafetensorsFile, WritesSortedPaddedHeaderAndReadsBack) {
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.1f, 7.0f, -0.0f}, b = {0.5f, 1e-3f};
  const std::string bytes = safetensors_bytes({{"z.weight", {2, 3}, &a}, {"a.bias", {2}, &b}}, StDtype::F32, {{"format", "pt"}});
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  EXPECT_EQ(hlen % 8, 0u);
  const std::string header = bytes.substr(8, hlen);
  EXPECT_LT(header.find("__metadata__"), header.find("a.bias"));
  EXPECT_LT(header.find("a.bias"), header.find("z.weight"));
  EXPECT_EQ(bytes.size(), 8 + hlen + 4 * (a.size() + b.size()));
  write(bytes);
  const auto t = read_safetensors(path);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.at("z.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.at("z.weight").values, a);
  EXPECT_EQ(t.at("a.bias").values, b);
}

TEST_F(SafetensorsFile, Bf16ValuesAreTheRoundedOnes) {
  const std::vector<float> a = {1.0f, 1.00390625f, 1.01171875f, 3.14159265f, -1e-20f, 65504.0f};
  write(safetensors_bytes({{"w", {6}, &a}}, StDtype::BF16, {}));
  const auto t = read_safetensors(path);
  EXPECT_EQ(t.at("w").dtype, StDtype::BF16);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(t.at("w").values[i], bf16_to_float(float_to_bf16(a[i])));
  EXPECT_EQ(t.at("w").values[1], 1.0f);            // 1 + 2^-8 is a tie: to even (1.0)
  EXPECT_EQ(t.at("w").values[2], 1.015625f);       // 1 + 3 * 2^-8 is a tie: to even (1 + 2^-6)
}

TEST_F(SafetensorsFile, EmptyTensorsAndLyingHeaders) {
  const std::vector<float> none;
  const std::vector<float> two = {1.0f, 2.0f};
  write(safetensors_bytes({{"empty", {0, 4}, &none}, {"two", {2}, &two}}, StDtype::F32, {}));
  EXPECT_EQ(read_safetensors(path).at("empty").values.size(), 0u);
  // Header length of 2^63: refused, not allocated.
  write(std::string("\x00\x00\x00\x00\x00\x00\x00\x80{}", 10));
  EXPECT_THROW(read_safetensors(path), UserError);
  // Negative dimension and a non-object header.
  for (const std::string h : {R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", R"([1,2])",
                              R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})"}) {
    std::string bytes(8, '\0');
    const uint64_t n = h.size();
    std::memcpy(bytes.data(), &n, 8);
    write(bytes + h + std::string(4, '\0'));
    EXPECT_THROW(read_safetensors(path), UserError) << h;
  }
}

}  // namespace
}  // namespace tandem::interop
