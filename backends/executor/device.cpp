// DeviceTensor views and the Device helpers (device.h).
#include "backends/executor/device.h"

#include "core/check.h"

namespace tandem::exec {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

DeviceTensor DeviceTensor::rows(int64_t begin, int64_t end) const {
  TANDEM_CHECK_MSG(!shape.empty() && begin >= 0 && begin <= end && end <= shape[0],
                   "rows [" << begin << ", " << end << ") of a tensor with " << (shape.empty() ? 0 : shape[0]));
  Shape s = shape;
  s[0] = end - begin;
  const int64_t row = shape[0] == 0 ? 0 : numel() / shape[0];
  return DeviceTensor{storage, offset + begin * row, std::move(s)};
}

DeviceTensor DeviceTensor::slice(int64_t start, Shape new_shape) const {
  const int64_t n = numel_of(new_shape);
  TANDEM_CHECK_MSG(start >= 0 && start + n <= numel(), "slice [" << start << ", " << start + n << ") of " << numel());
  return DeviceTensor{storage, offset + start, std::move(new_shape)};
}

DeviceTensor DeviceTensor::reshaped(Shape new_shape) const {
  TANDEM_CHECK_MSG(numel_of(new_shape) == numel(), "reshape of " << numel() << " elements");
  return DeviceTensor{storage, offset, std::move(new_shape)};
}

bool DeviceTensor::same_memory(const DeviceTensor& other) const {
  if (storage != other.storage || !defined()) return false;
  return offset < other.offset + other.numel() && other.offset < offset + numel();
}

DeviceTensor Device::zeros(Shape shape) {
  DeviceTensor t = empty(std::move(shape));
  fill(t, 0.0f);
  return t;
}

std::vector<float> Device::to_host(const DeviceTensor& src) {
  std::vector<float> out(static_cast<size_t>(src.numel()));
  download(src, out);
  return out;
}

}  // namespace tandem::exec
