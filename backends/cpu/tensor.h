#pragma once
// Tensors of the CPU backend: fp32, dense, row-major (last dimension contiguous).
//
//   Tensor           owns its values (shape + std::vector<float>); a value type.
//   TensorView       non-owning, mutable view (span + shape): kernel outputs.
//   ConstTensorView  non-owning, read-only view: kernel inputs.
//
// Kernel conventions (backends/cpu/ops_*.h):
//   - outputs are preallocated by the caller with the documented shape and are fully written
//     (their previous contents are never read, so a NaN-poisoned buffer is fine);
//   - gradients of parameters (weights, biases, norm gains) are ACCUMULATED into (+=), as
//     Megatron accumulates main_grad over micro-batches; gradients of activations are
//     overwritten;
//   - an empty view (numel 0, no shape) means "absent" for optional arguments (e.g. a bias);
//   - shapes are checked with TANDEM_CHECK; a mismatch is a programmer error.
// Token-indexed activations use Megatron's sequence-first order: row = position * batch + b.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem::cpu {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);   // "[2, 3, 4]"

struct TensorView {
  std::span<float> data;
  Shape shape;

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape.at(i); }
  bool empty() const { return data.empty(); }
  float* ptr() const { return data.data(); }
};

struct ConstTensorView {
  std::span<const float> data;
  Shape shape;

  ConstTensorView() = default;
  ConstTensorView(std::span<const float> d, Shape s) : data(d), shape(std::move(s)) {}
  ConstTensorView(const TensorView& v) : data(v.data), shape(v.shape) {}  // NOLINT: implicit by design

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape.at(i); }
  bool empty() const { return data.empty(); }
  const float* ptr() const { return data.data(); }
};

struct Tensor {
  Shape shape;
  std::vector<float> data;   // shape_numel(shape) values, row-major

  Tensor() = default;
  explicit Tensor(Shape s, float fill = 0.0f);
  Tensor(Shape s, std::vector<float> values);   // checks values.size() == numel(s)

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape.at(i); }
  TensorView view() { return {std::span<float>(data), shape}; }
  ConstTensorView view() const { return {std::span<const float>(data), shape}; }
  ConstTensorView cview() const { return view(); }
  operator TensorView() { return view(); }             // NOLINT: implicit by design
  operator ConstTensorView() const { return view(); }  // NOLINT: implicit by design
  void fill(float value);
};

// A view of `span` with `shape` (checks the element count).
TensorView make_view(std::span<float> span, Shape shape);
ConstTensorView make_view(std::span<const float> span, Shape shape);

// Aborts (TANDEM_CHECK) unless `t` has exactly `expected` shape; `what` names the argument.
void check_shape(const ConstTensorView& t, const Shape& expected, const char* what);
// As check_shape, but an empty view is accepted (optional argument).
void check_optional_shape(const ConstTensorView& t, const Shape& expected, const char* what);

}  // namespace tandem::cpu
