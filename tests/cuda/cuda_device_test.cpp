// GPU tests skip themselves (reported as skipped) when no device is visible.
#include <gtest/gtest.h>

#include "backends/cuda/cuda_device.h"

TEST(CudaDevice, ReportsVisibleDevicesOrWhyNot) {
  std::string why;
  const auto devices = tandem::cuda::visible_devices(&why);
  if (devices.empty()) {
    EXPECT_FALSE(why.empty());
    GTEST_SKIP() << "no CUDA device: " << why;
  }
  for (const auto& d : devices) {
    EXPECT_GT(d.sm_count, 0);
    EXPECT_GT(d.memory_bytes, 0);
    EXPECT_FALSE(d.name.empty());
  }
}
