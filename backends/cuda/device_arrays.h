#pragma once
// Small typed device arrays in a CudaDevice's scratch memory, for the host data kernels read
// (positions, index maps, routing decisions). Host C++.
//
// upload_array copies with cudaMemcpyAsync on the current stream; from pageable host memory the
// runtime stages the bytes before returning, so the host vector may die right after the call.
// download_array synchronises the current stream.
#include <memory>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_tensor_device.h"

namespace tandem::cuda {

// Device scratch holding `n` values of T (the handle keeps it alive).
template <typename T>
struct DeviceArray {
  std::shared_ptr<void> memory;
  T* ptr = nullptr;
};

template <typename T>
DeviceArray<T> device_array(CudaDevice& dev, size_t n) {
  if (n == 0) return {};
  DeviceArray<T> a;
  a.memory = dev.scratch(n * sizeof(T));
  a.ptr = static_cast<T*>(a.memory.get());
  return a;
}

template <typename T>
DeviceArray<T> upload_array(CudaDevice& dev, const std::vector<T>& host) {
  DeviceArray<T> a = device_array<T>(dev, host.size());
  if (a.ptr)
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(a.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                                      dev.stream()));
  return a;
}

template <typename T>
std::vector<T> download_array(CudaDevice& dev, const T* ptr, size_t n) {
  std::vector<T> host(n);
  if (n == 0) return host;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost, dev.stream()));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(dev.stream()));
  return host;
}

}  // namespace tandem::cuda
