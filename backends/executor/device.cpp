// DeviceTensor views and the Device helpers (device.h).
#include "backends/executor/device.h"

#include <algorithm>

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

void Device::copy_column_blocks(const DeviceTensor& src, const DeviceTensor& dst, const ColumnBlocks& b,
                                bool accumulate) {
  TANDEM_CHECK_MSG(src.shape.size() >= 1 && dst.shape.size() >= 1 && src.dim(0) == dst.dim(0),
                   "copy_column_blocks: rows " << src.dim(0) << " vs " << dst.dim(0));
  const int64_t rows = src.dim(0), cs = src.numel() / std::max<int64_t>(rows, 1),
                cd = dst.numel() / std::max<int64_t>(rows, 1);
  TANDEM_CHECK_MSG(b.blocks >= 1 && b.width >= 0 && b.src_offset >= 0 && b.dst_offset >= 0 &&
                       b.src_offset + (b.blocks - 1) * b.src_stride + b.width <= cs &&
                       b.dst_offset + (b.blocks - 1) * b.dst_stride + b.width <= cd,
                   "copy_column_blocks: blocks out of range (" << cs << " -> " << cd << " columns)");
  const std::vector<float> in = to_host(src);
  std::vector<float> out = to_host(dst);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < b.blocks; ++j) {
      const float* s = in.data() + r * cs + b.src_offset + j * b.src_stride;
      float* d = out.data() + r * cd + b.dst_offset + j * b.dst_stride;
      for (int64_t c = 0; c < b.width; ++c) d[c] = accumulate ? d[c] + s[c] : s[c];
    }
  upload(out, dst);
}

}  // namespace tandem::exec
