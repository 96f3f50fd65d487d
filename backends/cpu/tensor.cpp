#include "backends/cpu/tensor.h"

#include <algorithm>
#include <sstream>

#include "core/check.h"

namespace tandem::cpu {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    TANDEM_CHECK_MSG(d >= 0, "negative dimension in " << shape_string(shape));
    n *= d;
  }
  return n;
}

std::string shape_string(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

Tensor::Tensor(Shape s, float fill_value) : shape(std::move(s)), data(static_cast<size_t>(shape_numel(shape)), fill_value) {}

Tensor::Tensor(Shape s, std::vector<float> values) : shape(std::move(s)), data(std::move(values)) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(data.size()) == shape_numel(shape),
                   data.size() << " values for shape " << shape_string(shape));
}

void Tensor::fill(float value) { std::fill(data.begin(), data.end(), value); }

TensorView make_view(std::span<float> span, Shape shape) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(span.size()) == shape_numel(shape),
                   span.size() << " values for shape " << shape_string(shape));
  return {span, std::move(shape)};
}

ConstTensorView make_view(std::span<const float> span, Shape shape) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(span.size()) == shape_numel(shape),
                   span.size() << " values for shape " << shape_string(shape));
  return {span, std::move(shape)};
}

void check_shape(const ConstTensorView& t, const Shape& expected, const char* what) {
  TANDEM_CHECK_MSG(t.shape == expected && t.numel() == shape_numel(expected),
                   what << " has shape " << shape_string(t.shape) << " (" << t.numel() << " values), expected "
                        << shape_string(expected));
}

void check_optional_shape(const ConstTensorView& t, const Shape& expected, const char* what) {
  if (!t.empty()) check_shape(t, expected, what);
}

}  // namespace tandem::cpu
