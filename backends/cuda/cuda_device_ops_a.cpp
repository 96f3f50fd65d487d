// CudaDevice, part A: elementwise ops, reductions, dropout, embedding, norms, activations, RoPE,
// cross-entropy and AdamW. Each method checks the tensor shapes as the CPU device does
// (backends/executor/shape_rules.h, exec::ShapeError on a mismatch) and calls the launchers of
// ops_elementwise / ops_reduce / ops_embedding / ops_norm / ops_activation / ops_rope /
// ops_cross_entropy / ops_optimizer on the current stream.
//
// Host C++ (compiled by the host compiler): only launchers and the CUDA runtime API are used.
// Host data the kernels read (token ids, targets, positions, row ids) is copied into scratch with
// cudaMemcpyAsync from pageable memory, which stages the bytes before it returns.
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/device_arrays.h"
#include "backends/cuda/ops_activation.cuh"
#include "backends/cuda/ops_cross_entropy.cuh"
#include "backends/cuda/ops_elementwise.cuh"
#include "backends/cuda/ops_embedding.cuh"
#include "backends/cuda/ops_norm.cuh"
#include "backends/cuda/ops_optimizer.cuh"
#include "backends/cuda/ops_reduce.cuh"
#include "backends/cuda/ops_rope.cuh"
#include "backends/executor/shape_rules.h"

namespace tandem::cuda {
namespace {

using exec::DeviceTensor;

template <typename T>
DeviceArray<T> upload_span(CudaDevice& dev, std::span<const T> host) {
  return upload_array(dev, std::vector<T>(host.begin(), host.end()));
}

// Device pointer of an optional tensor (nullptr when absent).
float* optional_address(CudaDevice& dev, const DeviceTensor& t) { return t.defined() ? dev.address(t) : nullptr; }
const exec::Shape* optional_shape(const DeviceTensor& t) { return t.defined() ? &t.shape : nullptr; }

// Runs a launcher that leaves one double in device memory, then brings it to the host
// (synchronises the current stream).
template <typename Launch>
double reduce_to_host(CudaDevice& dev, size_t scratch_bytes, Launch launch) {
  DeviceArray<double> result = device_array<double>(dev, 1);
  std::shared_ptr<void> scratch = scratch_bytes > 0 ? dev.scratch(scratch_bytes) : nullptr;
  launch(result.ptr, scratch.get());
  return download_array(dev, result.ptr, 1)[0];
}

}  // namespace

void CudaDevice::fill(const DeviceTensor& t, float value) {
  if (t.numel() == 0) return;
  launch_fill(address(t), t.numel(), value, stream());
}

void CudaDevice::copy(const DeviceTensor& src, const DeviceTensor& dst) {
  const int64_t n = exec::check_same_numel("copy", "src", src.shape, "dst", dst.shape);
  if (n == 0) return;
  if (src.same_memory(dst) && src.offset != dst.offset) {   // partial overlap: stage through scratch
    DeviceArray<float> staged = device_array<float>(*this, static_cast<size_t>(n));
    launch_copy(in(src), staged.ptr, n, stream());
    launch_copy(staged.ptr, address(dst), n, stream());
    return;
  }
  launch_copy(in(src), address(dst), n, stream());
}

void CudaDevice::add(const DeviceTensor& a, const DeviceTensor& b, const DeviceTensor& out) {
  exec::check_same_numel("add", "a", a.shape, "b", b.shape);
  const int64_t n = exec::check_same_numel("add", "a", a.shape, "out", out.shape);
  if (n == 0) return;
  launch_add(in(a), in(b), address(out), n, stream());
}

void CudaDevice::axpy(float alpha, const DeviceTensor& x, const DeviceTensor& y) {
  const int64_t n = exec::check_same_numel("axpy", "x", x.shape, "y", y.shape);
  if (n == 0) return;
  launch_axpy(alpha, in(x), address(y), n, stream());
}

void CudaDevice::scale(const DeviceTensor& x, float factor) {
  if (x.numel() == 0) return;
  launch_scale(address(x), x.numel(), factor, stream());
}

void CudaDevice::add_row_vector(const DeviceTensor& x, const DeviceTensor& bias) {
  const exec::RowsCols d = exec::check_row_vector("add_row_vector", x.shape, bias.shape);
  if (d.rows == 0) return;
  launch_add_row_vector(address(x), in(bias), d.rows, d.cols, stream());
}

void CudaDevice::column_sums_accumulate(const DeviceTensor& x, const DeviceTensor& out) {
  const exec::RowsCols d = exec::check_row_vector("column_sums_accumulate", x.shape, out.shape);
  if (d.rows == 0) return;
  const size_t bytes = column_sums_scratch_bytes(d.rows, d.cols);
  std::shared_ptr<void> partials = scratch(bytes);
  launch_column_sums(ColumnTerm::X, ColumnTermInputs{in(x), nullptr, nullptr, nullptr}, d.rows, d.cols, address(out),
                     partials.get(), bytes, stream());
}

void CudaDevice::copy_columns(const DeviceTensor& src, int64_t begin, const DeviceTensor& dst) {
  const exec::RowsCols d = exec::check_copy_columns(src.shape, begin, dst.shape);
  if (d.rows == 0 || dst.dim(1) == 0) return;
  launch_copy_columns(in(src), d.rows, d.cols, begin, address(dst), dst.dim(1), stream());
}

void CudaDevice::dropout(const DeviceTensor& x, float p, uint64_t key, std::span<const int64_t> row_ids) {
  const exec::RowsCols d = exec::check_dropout(x.shape, p, static_cast<int64_t>(row_ids.size()));
  if (d.rows == 0 || d.cols == 0) return;
  const DeviceArray<int64_t> ids = upload_span(*this, row_ids);
  launch_dropout(address(x), ids.ptr, d.rows, d.cols, p, key, stream());
}

double CudaDevice::sum_of_squares(const DeviceTensor& x) {
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const float* data = in(x);
  const size_t bytes = sum_scratch_bytes(n);
  return reduce_to_host(*this, bytes, [&](double* result, void* scratch) {
    launch_sum_of_squares(data, n, result, scratch, bytes, stream());
  });
}

double CudaDevice::sum(const DeviceTensor& x) {
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const float* data = in(x);
  const size_t bytes = sum_scratch_bytes(n);
  return reduce_to_host(*this, bytes, [&](double* result, void* scratch) {
    launch_sum(data, n, result, scratch, bytes, stream());
  });
}

void CudaDevice::embedding_forward(std::span<const int32_t> ids, const DeviceTensor& table, int64_t vocab_start,
                                   const DeviceTensor& out) {
  const int64_t tokens = static_cast<int64_t>(ids.size());
  const exec::RowsCols d = exec::check_embedding("embedding_forward", tokens, table.shape, out.shape);
  if (tokens == 0 || d.cols == 0) return;
  const DeviceArray<int32_t> dev_ids = upload_span(*this, ids);
  launch_embedding_forward(dev_ids.ptr, tokens, d.rows > 0 ? in(table) : nullptr, d.rows, d.cols, vocab_start,
                           address(out), stream());
}

void CudaDevice::embedding_backward(std::span<const int32_t> ids, const DeviceTensor& d_out, int64_t vocab_start,
                                    const DeviceTensor& d_table) {
  const int64_t tokens = static_cast<int64_t>(ids.size());
  const exec::RowsCols d = exec::check_embedding("embedding_backward", tokens, d_table.shape, d_out.shape);
  if (tokens == 0 || d.rows == 0 || d.cols == 0) return;
  const DeviceArray<int32_t> dev_ids = upload_span(*this, ids);
  launch_embedding_backward(dev_ids.ptr, tokens, in(d_out), d.rows, d.cols, vocab_start, address(d_table), stream());
}

void CudaDevice::norm_forward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                              const DeviceTensor& beta, float eps, const DeviceTensor& y, const DeviceTensor& mean,
                              const DeviceTensor& rstd) {
  const exec::RowsCols d = exec::check_norm_forward(kind, x.shape, gamma.shape, optional_shape(beta), y.shape,
                                        optional_shape(mean), rstd.shape);
  if (d.rows == 0) return;
  if (kind == exec::NormKind::LayerNorm)
    launch_layernorm_forward(in(x), in(gamma), optional_address(*this, beta), d.rows, d.cols, eps, address(y),
                             address(mean), address(rstd), stream());
  else
    launch_rmsnorm_forward(in(x), in(gamma), d.rows, d.cols, eps, address(y), address(rstd), stream());
}

void CudaDevice::norm_backward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                               const DeviceTensor& mean, const DeviceTensor& rstd, const DeviceTensor& dy,
                               const DeviceTensor& dx, const DeviceTensor& dgamma, const DeviceTensor& dbeta) {
  const exec::RowsCols d = exec::check_norm_backward(kind, x.shape, gamma.shape, optional_shape(mean), rstd.shape, dy.shape,
                                         dx.shape, dgamma.shape, optional_shape(dbeta));
  if (d.rows == 0) return;
  const bool layer = kind == exec::NormKind::LayerNorm;
  const float* mu = layer ? in(mean) : nullptr;
  float* db = layer ? optional_address(*this, dbeta) : nullptr;
  // Parameter gradients first: they read dy, which dx may overwrite.
  const size_t bytes = norm_param_grads_scratch_bytes(d.rows, d.cols);
  std::shared_ptr<void> partials = scratch(bytes);
  launch_norm_param_grads(in(x), mu, in(rstd), in(dy), d.rows, d.cols, address(dgamma), db, partials.get(), bytes,
                          stream());
  launch_norm_backward_input(in(x), in(gamma), mu, in(rstd), in(dy), d.rows, d.cols, address(dx), stream());
}

void CudaDevice::activation_forward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& y) {
  const exec::RowsCols d = exec::check_activation_forward(kind, x.shape, y.shape);
  if (d.rows * d.cols == 0) return;
  if (kind == exec::ActivationKind::SwiGlu) return launch_swiglu_forward(in(x), d.rows, d.cols, address(y), stream());
  const GeluForm form = kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf;
  launch_gelu_forward(form, in(x), d.rows, address(y), stream());
}

void CudaDevice::activation_backward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& dy,
                                     const DeviceTensor& dx) {
  const exec::RowsCols d = exec::check_activation_backward(kind, x.shape, dy.shape, dx.shape);
  if (d.rows * d.cols == 0) return;
  if (kind == exec::ActivationKind::SwiGlu)
    return launch_swiglu_backward(in(x), in(dy), d.rows, d.cols, address(dx), stream());
  const GeluForm form = kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf;
  launch_gelu_backward(form, in(x), in(dy), d.rows, address(dx), stream());
}

namespace {

void rope_apply(CudaDevice& dev, const char* op, const DeviceTensor& x, std::span<const int32_t> positions,
                double base, bool backward, const DeviceTensor& y) {
  const exec::RopeDims d = exec::check_rope(op, x.shape, static_cast<int64_t>(positions.size()), base, y.shape);
  if (d.s * d.rows_per_pos * d.d == 0) return;
  const DeviceArray<int32_t> pos = upload_span(dev, positions);   // empty: null, positions 0..s-1
  const size_t bytes = rope_scratch_bytes(d.s, d.d);
  std::shared_ptr<void> tables = dev.scratch(bytes);
  launch_rope(dev.in(x), d.s, d.rows_per_pos, d.d, 0, pos.ptr, base, backward, dev.address(y), tables.get(), bytes,
              dev.stream());
}

}  // namespace

void CudaDevice::rope_forward(const DeviceTensor& x, std::span<const int32_t> positions, double base,
                              const DeviceTensor& y) {
  rope_apply(*this, "rope_forward", x, positions, base, false, y);
}

void CudaDevice::rope_backward(const DeviceTensor& dy, std::span<const int32_t> positions, double base,
                               const DeviceTensor& dx) {
  rope_apply(*this, "rope_backward", dy, positions, base, true, dx);
}

void CudaDevice::cross_entropy_partials(const DeviceTensor& logits, std::span<const int32_t> targets,
                                        int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                        const DeviceTensor& target_logit) {
  const exec::RowsCols d = exec::check_cross_entropy_partials(logits.shape, static_cast<int64_t>(targets.size()), max.shape,
                                                  sum_exp.shape, target_logit.shape);
  if (d.rows == 0) return;
  const DeviceArray<int32_t> dev_targets = upload_span(*this, targets);
  launch_cross_entropy_partials(d.cols > 0 ? in(logits) : nullptr, d.rows, d.cols, dev_targets.ptr, vocab_start,
                                address(max), address(sum_exp), address(target_logit), stream());
}

void CudaDevice::rescale_sum_exp(const DeviceTensor& sum_exp, const DeviceTensor& local_max,
                                 const DeviceTensor& global_max) {
  const int64_t n = exec::check_token_vectors("rescale_sum_exp", {{"sum_exp", &sum_exp.shape},
                                                            {"local_max", &local_max.shape},
                                                            {"global_max", &global_max.shape}});
  if (n == 0) return;
  launch_rescale_sum_exp(address(sum_exp), in(local_max), in(global_max), n, stream());
}

void CudaDevice::cross_entropy_loss(const DeviceTensor& max, const DeviceTensor& sum_exp,
                                    const DeviceTensor& target_logit, const DeviceTensor& loss) {
  const int64_t n = exec::check_token_vectors("cross_entropy_loss", {{"max", &max.shape},
                                                               {"sum_exp", &sum_exp.shape},
                                                               {"target_logit", &target_logit.shape},
                                                               {"loss", &loss.shape}});
  if (n == 0) return;
  launch_cross_entropy_loss(in(max), in(sum_exp), in(target_logit), address(loss), n, stream());
}

void CudaDevice::cross_entropy_backward(const DeviceTensor& logits, std::span<const int32_t> targets,
                                        int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                        const DeviceTensor& d_loss, const DeviceTensor& d_logits) {
  const exec::RowsCols d = exec::check_cross_entropy_backward(logits.shape, static_cast<int64_t>(targets.size()), max.shape,
                                                  sum_exp.shape, d_loss.shape, d_logits.shape);
  if (d.rows == 0 || d.cols == 0) return;
  const DeviceArray<int32_t> dev_targets = upload_span(*this, targets);
  launch_cross_entropy_backward(in(logits), d.rows, d.cols, dev_targets.ptr, vocab_start, in(max), in(sum_exp),
                                in(d_loss), address(d_logits), stream());
}

void CudaDevice::adamw_step(const DeviceTensor& param, const DeviceTensor& grad, const DeviceTensor& exp_avg,
                            const DeviceTensor& exp_avg_sq, float lr, float beta1, float beta2, float eps,
                            float weight_decay, int64_t step, float grad_scale) {
  const int64_t n = exec::check_adamw(param.shape, grad.shape, exp_avg.shape, exp_avg_sq.shape, step);
  if (n == 0) return;
  const kmath::AdamWStep s = kmath::adamw_step_constants(lr, beta1, beta2, eps, weight_decay, step);
  launch_adamw(address(param), in(grad), address(exp_avg), address(exp_avg_sq), n, s, grad_scale, nullptr, stream());
}

}  // namespace tandem::cuda
