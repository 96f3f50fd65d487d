#include "backends/cuda/cuda_device.h"

#include <cuda_runtime.h>

namespace tandem::cuda {

std::vector<DeviceInfo> visible_devices(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error for later calls
    return {};
  }
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    devices.push_back({i, prop.name, prop.multiProcessorCount, prop.major, prop.minor,
                       static_cast<double>(prop.totalGlobalMem)});
  }
  if (devices.empty() && why) *why = "no CUDA device";
  return devices;
}

std::string version_string() {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  auto fmt = [](int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); };
  return "runtime " + fmt(runtime) + ", driver " + (driver ? fmt(driver) : std::string("none"));
}

}  // namespace tandem::cuda
