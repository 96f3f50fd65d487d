#pragma once
// Error checks of the CUDA backend. Library code never exits: a failed CUDA, cuBLASLt or NCCL
// call throws std::runtime_error naming the call, the file:line and the runtime's message.
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace tandem::cuda {

[[noreturn]] inline void throw_cuda_error(const char* what, const char* file, int line, const std::string& msg) {
  throw std::runtime_error(std::string("CUDA error in ") + what + " at " + file + ":" + std::to_string(line) +
                           ": " + msg);
}

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(what, file, line, cudaGetErrorString(err));
}

// After a kernel launch: a bad configuration or an earlier asynchronous fault shows here.
inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(kernel, file, line, cudaGetErrorString(err));
}

}  // namespace tandem::cuda

#define TANDEM_CUDA_CHECK(call) ::tandem::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define TANDEM_CHECK_LAUNCH(kernel) ::tandem::cuda::check_launch(kernel, __FILE__, __LINE__)
