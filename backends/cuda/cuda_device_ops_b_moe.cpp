// CudaDevice, part B (MoE): router forward/backward and aux loss, permutation to expert-major
// order and back, gather and scatter-add of rows. Routing is computed on the device (softmax and
// top-k per token); the decisions come to the host, where capacity dropping and the counts
// follow the CPU's rules exactly (ops_moe.cuh). Sums of several rows into one use host-built
// segments in increasing source order, never float atomics: results are reproducible.
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/device_arrays.h"
#include "backends/cuda/ops_moe.cuh"
#include "backends/executor/shape_rules.h"
#include "core/check.h"

namespace tandem::cuda {
namespace {

using exec::DeviceTensor;

// Segments of rows per destination row, uploaded (sources in increasing order).
struct Segments {
  RowSegments host;
  DeviceArray<int64_t> dest_rows, offsets, items;
};

Segments segments(CudaDevice& dev, const char* op, const std::vector<int64_t>& target, int64_t dest_count,
                  bool every_row) {
  Segments s;
  s.host = make_row_segments(op, target, dest_count, every_row);
  s.dest_rows = upload_array(dev, s.host.dest_rows);
  s.offsets = upload_array(dev, s.host.offsets);
  s.items = upload_array(dev, s.host.items);
  return s;
}

SegmentSum segment_sum_of(const Segments& s, const float* in, int64_t cols, float* out, bool accumulate) {
  SegmentSum sum;
  sum.in = in;
  sum.dest_rows = s.dest_rows.ptr;
  sum.offsets = s.offsets.ptr;
  sum.items = s.items.ptr;
  sum.segments = static_cast<int64_t>(s.host.dest_rows.size());
  sum.cols = cols;
  sum.accumulate = accumulate;
  sum.out = out;
  return sum;
}

}  // namespace

exec::RoutingResult CudaDevice::router_forward(const DeviceTensor& logits, const exec::RouterArgs& args) {
  const auto [tokens, experts] = exec::check_router_logits("router_forward", logits.shape, args.topk);
  const int64_t k = args.topk;
  if (args.sigmoid || !args.expert_bias.empty() || args.num_groups > 0 || args.scaling_factor > 0)
    throw UserError("sigmoid scores, expert bias, group-limited routing and --moe-router-topk-scaling-factor are "
                    "implemented by the CPU backend's router only (backends/cpu/ops_router.cpp), not by the CUDA one yet");
  exec::RoutingResult r;
  r.tokens = tokens;
  r.experts = experts;
  r.topk = k;
  r.pre_softmax = args.pre_softmax;
  r.scores = empty({tokens, experts});
  r.probs = empty({tokens, k});
  const DeviceArray<int32_t> chosen = device_array<int32_t>(*this, static_cast<size_t>(tokens * k));
  if (tokens > 0)
    launch_router_forward(in(logits), tokens, experts, k, args.pre_softmax, address(r.scores), chosen.ptr,
                          address(r.probs), stream());
  r.expert = download_array(*this, chosen.ptr, static_cast<size_t>(tokens * k));
  r.kept.assign(r.expert.size(), 1);
  r.routed_per_expert.assign(static_cast<size_t>(experts), 0);
  for (int32_t e : r.expert) ++r.routed_per_expert[static_cast<size_t>(e)];
  if (args.capacity_factor > 0 && tokens > 0) {
    std::vector<float> probs(r.expert.size());
    download(r.probs, probs);
    apply_expert_capacity(r.expert, experts, expert_capacity(tokens, k, experts, args.capacity_factor), probs, r.kept);
    upload(probs, r.probs);
  }
  r.tokens_per_expert.assign(static_cast<size_t>(experts), 0);
  for (size_t i = 0; i < r.expert.size(); ++i) r.tokens_per_expert[static_cast<size_t>(r.expert[i])] += r.kept[i];
  return r;
}

void CudaDevice::router_backward(const DeviceTensor& logits, const exec::RoutingResult& routing,
                                 const DeviceTensor& d_probs, double aux_coeff,
                                 std::span<const int64_t> routed_per_expert, int64_t total_tokens, double d_aux,
                                 const DeviceTensor& d_logits) {
  const char* op = "router_backward";
  const int64_t t_n = routing.tokens, e_n = routing.experts, k = routing.topk;
  exec::check_router_backward(routing, logits.shape, d_probs.shape, d_logits.shape);
  if (t_n == 0) return;
  DeviceArray<float> aux_grad;
  if (aux_coeff != 0.0 && d_aux != 0.0) {   // d aux / d scores[t, e] = scale * routed[e]
    exec::check_aux_inputs(op, routed_per_expert, e_n, total_tokens);
    const double tt = static_cast<double>(total_tokens);
    const double scale = d_aux * aux_coeff * static_cast<double>(e_n) / (static_cast<double>(k) * tt * tt);
    std::vector<float> grad(static_cast<size_t>(e_n));
    for (int64_t e = 0; e < e_n; ++e)
      grad[static_cast<size_t>(e)] = static_cast<float>(scale * static_cast<double>(routed_per_expert[e]));
    aux_grad = upload_array(*this, grad);
  }
  const DeviceArray<int32_t> chosen = upload_array(*this, routing.expert);
  const DeviceArray<uint8_t> kept = upload_array(*this, routing.kept);
  launch_router_backward(in(logits), in(routing.scores), chosen.ptr, kept.ptr, in(d_probs), aux_grad.ptr, t_n, e_n, k,
                         routing.pre_softmax, address(d_logits), stream());
}

double CudaDevice::router_aux_loss(const exec::RoutingResult& routing, double aux_coeff,
                                   std::span<const int64_t> routed_per_expert, int64_t total_tokens) {
  if (aux_coeff == 0.0) return 0.0;
  exec::check_aux_inputs("router_aux_loss", routed_per_expert, routing.experts, total_tokens);
  exec::expect_shape("router_aux_loss", "scores", routing.scores.shape, {routing.tokens, routing.experts});
  const DeviceArray<double> sums = device_array<double>(*this, static_cast<size_t>(routing.experts));
  if (routing.experts == 0) return 0.0;
  launch_score_column_sums(routing.tokens > 0 ? in(routing.scores) : nullptr, routing.tokens, routing.experts,
                           sums.ptr, stream());
  const std::vector<double> col = download_array(*this, sums.ptr, static_cast<size_t>(routing.experts));
  double sum = 0;
  for (int64_t e = 0; e < routing.experts; ++e)
    sum += col[static_cast<size_t>(e)] * static_cast<double>(routed_per_expert[e]);
  const double tt = static_cast<double>(total_tokens);
  return sum * aux_coeff * static_cast<double>(routing.experts) / (static_cast<double>(routing.topk) * tt * tt);
}

void CudaDevice::permute_forward(const DeviceTensor& tokens, const exec::PermutationPlan& plan,
                                 const DeviceTensor& out) {
  const exec::PermuteDims p = exec::check_permute_forward(plan, tokens.shape, out.shape);
  const int64_t h = p.hidden, n = p.rows;
  if (n == 0 || h == 0) return;
  const DeviceArray<int64_t> rows = upload_array(*this, p.token);
  launch_gather_rows(in(tokens), rows.ptr, n, h, address(out), stream());
}

void CudaDevice::permute_backward(const DeviceTensor& d_out, const exec::PermutationPlan& plan,
                                  const DeviceTensor& d_tokens) {
  const char* op = "permute_backward";
  const exec::PermuteDims p = exec::check_permute_backward(plan, d_out.shape, d_tokens.shape);
  const int64_t h = p.hidden, n = p.rows;
  if (plan.tokens == 0 || h == 0) return;
  const Segments s = segments(*this, op, p.token, plan.tokens, true);   // every token written (0 without rows)
  launch_segment_sum(segment_sum_of(s, n > 0 ? in(d_out) : nullptr, h, address(d_tokens), false), stream());
}

void CudaDevice::unpermute_forward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                   const DeviceTensor& probs, const DeviceTensor& y) {
  const char* op = "unpermute_forward";
  const exec::PermuteDims p = exec::check_unpermute_forward(plan, expert_out.shape, probs.shape, y.shape);
  const int64_t h = p.hidden, n = p.rows;
  if (plan.tokens == 0 || h == 0) return;
  const Segments s = segments(*this, op, p.token, plan.tokens, true);
  std::vector<int64_t> weight_index(s.host.items.size());   // selection t * k + slot of each source row
  for (size_t i = 0; i < weight_index.size(); ++i)
    weight_index[i] = plan.source[static_cast<size_t>(s.host.items[i])];
  const DeviceArray<int64_t> widx = upload_array(*this, weight_index);
  SegmentSum sum = segment_sum_of(s, n > 0 ? in(expert_out) : nullptr, h, address(y), false);
  sum.weights = in(probs);
  sum.weight_index = widx.ptr;
  launch_segment_sum(sum, stream());
}

void CudaDevice::unpermute_backward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                    const DeviceTensor& probs, const DeviceTensor& d_y,
                                    const DeviceTensor& d_expert_out, const DeviceTensor& d_probs) {
  const exec::PermuteDims p =
      exec::check_unpermute_backward(plan, expert_out.shape, probs.shape, d_y.shape, d_expert_out.shape, d_probs.shape);
  const int64_t h = p.hidden, n = p.rows;
  if (d_probs.numel() > 0)
    TANDEM_CUDA_CHECK(cudaMemsetAsync(address(d_probs), 0, static_cast<size_t>(d_probs.numel()) * sizeof(float),
                                      stream()));
  if (n == 0) return;
  const DeviceArray<int64_t> sel = upload_array(*this, plan.source), rows = upload_array(*this, p.token);
  launch_unpermute_backward(in(expert_out), in(probs), in(d_y), sel.ptr, rows.ptr, n, h, address(d_expert_out),
                            address(d_probs), stream());
}

void CudaDevice::gather_rows(const DeviceTensor& in_rows, std::span<const int64_t> index, const DeviceTensor& out) {
  const int64_t cols = exec::check_gather_rows(in_rows.shape, index, out.shape).cols;
  const int64_t n = static_cast<int64_t>(index.size());
  if (n == 0 || cols == 0) return;
  const DeviceArray<int64_t> idx = upload_array(*this, std::vector<int64_t>(index.begin(), index.end()));
  launch_gather_rows(in(in_rows), idx.ptr, n, cols, address(out), stream());
}

void CudaDevice::scatter_add_rows(const DeviceTensor& in_rows, std::span<const int64_t> index,
                                  const DeviceTensor& out) {
  const char* op = "scatter_add_rows";
  const auto [rows, cols] = exec::check_scatter_add_rows(in_rows.shape, index, out.shape);
  const int64_t n = static_cast<int64_t>(index.size());
  const Segments s = segments(*this, op, std::vector<int64_t>(index.begin(), index.end()), rows, false);
  if (n == 0 || cols == 0) return;
  launch_segment_sum(segment_sum_of(s, in(in_rows), cols, address(out), true), stream());
}

}  // namespace tandem::cuda
