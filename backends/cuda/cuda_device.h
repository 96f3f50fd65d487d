#pragma once
// Device discovery for the CUDA backend. Host-only interface: callers need no CUDA headers.
#include <string>
#include <vector>

namespace tandem::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int compute_major = 0, compute_minor = 0;
  double memory_bytes = 0;
};

// Visible devices; empty when there is none. `why` (if given) receives the CUDA runtime's
// explanation when the count is 0 (e.g. "no CUDA-capable device is detected").
std::vector<DeviceInfo> visible_devices(std::string* why = nullptr);

// Runtime and driver versions as "runtime 13.0, driver 12.4" (driver "none" without one).
std::string version_string();

}  // namespace tandem::cuda
