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

void same_numel(const DeviceTensor& a, const DeviceTensor& b, const char* what) {
  TANDEM_CHECK_MSG(a.numel() == b.numel(), what << ": " << a.numel() << " vs " << b.numel() << " elements");
}

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
  same_numel(src, dst, "copy");
  const TensorView s = view(src), d = view(dst);
  std::memmove(d.ptr(), s.ptr(), static_cast<size_t>(s.numel()) * sizeof(float));
}

void CpuDevice::add(const DeviceTensor& a, const DeviceTensor& b, const DeviceTensor& out) {
  same_numel(a, b, "add");
  same_numel(a, out, "add");
  const TensorView x = view(a), y = view(b), z = view(out);
  for (int64_t i = 0; i < z.numel(); ++i) z.data[i] = x.data[i] + y.data[i];
}

void CpuDevice::axpy(float alpha, const DeviceTensor& x, const DeviceTensor& y) {
  same_numel(x, y, "axpy");
  const TensorView a = view(x), b = view(y);
  for (int64_t i = 0; i < b.numel(); ++i) b.data[i] += alpha * a.data[i];
}

void CpuDevice::scale(const DeviceTensor& x, float factor) { scale_in_place(view(x).data, factor); }

void CpuDevice::add_row_vector(const DeviceTensor& x, const DeviceTensor& bias) {
  const TensorView v = view(x), b = view(bias);
  const int64_t cols = b.numel();
  TANDEM_CHECK(cols > 0 && v.numel() % cols == 0);
  for (int64_t i = 0; i < v.numel(); ++i) v.data[i] += b.data[i % cols];
}

void CpuDevice::column_sums_accumulate(const DeviceTensor& x, const DeviceTensor& out) {
  const TensorView v = view(x), o = view(out);
  const int64_t cols = o.numel();
  TANDEM_CHECK(cols > 0 && v.numel() % cols == 0);
  std::vector<double> acc(static_cast<size_t>(cols), 0.0);
  for (int64_t i = 0; i < v.numel(); ++i) acc[static_cast<size_t>(i % cols)] += v.data[i];
  for (int64_t c = 0; c < cols; ++c) o.data[c] += static_cast<float>(acc[static_cast<size_t>(c)]);
}

void CpuDevice::copy_columns(const DeviceTensor& src, int64_t begin, const DeviceTensor& dst) {
  TANDEM_CHECK(src.shape.size() == 2 && dst.shape.size() == 2 && src.dim(0) == dst.dim(0));
  const int64_t rows = src.dim(0), cols = src.dim(1), w = dst.dim(1);
  TANDEM_CHECK(begin >= 0 && begin + w <= cols);
  const TensorView s = view(src), d = view(dst);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(s.ptr() + r * cols + begin, w, d.ptr() + r * w);
}

void CpuDevice::dropout(const DeviceTensor& x, float p, uint64_t key, std::span<const int64_t> row_ids) {
  TANDEM_CHECK(!x.shape.empty() && static_cast<int64_t>(row_ids.size()) == x.dim(0));
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
  tandem::cpu::gemm_forward(view(x), view(w), view(bias), layout_of(layout), view(y));
}

void CpuDevice::gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, exec::WeightLayout layout,
                                const DeviceTensor& dx) {
  tandem::cpu::gemm_grad_input(view(dy), view(w), layout_of(layout), view(dx));
}

void CpuDevice::gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy, exec::WeightLayout layout,
                                 const DeviceTensor& dw, const DeviceTensor& dbias) {
  tandem::cpu::gemm_grad_weight(view(x), view(dy), layout_of(layout), view(dw), view(dbias));
}

void CpuDevice::grouped_gemm_forward(const DeviceTensor& x, const DeviceTensor& w, std::span<const int64_t> counts,
                                     const DeviceTensor& y) {
  tandem::cpu::grouped_gemm_forward(view(x), view(w), counts, WeightLayout::InOut, view(y));
}

void CpuDevice::grouped_gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, std::span<const int64_t> counts,
                                        const DeviceTensor& dx) {
  tandem::cpu::grouped_gemm_grad_input(view(dy), view(w), counts, WeightLayout::InOut, view(dx));
}

void CpuDevice::grouped_gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy,
                                         std::span<const int64_t> counts, const DeviceTensor& dw) {
  tandem::cpu::grouped_gemm_grad_weight(view(x), view(dy), counts, WeightLayout::InOut, view(dw));
}

void CpuDevice::embedding_forward(std::span<const int32_t> ids, const DeviceTensor& table, int64_t vocab_start,
                                  const DeviceTensor& out) {
  tandem::cpu::embedding_forward(ids, view(table), vocab_start, view(out));
}

void CpuDevice::embedding_backward(std::span<const int32_t> ids, const DeviceTensor& d_out, int64_t vocab_start,
                                   const DeviceTensor& d_table) {
  tandem::cpu::embedding_backward(ids, view(d_out), vocab_start, view(d_table));
}

void CpuDevice::norm_forward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                             const DeviceTensor& beta, float eps, const DeviceTensor& y, const DeviceTensor& mean,
                             const DeviceTensor& rstd) {
  if (kind == exec::NormKind::LayerNorm) layernorm_forward(view(x), view(gamma), view(beta), eps, view(y), view(mean), view(rstd));
  else rmsnorm_forward(view(x), view(gamma), eps, view(y), view(rstd));
}

void CpuDevice::norm_backward(exec::NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma,
                              const DeviceTensor& mean, const DeviceTensor& rstd, const DeviceTensor& dy,
                              const DeviceTensor& dx, const DeviceTensor& dgamma, const DeviceTensor& dbeta) {
  if (kind == exec::NormKind::LayerNorm)
    layernorm_backward(view(x), view(gamma), view(mean), view(rstd), view(dy), view(dx), view(dgamma), view(dbeta));
  else rmsnorm_backward(view(x), view(gamma), view(rstd), view(dy), view(dx), view(dgamma));
}

void CpuDevice::activation_forward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& y) {
  if (kind == exec::ActivationKind::SwiGlu) return swiglu_forward(view(x), view(y));
  gelu_forward(view(x), kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf, view(y));
}

void CpuDevice::activation_backward(exec::ActivationKind kind, const DeviceTensor& x, const DeviceTensor& dy,
                                    const DeviceTensor& dx) {
  if (kind == exec::ActivationKind::SwiGlu) return swiglu_backward(view(x), view(dy), view(dx));
  gelu_backward(view(x), view(dy), kind == exec::ActivationKind::GeluTanh ? GeluForm::Tanh : GeluForm::Erf, view(dx));
}

void CpuDevice::rope_forward(const DeviceTensor& x, std::span<const int32_t> positions, double base,
                             const DeviceTensor& y) {
  tandem::cpu::rope_forward(view(x), RopeOptions{0, base, positions}, view(y));
}

void CpuDevice::rope_backward(const DeviceTensor& dy, std::span<const int32_t> positions, double base,
                              const DeviceTensor& dx) {
  tandem::cpu::rope_backward(view(dy), RopeOptions{0, base, positions}, view(dx));
}

void CpuDevice::attention_forward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                  const exec::AttentionArgs& args, const DeviceTensor& out, const DeviceTensor& lse) {
  if (args.dropout > 0.0f)
    return tandem::cpu::attention_forward_dropout(view(q), view(k), view(v), options_of(args), dropout_of(args),
                                                  view(out), view(lse));
  tandem::cpu::attention_forward(view(q), view(k), view(v), options_of(args), view(out), view(lse));
}

void CpuDevice::attention_backward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                   const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                   const exec::AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                                   const DeviceTensor& dv) {
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
  tandem::cpu::attention_backward_block(view(q), view(k), view(v), view(out), view(lse), view(d_out), options_of(args),
                                        view(dq), view(dk), view(dv), dropout_of(args));
}

void CpuDevice::attention_merge(const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& out_blk,
                                const DeviceTensor& lse_blk, int64_t row0) {
  TANDEM_CHECK(out.shape.size() == 4 && out_blk.shape.size() == 4);
  const int64_t s_q = out.dim(0), b = out.dim(1), hq = out.dim(2), d = out.dim(3), s_blk = out_blk.dim(0);
  TANDEM_CHECK(row0 >= 0 && row0 + s_blk <= s_q && lse.numel() == b * hq * s_q && lse_blk.numel() == b * hq * s_blk);
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
  tandem::cpu::split_qkv(view(mixed), groups, qpg, d, view(q), view(k), view(v));
}

void CpuDevice::merge_qkv(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t groups,
                          int64_t qpg, int64_t d, const DeviceTensor& mixed) {
  tandem::cpu::merge_qkv(view(q), view(k), view(v), groups, qpg, d, view(mixed));
}

void CpuDevice::cross_entropy_partials(const DeviceTensor& logits, std::span<const int32_t> targets,
                                       int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                       const DeviceTensor& target_logit) {
  TANDEM_CHECK(logits.shape.size() == 2 && static_cast<int64_t>(targets.size()) == logits.dim(0));
  const int64_t tokens = logits.dim(0), v = logits.dim(1);
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
  const TensorView s = view(sum_exp), l = view(local_max), g = view(global_max);
  for (int64_t t = 0; t < s.numel(); ++t)
    s.data[t] = static_cast<float>(s.data[t] * std::exp(static_cast<double>(l.data[t]) - g.data[t]));
}

void CpuDevice::cross_entropy_loss(const DeviceTensor& max, const DeviceTensor& sum_exp,
                                   const DeviceTensor& target_logit, const DeviceTensor& loss) {
  const TensorView m = view(max), s = view(sum_exp), tl = view(target_logit), out = view(loss);
  for (int64_t t = 0; t < out.numel(); ++t)
    out.data[t] = static_cast<float>(std::log(static_cast<double>(s.data[t])) + m.data[t] - tl.data[t]);
}

void CpuDevice::cross_entropy_backward(const DeviceTensor& logits, std::span<const int32_t> targets,
                                       int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                       const DeviceTensor& d_loss, const DeviceTensor& d_logits) {
  tandem::cpu::cross_entropy_backward(view(logits), targets, vocab_start, view(max), view(sum_exp), view(d_loss),
                                      view(d_logits));
}

exec::RoutingResult CpuDevice::router_forward(const DeviceTensor& logits, const exec::RouterArgs& args) {
  const Routing r = tandem::cpu::router_forward(view(logits), RouterOptions{args.topk, args.pre_softmax,
                                                                            args.capacity_factor});
  exec::RoutingResult out;
  out.tokens = r.tokens;
  out.experts = r.experts;
  out.topk = r.topk;
  out.expert = r.expert;
  out.kept = r.kept;
  out.routed_per_expert = r.routed_per_expert;
  out.tokens_per_expert = r.tokens_per_expert;
  out.pre_softmax = r.pre_softmax;
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
  const Routing r = routing_of(*this, routing);
  tandem::cpu::router_backward(view(logits), r, view(d_probs), AuxLossInputs{aux_coeff, routed_per_expert, total_tokens},
                               d_aux, view(d_logits));
}

double CpuDevice::router_aux_loss(const exec::RoutingResult& routing, double aux_coeff,
                                  std::span<const int64_t> routed_per_expert, int64_t total_tokens) {
  const Routing r = routing_of(*this, routing);
  return tandem::cpu::router_aux_loss(r, AuxLossInputs{aux_coeff, routed_per_expert, total_tokens});
}

void CpuDevice::permute_forward(const DeviceTensor& tokens, const exec::PermutationPlan& plan, const DeviceTensor& out) {
  tandem::cpu::permute_forward(view(tokens), plan_of(plan), view(out));
}

void CpuDevice::permute_backward(const DeviceTensor& d_out, const exec::PermutationPlan& plan,
                                 const DeviceTensor& d_tokens) {
  tandem::cpu::permute_backward(view(d_out), plan_of(plan), view(d_tokens));
}

void CpuDevice::unpermute_forward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                  const DeviceTensor& probs, const DeviceTensor& y) {
  tandem::cpu::unpermute_forward(view(expert_out), plan_of(plan), view(probs), view(y));
}

void CpuDevice::unpermute_backward(const DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                                   const DeviceTensor& probs, const DeviceTensor& d_y, const DeviceTensor& d_expert_out,
                                   const DeviceTensor& d_probs) {
  tandem::cpu::unpermute_backward(view(expert_out), plan_of(plan), view(probs), view(d_y), view(d_expert_out),
                                  view(d_probs));
}

void CpuDevice::gather_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) {
  const int64_t cols = in.numel() / std::max<int64_t>(1, in.dim(0));
  TANDEM_CHECK(out.numel() == static_cast<int64_t>(index.size()) * cols);
  const TensorView s = view(in), d = view(out);
  for (size_t j = 0; j < index.size(); ++j) {
    TANDEM_CHECK(index[j] >= 0 && index[j] < in.dim(0));
    std::copy_n(s.ptr() + index[j] * cols, cols, d.ptr() + static_cast<int64_t>(j) * cols);
  }
}

void CpuDevice::scatter_add_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) {
  const int64_t cols = out.numel() / std::max<int64_t>(1, out.dim(0));
  TANDEM_CHECK(in.numel() == static_cast<int64_t>(index.size()) * cols);
  const TensorView s = view(in), d = view(out);
  for (size_t j = 0; j < index.size(); ++j) {
    TANDEM_CHECK(index[j] >= 0 && index[j] < out.dim(0));
    float* dst = d.ptr() + index[j] * cols;
    const float* src = s.ptr() + static_cast<int64_t>(j) * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] += src[c];
  }
}

void CpuDevice::adamw_step(const DeviceTensor& param, const DeviceTensor& grad, const DeviceTensor& exp_avg,
                           const DeviceTensor& exp_avg_sq, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int64_t step, float grad_scale) {
  const kmath::AdamWStep s = kmath::adamw_step_constants(lr, beta1, beta2, eps, weight_decay, step);
  tandem::cpu::adamw_step(view(param).data, view(grad).data, view(exp_avg).data, view(exp_avg_sq).data, s, grad_scale);
}

}  // namespace tandem::cpu
