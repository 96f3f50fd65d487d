#pragma once
// Helpers of the GPU kernel tests (parts A and B): a CPU device (the reference) and a CUDA device side by side,
// fresh random inputs per run (the seed is printed through SCOPED_TRACE for replay), outputs
// poisoned with NaN before a call, comparisons at tolerances that fit the numerics.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_tensor_device.h"

namespace tandem::cuda::testing {

using exec::DeviceTensor;
using exec::Shape;

// The same tensor on both devices.
struct Pair {
  DeviceTensor cpu, gpu;
};

class KernelsBTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (visible_devices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
    gpu_ = std::make_unique<CudaDevice>();
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }

  std::string seed_text() const { return "seed " + std::to_string(seed_) + " (std::mt19937)"; }

  std::vector<float> random(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng_);
    return v;
  }

  Pair both(const Shape& shape, const std::vector<float>& values) {
    Pair p{cpu_.empty(shape), gpu_->empty(shape)};
    cpu_.upload(values, p.cpu);
    gpu_->upload(values, p.gpu);
    return p;
  }
  Pair random_pair(const Shape& shape, float scale = 1.0f) { return both(shape, random(exec::numel_of(shape), scale)); }
  // An output filled with NaN on both devices (every element must be written).
  Pair poisoned(const Shape& shape) {
    return both(shape, std::vector<float>(static_cast<size_t>(exec::numel_of(shape)),
                                          std::numeric_limits<float>::quiet_NaN()));
  }

  // |gpu - cpu| <= rel * max|cpu| + rel_each * |cpu| element-wise; infinities must match.
  void expect_close(const Pair& p, float rel, float rel_each, const std::string& what) {
    const std::vector<float> c = cpu_.to_host(p.cpu), g = gpu_->to_host(p.gpu);
    ASSERT_EQ(c.size(), g.size()) << what;
    float scale = 0.0f;
    for (float x : c)
      if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
    int reported = 0;
    for (size_t i = 0; i < c.size() && reported < 5; ++i) {
      const float tol = rel * scale + rel_each * std::abs(c[i]) + 1e-30f;
      const bool ok = std::isinf(c[i]) ? g[i] == c[i] : std::abs(g[i] - c[i]) <= tol;   // NaN fails
      if (!ok) {
        ++reported;
        ADD_FAILURE() << what << "[" << i << "]: gpu " << g[i] << ", cpu " << c[i] << " (tol " << tol << ", scale "
                      << scale << ")";
      }
    }
  }
  // fp32 kernels: the CPU's result up to summation order.
  void expect_fp32(const Pair& p, const std::string& what) { expect_close(p, 1e-5f, 1e-5f, what); }
  // bf16 operands, fp32 accumulation: 2e-2 of the output's scale.
  void expect_bf16(const Pair& p, const std::string& what) { expect_close(p, 2e-2f, 0.0f, what); }

  void expect_equal(const Pair& p, const std::string& what) {
    const std::vector<float> c = cpu_.to_host(p.cpu), g = gpu_->to_host(p.gpu);
    ASSERT_EQ(c.size(), g.size()) << what;
    for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(g[i], c[i]) << what << "[" << i << "]";
  }

  cpu::CpuDevice cpu_;
  std::unique_ptr<CudaDevice> gpu_;
  unsigned seed_ = 0;
  std::mt19937 rng_;
};

}  // namespace tandem::cuda::testing
