// CpuDevice: exec::Device on host memory with the ops_*.h kernels (cpu_device.h).
#include "backends/cpu/cpu_device.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/ops_activation.h"
#include "backends/cpu/ops_attention.h"
#include "backends/cpu/ops_attention_ring.h"
#include "backends/cpu/ops_cross_entropy.h"
#include "backends/cpu/ops_embedding.h"
#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/ops_norm.h"
#include "backends/cpu/ops_optimizer.h"
#include "backends/cpu/ops_permute.h"
#include "backends/cpu/ops_rope.h"
#include "backends/cpu/ops_router.h"
#include "backends/executor/shape_rules.h"
#include "backends/kernel_math/dropout_math.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

using exec::DeviceTensor;

class CpuStorage final : public exec::DeviceStorage {
 public:
  CpuStorage(int64_t n, std::shared_ptr<CpuDevice::Counter> counter)
      : data(static_cast<size_t>(n)), counter_(std::move(counter)) {
    counter_->live += bytes();
    counter_->peak = std::max(counter_->peak, counter_->live);
  }
  ~CpuStorage() override { counter_->live -= bytes(); }
  CpuStorage(const CpuStorage&) = delete;
  CpuStorage& operator=(const CpuStorage&) = delete;
  int64_t size() const override { return static_cast<int64_t>(data.size()); }
  std::vector<float> data;

 private:
  double bytes() const { return 4.0 * static_cast<double>(data.size()); }
  std::shared_ptr<CpuDevice::Counter> counter_;
};

// The tensor as a kernel view; an undefined tensor gives an empty view ("absent").
TensorView view(const DeviceTensor& t) {
  if (!t.defined()) return {};
  auto* s = dynamic_cast<CpuStorage*>(t.storage.get());
  TANDEM_CHECK_MSG(s != nullptr, "tensor of another device handed to the CPU device");
  TANDEM_CHECK(t.offset >= 0 && t.offset + t.numel() <= s->size());
  return TensorView{std::span<float>(s->data.data() + t.offset, static_cast<size_t>(t.numel())), t.shape};
}

WeightLayout layout_of(exec::WeightLayout l) {
  return l == exec::WeightLayout::InOut ? WeightLayout::InOut : WeightLayout::OutIn;
}

const exec::Shape* optional_shape(const DeviceTensor& t) { return t.defined() ? &t.shape : nullptr; }

AttentionOptions options_of(const exec::AttentionArgs& a) {
  AttentionOptions o;
  o.softmax_scale = a.softmax_scale;
  o.causal = true;
  o.q_positions = a.q_positions;
  o.kv_positions = a.kv_positions;
  return o;
}

AttentionDropout dropout_of(const exec::AttentionArgs& a) {
  return AttentionDropout{a.dropout, a.dropout_key, a.head_offset, a.samples};
}

PermutePlan plan_of(const exec::PermutationPlan& p) {
  PermutePlan out;
  out.tokens = p.tokens;
  out.topk = p.topk;
  out.source = p.source;
  out.tokens_per_expert = p.tokens_per_expert;
  return out;
}

}  // namespace

CpuDevice::CpuDevice() : counter_(std::make_shared<Counter>()) {}

DeviceTensor CpuDevice::empty(exec::Shape shape) {
  const int64_t n = exec::numel_of(shape);
  return DeviceTensor{std::make_shared<CpuStorage>(n, counter_), 0, std::move(shape)};
}

exec::Device::MemoryStats CpuDevice::memory_stats() const { return {counter_->live, counter_->peak}; }

void CpuDevice::reset_peak() { counter_->peak = counter_->live; }

void CpuDevice::upload(std::span<const float> host, const DeviceTensor& dst) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(host.size()) == dst.numel(), "upload of " << host.size() << " into " << dst.numel());
  std::copy(host.begin(), host.end(), view(dst).data.begin());
}

void CpuDevice::download(const DeviceTensor& src, std::span<float> host) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(host.size()) == src.numel(), "download of " << src.numel() << " into " << host.size());
  const TensorView v = view(src);
  std::copy(v.data.begin(), v.data.end(), host.begin());
}

float* CpuDevice::address(const DeviceTensor& t) { return view(t).ptr(); }

void CpuDevice::fill(const DeviceTensor& t, float value) {
  const TensorView v = view(t);
  std::fill(v.data.begin(), v.data.end(), value);
}

void CpuDevice::copy(const DeviceTensor& src, const DeviceTensor& dst) {
  exec::check_same_numel("copy", "src", src.shape, "dst", dst.shape);
  const TensorView s = view(src), d = view(dst);
  std::memmove(d.ptr(), s.ptr(), static_cast<size_t>(s.numel()) * sizeof(float));
}

void CpuDevice::add(const DeviceTensor& a, const DeviceTensor& b, const DeviceTensor& out) {
  exec::check_same_numel("add", "a", a.shape, "b", b.shape);
  exec::check_same_numel("add", "a", a.shape, "out", out.shape);
  const TensorView x = view(a), y = view(b), z = view(out);
  for (int64_t i = 0; i < z.numel(); ++i) z.data[i] = x.data[i] + y.data[i];
}

void CpuDevice::axpy(float alpha, const DeviceTensor& x, const DeviceTensor& y) {
  exec::check_same_numel("axpy", "x", x.shape, "y", y.shape);
  const TensorView a = view(x), b = view(y);
  for (int64_t i = 0; i < b.numel(); ++i) b.data[i] += alpha * a.data[i];
}

void CpuDevice::scale(const DeviceTensor& x, float factor) { scale_in_place(view(x).data, factor); }

void CpuDevice::add_row_vector(const DeviceTensor& x, const DeviceTensor& bias) {
  const int64_t cols = exec::check_row_vector("add_row_vector", x.shape, bias.shape).cols;
  const TensorView v = view(x), b = view(bias);
  for (int64_t i = 0; i < v.numel(); ++i) v.data[i] += b.data[i % cols];
}

void CpuDevice::column_sums_accumulate(const DeviceTensor& x, const DeviceTensor& out) {
  const int64_t cols = exec::check_row_vector("column_sums_accumulate", x.shape, out.shape).cols;
  const TensorView v = view(x), o = view(out);
  std::vector<double> acc(static_cast<size_t>(cols), 0.0);
  for (int64_t i = 0; i < v.numel(); ++i) acc[static_cast<size_t>(i % cols)] += v.data[i];
  for (int64_t c = 0; c < cols; ++c) o.data[c] += static_cast<float>(acc[static_cast<size_t>(c)]);
}

void CpuDevice::copy_columns(const DeviceTensor& src, int64_t begin, const DeviceTensor& dst) {
  const auto [rows, cols] = exec::check_copy_columns(src.shape, begin, dst.shape);
  const int64_t w = dst.dim(1);
  const TensorView s = view(src), d = view(dst);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(s.ptr() + r * cols + begin, w, d.ptr() + r * w);
}

void CpuDevice::dropout(const DeviceTensor& x, float p, uint64_t key, std::span<const int64_t> row_ids) {
  exec::check_dropout(x.shape, p, static_cast<int64_t>(row_ids.size()));
  const int64_t cols = x.numel() / std::max<int64_t>(1, x.dim(0));
  const TensorView v = view(x);
  const float scale = 1.0f / (1.0f - p);
  for (int64_t r = 0; r < x.dim(0); ++r) {
    const uint64_t row_seed = kmath::hidden_dropout_row_seed(key, row_ids[static_cast<size_t>(r)]);
    for (int64_t c = 0; c < cols; ++c)
      v.data[r * cols + c] = kmath::hidden_dropout_keep(row_seed, c, p) ? v.data[r * cols + c] * scale : 0.0f;
  }
}

double CpuDevice::sum_of_squares(const DeviceTensor& x) { return tandem::cpu::sum_of_squares(view(x).data); }

double CpuDevice::sum(const DeviceTensor& x) {
  double s = 0;
  for (float v : view(x).data) s += v;
  return s;
}

void CpuDevice::gemm_forward(const DeviceTensor& x, const DeviceTensor& w, const DeviceTensor& bias,
                             exec::WeightLayout layout, const DeviceTensor& y) {
  exec::check_gemm_forward(x.shape, w.shape, optional_shape(bias), layout, y.shape);
  tandem::cpu::gemm_forward(view(x), view(w), view(bias), layout_of(layout), view(y));
}

void CpuDevice::gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, exec::WeightLayout layout,
                                const DeviceTensor& dx) {
  exec::check_gemm_grad_input(dy.shape, w.shape, layout, dx.shape);
  tandem::cpu::gemm_grad_input(view(dy), view(w), layout_of(layout), view(dx));
}

void CpuDevice::gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy, exec::WeightLayout layout,
                                 const DeviceTensor& dw, const DeviceTensor& dbias) {
  exec::check_gemm_grad_weight(x.shape, dy.shape, layout, dw.shape, optional_shape(dbias));
  tandem::cpu::gemm_grad_weight(view(x), view(dy), layout_of(layout), view(dw), view(dbias));
}

void CpuDevice::grouped_gemm_forward(const DeviceTensor& x, const DeviceTensor& w, std::span<const int64_t> counts,
                                     const DeviceTensor& y) {
  exec::check_grouped_forward(x.shape, w.shape, counts, y.shape);
  tandem::cpu::grouped_gemm_forward(view(x), view(w), counts, WeightLayout::InOut, view(y));
}

void CpuDevice::grouped_gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, std::span<const int64_t> counts,
                                        const DeviceTensor& dx) {
  exec::check_grouped_grad_input(dy.shape, w.shape, counts, dx.shape);
  tandem::cpu::grouped_gemm_grad_input(view(dy), view(w), counts, WeightLayout::InOut, view(dx));
}

void CpuDevice::grouped_gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy,
                                         std::span<const int64_t> counts, const DeviceTensor& dw) {
  exec::check_grouped_grad_weight(x.shape, dy.shape, counts, dw.shape);
  tandem::cpu::grouped_gemm_grad_weight(view(x), view(dy), counts, WeightLayout::InOut, view(dw));
}

void CpuDevice::embedding_forward(std::span<const int32_t> ids, const DeviceTensor& table, int64_t vocab_start,
                                  const DeviceTensor& out) {
  exec::check_embedding("embedding_forward", static_cast<int64_t>(ids.size()), table.shape, out.shape);
  tandem::cpu::embedding_forward(ids, view(table), vocab_start, view(out));
}

void CpuDevice::embedding_backward(std::span<const int32_t> ids, const DeviceTensor& d_out, int64_t vocab_start,
                                   const DeviceTensor& d_table) {
  exec::check_embedding("embedding_backward", static_cast<int64_t>(ids.size()), d_table.shape, d_out.shape);
  tandem::cpu::embedding_backward(ids, view(d_out), vocab_start, view(d_table));
}

void CpuDevice::norm_forward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                             const DeviceTensor& beta, float eps, const DeviceTensor& y, const DeviceTensor& mean,
                             const DeviceTensor& rstd) {
  exec::check_norm_forward(kind, x.shape, gamma.shape, optional_shape(beta), y.shape, optional_shape(mean), rstd.shape);
  if (kind == exec::NormKind::LayerNorm) layernorm_forward(view(x), view(gamma), view(beta), eps, view(y), view(mean), view(rstd));
  else rmsnorm_forward(view(x), view(gamma), eps, view(y), view(rstd));
}

void CpuDevice::norm_backward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                              const DeviceTensor& mean, const DeviceTensor& rstd, const DeviceTensor& dy,
                              const DeviceTensor& dx, const DeviceTensor& dgamma, const DeviceTensor& dbeta) {
  exec::check_norm_backward(kind, x.shape, gamma.shape, optional_shape(mean), rstd.shape, dy.shape, dx.shape,
                            dgamma.shape, optional_shape(dbeta));
  if (kind == exec::NormKind::LayerNorm)
    layernorm_backward(view(x), view(gamma), view(mean), view(rstd), view(dy), view(dx), view(dgamma), view(dbeta));
  else rmsnorm_backward(view(x), view(gamma), view(rstd), view(dy), view(dx), view(dgamma));
}

void CpuDevice::activation_forward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& y) {
  exec::check_activation_forward(kind, x.shape, y.shape);
  if (kind == exec::ActivationKind::SwiGlu) return swiglu_forward(view(x), view(y));
  gelu_forward(view(x), kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf, view(y));
}

void CpuDevice::activation_backward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& dy,
                                    const DeviceTensor& dx) {
  exec::check_activation_backward(kind, x.shape, dy.shape, dx.shape);
  if (kind == exec::ActivationKind::SwiGlu) return swiglu_backward(view(x), view(dy), view(dx));
  gelu_backward(view(x), view(dy), kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf, view(dx));
}

void CpuDevice::rope_forward(const DeviceTensor& x, std::span<const int32_t> positions, double base,
                             const DeviceTensor& y) {
  exec::check_rope("rope_forward", x.shape, static_cast<int64_t>(positions.size()), base, y.shape);
  tandem::cpu::rope_forward(view(x), RopeOptions{0, base, positions}, view(y));
}

void CpuDevice::rope_backward(const DeviceTensor& dy, std::span<const int32_t> positions, double base,
                              const DeviceTensor& dx) {
  exec::check_rope("rope_backward", dy.shape, static_cast<int64_t>(positions.size()), base, dx.shape);
  tandem::cpu::rope_backward(view(dy), RopeOptions{0, base, positions}, view(dx));
}

void CpuDevice::attention_forward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                  const exec::AttentionArgs& args, const DeviceTensor& out, const DeviceTensor& lse) {
  const char* op = "attention_forward";
  exec::check_attention_outputs(op, exec::check_attention_inputs(op, q.shape, k.shape, v.shape, args), q.shape,
                                out.shape, lse.shape);
  if (args.dropout > 0.0f)
    return tandem::cpu::attention_forward_dropout(view(q), view(k), view(v), options_of(args), dropout_of(args),
                                                  view(out), view(lse));
  tandem::cpu::attention_forward(view(q), view(k), view(v), options_of(args), view(out), view(lse));
}

void CpuDevice::attention_backward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                   const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                   const exec::AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                                   const DeviceTensor& dv) {
  exec::check_attention_backward("attention_backward", q.shape, k.shape, v.shape, out.shape, lse.shape, d_out.shape,
                                 args, dq.shape, dk.shape, dv.shape);
  if (args.dropout > 0.0f)
    return tandem::cpu::attention_backward_block(view(q), view(k), view(v), view(out), view(lse), view(d_out),
                                                 options_of(args), view(dq), view(dk), view(dv), dropout_of(args));
  tandem::cpu::attention_backward(view(q), view(k), view(v), view(out), view(lse), view(d_out), options_of(args),
                                  view(dq), view(dk), view(dv));
}

void CpuDevice::attention_backward_block(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                         const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                         const exec::AttentionArgs& args, const DeviceTensor& dq,
                                         const DeviceTensor& dk, const DeviceTensor& dv) {
  exec::check_attention_backward("attention_backward_block", q.shape, k.shape, v.shape, out.shape, lse.shape,
                                 d_out.shape, args, dq.shape, dk.shape, dv.shape);
  tandem::cpu::attention_backward_block(view(q), view(k), view(v), view(out), view(lse), view(d_out), options_of(args),
                                        view(dq), view(dk), view(dv), dropout_of(args));
}

void CpuDevice::attention_merge(const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& out_blk,
                                const DeviceTensor& lse_blk, int64_t row0) {
  exec::check_attention_merge(out.shape, lse.shape, out_blk.shape, lse_blk.shape, row0);
  const int64_t s_q = out.dim(0), b = out.dim(1), hq = out.dim(2), d = out.dim(3), s_blk = out_blk.dim(0);
  const TensorView o = view(out), l = view(lse), ob = view(out_blk), lb = view(lse_blk);
  for (int64_t i = 0; i < s_blk; ++i)
    for (int64_t bb = 0; bb < b; ++bb)
      for (int64_t h = 0; h < hq; ++h) {
        float& l1 = l.data[(bb * hq + h) * s_q + row0 + i];
        const float l2 = lb.data[(bb * hq + h) * s_blk + i];
        const double m = std::max(l1, l2);
        const double w1 = std::exp(double(l1) - m), w2 = std::exp(double(l2) - m), inv = 1.0 / (w1 + w2);
        float* acc = o.ptr() + (((row0 + i) * b + bb) * hq + h) * d;
        const float* blk = ob.ptr() + ((i * b + bb) * hq + h) * d;
        for (int64_t e = 0; e < d; ++e) acc[e] = static_cast<float>((w1 * acc[e] + w2 * blk[e]) * inv);
        l1 = static_cast<float>(m + std::log(w1 + w2));
      }
}

void CpuDevice::split_qkv(const DeviceTensor& mixed, int64_t groups, int64_t qpg, int64_t d, const DeviceTensor& q,
                          const DeviceTensor& k, const DeviceTensor& v) {
  exec::check_qkv_shapes("split_qkv", mixed.shape, groups, qpg, d, q.shape, k.shape, v.shape);
  tandem::cpu::split_qkv(view(mixed), groups, qpg, d, view(q), view(k), view(v));
}

void CpuDevice::merge_qkv(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t groups,
                          int64_t qpg, int64_t d, const DeviceTensor& mixed) {
  exec::check_qkv_shapes("merge_qkv", mixed.shape, groups, qpg, d, q.shape, k.shape, v.shape);
  tandem::cpu::merge_qkv(view(q), view(k), view(v), groups, qpg, d, view(mixed));
}

void CpuDevice::cross_entropy_partials(const DeviceTensor& logits, std::span<const int32_t> targets,
                                       int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                       const DeviceTensor& target_logit) {
  const auto [tokens, v] = exec::check_cross_entropy_partials(logits.shape, static_cast<int64_t>(targets.size()),
                                                              max.shape, sum_exp.shape, target_logit.shape);
  cross_entropy_local_max(view(logits), view(max));
  const TensorView lg = view(logits), mx = view(max), se = view(sum_exp), tl = view(target_logit);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = lg.ptr() + t * v;
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(static_cast<double>(row[j]) - mx.data[t]);
    se.data[t] = static_cast<float>(s);
    const int64_t local = targets[t] - vocab_start;
    tl.data[t] = local >= 0 && local < v ? row[local] : 0.0f;
  }
}

void CpuDevice::rescale_sum_exp(const DeviceTensor& sum_exp, const DeviceTensor& local_max,
                                const DeviceTensor& global_max) {
  exec::check_token_vectors("rescale_sum_exp",
                            {{"sum_exp", &sum_exp.shape}, {"local_max", &local_max.shape}, {"global_max", &global_max.shape}});
  const TensorView s = view(sum_exp), l = view(local_max), g = view(global_max);
  for (int64_t t = 0; t < s.numel(); ++t)
    s.data[t] = static_cast<float>(s.data[t] * std::exp(static_cast<double>(l.data[t]) - g.data[t]));
}

void CpuDevice::cross_entropy_loss(const DeviceTensor& max, const DeviceTensor& sum_exp,
                                   const DeviceTensor& target_logit, const DeviceTensor& loss) {
  exec::check_token_vectors("cross_entropy_loss", {{"max", &max.shape}, {"sum_exp", &sum_exp.shape},
                                                   {"target_logit", &target_logit.shape}, {"loss", &loss.shape}});
  const TensorView m = view(max), s = view(sum_exp), tl = view(target_logit), out = view(loss);
  for (int64_t t = 0; t < out.numel(); ++t)
    out.data[t] = static_cast<float>(std::log(static_cast<double>(s.data[t])) + m.data[t] - tl.data[t]);
}

void CpuDevice::cross_entropy_backward(const DeviceTensor& logits, std::span<const int32_t> targets,
                                       int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                       const DeviceTensor& d_loss, const DeviceTensor& d_logits) {
  exec::check_cross_entropy_backward(logits.shape, static_cast<int64_t>(targets.size()), max.shape, sum_exp.shape,
                                     d_loss.shape, d_logits.shape);
  tandem::cpu::cross_entropy_backward(view(logits), targets, vocab_start, view(max), view(sum_exp), view(d_loss),
                                      view(d_logits));
}

exec::RoutingResult CpuDevice::router_forward(const DeviceTensor& logits, const exec::RouterArgs& args) {
  exec::check_router_logits("router_forward", logits.shape, args.topk);
  const Routing r = tandem::cpu::router_forward(
      view(logits), RouterOptions{args.topk, args.pre_softmax, args.capacity_factor, args.sigmoid, args.expert_bias,
                                  args.num_groups, args.group_topk, args.scaling_factor});
  exec::RoutingResult out;
  out.tokens = r.tokens;
  out.experts = r.experts;
  out.topk = r.topk;
  out.expert = r.expert;
  out.kept = r.kept;
  out.routed_per_expert = r.routed_per_expert;
  out.tokens_per_expert = r.tokens_per_expert;
  out.pre_softmax = r.pre_softmax;
  out.sigmoid = r.sigmoid;
  out.scaling_factor = r.scaling_factor;
  out.probs = empty(r.probs.shape);
  upload(r.probs.data, out.probs);
  out.scores = empty(r.scores.shape);
  upload(r.scores.data, out.scores);
  return out;
}

namespace {

Routing routing_of(exec::Device& dev, const exec::RoutingResult& r) {
  Routing out;
  out.tokens = r.tokens;
  out.experts = r.experts;
  out.topk = r.topk;
  out.pre_softmax = r.pre_softmax;
  out.sigmoid = r.sigmoid;
  out.scaling_factor = r.scaling_factor;
  out.expert = r.expert;
  out.kept = r.kept;
  out.probs = Tensor(r.probs.shape, dev.to_host(r.probs));
  out.scores = Tensor(r.scores.shape, dev.to_host(r.scores));
  out.routed_per_expert = r.routed_per_expert;
  out.tokens_per_expert = r.tokens_per_expert;
  return out;
}

}  // namespace

void CpuDevice::router_backward(const DeviceTensor& logits, const exec::RoutingResult& routing,
                                const DeviceTensor& d_probs, double aux_coeff,
                                std::span<const int64_t> routed_per_expert, int64_t total_tokens, double d_aux,
                                const DeviceTensor& d_logits) {
  exec::check_router_backward(routing, logits.shape, d_probs.shape, d_logits.shape);
  if (aux_coeff != 0.0 && d_aux != 0.0)
    exec::check_aux_inputs("router_backward", routed_per_expert, routing.experts, total_tokens);
  const Routing r = routing_of(*this, routing);
  tandem::cpu::router_backward(view(logits), r, view(d_probs), AuxLossInputs{aux_coeff, routed_per_expert, total_tokens},
                               d_aux, view(d_logits));
}

double CpuDevice::router_aux_loss(const exec::RoutingResult& routing, double aux_coeff,
                                  std::span<const int64_t> routed_per_expert, int64_t total_tokens) {
  if (aux_coeff != 0.0) {
    exec::check_aux_inputs("router_aux_loss", routed_per_expert, routing.experts, total_tokens);
    exec::expect_shape("router_aux_loss", "scores", routing.scores.shape, {routing.tokens, routing.experts});
  }
  const Routing r = routing_of(*this, routing);
  return tandem::cpu::router_aux_loss(r, AuxLossInputs{aux_coeff, routed_per_expert, total_tokens});
}

void CpuDevice::permute_forward(const DeviceTensor& tokens, const exec::PermutationPlan& plan, const DeviceTensor& out) {
  exec::check_permute_forward(plan, tokens.shape, out.shape);
  tandem::cpu::permute_forward(view(tokens), plan_of(plan), view(out));
}

void CpuDevice::permute_backward(const DeviceTensor& d_out, const exec::PermutationPlan& plan,
                                 const DeviceTensor& d_tokens) {
  exec::check_permute_backward(plan, d_out.shape, d_tokens.shape);
  tandem::cpu::permute_backward(view(d_out), plan_of(plan), view(d_tokens));
}

void CpuDevice::unpermute_forward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                  const DeviceTensor& probs, const DeviceTensor& y) {
  exec::check_unpermute_forward(plan, expert_out.shape, probs.shape, y.shape);
  tandem::cpu::unpermute_forward(view(expert_out), plan_of(plan), view(probs), view(y));
}

void CpuDevice::unpermute_backward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                   const DeviceTensor& probs, const DeviceTensor& d_y, const DeviceTensor& d_expert_out,
                                   const DeviceTensor& d_probs) {
  exec::check_unpermute_backward(plan, expert_out.shape, probs.shape, d_y.shape, d_expert_out.shape, d_probs.shape);
  tandem::cpu::unpermute_backward(view(expert_out), plan_of(plan), view(probs), view(d_y), view(d_expert_out),
                                  view(d_probs));
}

void CpuDevice::gather_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) {
  const int64_t cols = exec::check_gather_rows(in.shape, index, out.shape).cols;
  const TensorView s = view(in), d = view(out);
  for (size_t j = 0; j < index.size(); ++j) {
    std::copy_n(s.ptr() + index[j] * cols, cols, d.ptr() + static_cast<int64_t>(j) * cols);
  }
}

void CpuDevice::scatter_add_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) {
  const int64_t cols = exec::check_scatter_add_rows(in.shape, index, out.shape).cols;
  const TensorView s = view(in), d = view(out);
  for (size_t j = 0; j < index.size(); ++j) {
    float* dst = d.ptr() + index[j] * cols;
    const float* src = s.ptr() + static_cast<int64_t>(j) * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] += src[c];
  }
}

void CpuDevice::adamw_step(const DeviceTensor& param, const DeviceTensor& grad, const DeviceTensor& exp_avg,
                           const DeviceTensor& exp_avg_sq, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int64_t step, float grad_scale) {
  exec::check_adamw(param.shape, grad.shape, exp_avg.shape, exp_avg_sq.shape, step);
  const kmath::AdamWStep s = kmath::adamw_step_constants(lr, beta1, beta2, eps, weight_decay, step);
  tandem::cpu::adamw_step(view(param).data, view(grad).data, view(exp_avg).data, view(exp_avg_sq).data, s, grad_scale);
}

}  // namespace tandem::cpu
