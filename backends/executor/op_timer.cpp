// Measured per-op times of a job's compute instructions (op_timer.h).
#include "backends/executor/op_timer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <numeric>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "backends/executor/init_rng.h"
#include "core/check.h"
#include "core/parallel_grid.h"
#include "models/accounting.h"
#include "backends/executor/site_handlers.h"
#include "program/model_layout.h"

namespace tandem::exec {

// ---- collecting the distinct shapes --------------------------------------------------------

std::string OpShape::describe() const {
  std::ostringstream os;
  os << to_string(kind) << " " << to_string(site) << (backward ? " (bwd)" : "") << " m=" << m << " n=" << n << " k=" << k
     << " batch=" << batch;
  if (step >= 0) os << " step=" << step;
  return os.str();
}

namespace {

bool is_gemm_kind(OpKind k) { return k == OpKind::Gemm || k == OpKind::GemmGradInput || k == OpKind::GemmGradWeight; }

using ShapeKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int, int, bool, int>;

}  // namespace

std::vector<OpShape> collect_op_shapes(const Job& job, const std::vector<RankProgram>& programs) {
  const bool fp8 = job.training.fp8_format != Fp8Format::None;
  std::vector<OpShape> out;
  std::map<ShapeKey, size_t> index;
  for (const RankProgram& p : programs)
    for (const Instruction& ins : p.instructions) {
      if (!is_compute(ins.kind)) continue;
      const bool backward = !(ins.phase == Phase::Forward || ins.recompute);
      // Attention ring steps: the diagonal (0) and off-diagonal (> 0) blocks are different work.
      const int step_class = ins.ring_step < 0 ? -1 : (ins.ring_step == 0 ? 0 : 1);
      const bool attention = ins.kind == OpKind::Attention || ins.kind == OpKind::AttentionGrad;
      const ShapeKey key{static_cast<int>(ins.kind), ins.m, ins.n, ins.k, ins.batch, static_cast<int>(ins.dtype),
                         static_cast<int>(ins.site), backward, attention ? step_class : -1};
      const auto [it, fresh] = index.emplace(key, out.size());
      if (!fresh) {
        ++out[it->second].count;
        continue;
      }
      OpShape s;
      s.kind = ins.kind;
      s.m = ins.m;
      s.n = ins.n;
      s.k = ins.k;
      s.batch = std::max<int64_t>(ins.batch, 1);
      s.dtype = ins.dtype;
      s.site = ins.site;
      s.backward = backward;
      s.step = attention ? ins.ring_step : int16_t{-1};
      s.count = 1;
      s.flops = ins.flops;
      s.bytes = ins.bytes;
      s.profile_dtype = fp8 && ins.dtype != DType::FP32 && is_gemm_kind(ins.kind) ? "fp8" : to_string(ins.dtype);
      out.push_back(std::move(s));
    }
  return out;
}

std::vector<RankProgram> representative_programs(const Job& job) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  std::vector<RankProgram> programs;
  for (int64_t rank : class_representatives(job, grid)) programs.push_back(lower_rank(job, grid, schedule, rank));
  return programs;
}

// ---- the device calls of each instruction --------------------------------------------------

namespace {

// What to call for one shape: a closure over synthesised tensors, or why there is none.
struct Prepared {
  std::string calls;
  std::function<void()> run;
  std::string skip;
};

Prepared skip(std::string why) { return Prepared{"", {}, std::move(why)}; }

std::string dims_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
  return t + "]";
}

bool is_expert_gemm(Site site) { return site == Site::ExpertFc1 || site == Site::ExpertFc2; }
Prepared not_executed(const OpShape& op) {
  return skip("label '" + std::string(to_string(op.site)) + "' is not executed by the real backends");
}

// Synthesises the tensors of one op and the calls the ModelRunner makes for it. The job's
// settings are the trainer's (trainer.cpp settings_for): norm kind, activation, RoPE base,
// dropout, router.
class CallBuilder {
 public:
  CallBuilder(Device& device, const Job& job)
      : dev_(device), job_(job), grid_(ParallelGrid::from_job(job)), d_(lower::dims_for_job(job, grid_)) {
    const ModelConfig& m = job.model;
    norm_ = m.normalization == Normalization::LayerNorm ? NormKind::LayerNorm : NormKind::RMSNorm;
    eps_ = static_cast<float>(m.norm_epsilon);
    act_ = m.swiglu ? ActivationKind::SwiGlu : (m.add_bias_linear ? ActivationKind::GeluTanh : ActivationKind::GeluErf);
    router_.topk = m.moe_router_topk;
    router_.capacity_factor = m.moe_expert_capacity_factor;
  }

  Prepared build(const OpShape& op);

 private:
  DeviceTensor random(Shape shape, float scale = 0.5f);
  DeviceTensor constant(Shape shape, float value);
  std::vector<int32_t> ids(int64_t rows, int64_t range) const;
  std::vector<int32_t> positions() const;   // [s / CP] positions of the first CP rank's rows
  std::vector<int64_t> samples() const;     // [b]

  Prepared norm(const OpShape& op);
  Prepared gemm(const OpShape& op);
  Prepared grouped_gemm(const OpShape& op);
  Prepared attention(const OpShape& op);
  Prepared cp_attention_forward(const OpShape& op);
  Prepared cp_attention_backward(const OpShape& op);
  AttentionArgs attention_args(const std::vector<int32_t>* q_pos, const std::vector<int32_t>* kv_pos,
                               const std::vector<int64_t>* samples) const;
  Prepared rope(const OpShape& op);
  Prepared activation(const OpShape& op);
  Prepared elementwise(const OpShape& op);
  Prepared residual(const OpShape& op);
  Prepared embedding(const OpShape& op);
  Prepared cross_entropy(const OpShape& op);
  Prepared router(const OpShape& op);
  Prepared permute(const OpShape& op);
  Prepared optimizer(const OpShape& op);

  Device& dev_;
  const Job& job_;
  ParallelGrid grid_;
  lower::Dims d_;
  NormKind norm_ = NormKind::RMSNorm;
  float eps_ = 1e-5f;
  ActivationKind act_ = ActivationKind::SwiGlu;
  RouterArgs router_;
  uint64_t rng_ = 0x7A3D0E11u;
};

DeviceTensor CallBuilder::random(Shape shape, float scale) {
  DeviceTensor t = dev_.empty(std::move(shape));
  std::vector<float> host(static_cast<size_t>(t.numel()));
  for (float& x : host) x = scale * (static_cast<float>(splitmix64(rng_) >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f);
  dev_.upload(host, t);
  return t;
}

DeviceTensor CallBuilder::constant(Shape shape, float value) {
  DeviceTensor t = dev_.empty(std::move(shape));
  dev_.fill(t, value);
  return t;
}

std::vector<int32_t> CallBuilder::ids(int64_t rows, int64_t range) const {
  std::vector<int32_t> v(static_cast<size_t>(rows));
  uint64_t state = 12345;
  for (int32_t& x : v) x = static_cast<int32_t>(splitmix64(state) % static_cast<uint64_t>(std::max<int64_t>(range, 1)));
  return v;
}

std::vector<int32_t> CallBuilder::positions() const {
  std::vector<int32_t> p(static_cast<size_t>(d_.s / d_.cp));
  std::iota(p.begin(), p.end(), 0);
  return p;
}

std::vector<int64_t> CallBuilder::samples() const {
  std::vector<int64_t> v(static_cast<size_t>(d_.b));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The device calls of one shape, by the handler the ModelRunner runs for it (site_handlers.h).
Prepared CallBuilder::build(const OpShape& op) {
  if (op.m <= 0 || op.n <= 0) return skip("empty shape");
  switch (handler_of(op.kind, op.site)) {
    case Handler::None:
      return is_compute(op.kind) ? not_executed(op) : skip("not a compute kind");
    case Handler::Norm:
    case Handler::NormGrad: return norm(op);
    case Handler::Gemm:
    case Handler::GemmGradInput:
    case Handler::GemmGradWeight: return op.batch > 1 || is_expert_gemm(op.site) ? grouped_gemm(op) : gemm(op);
    case Handler::Attention:
    case Handler::AttentionGrad: return attention(op);
    case Handler::Rope:
    case Handler::RopeGrad: return rope(op);
    case Handler::Activation:
    case Handler::ActivationGrad: return activation(op);
    case Handler::Residual:
    case Handler::ResidualGrad:
    case Handler::EmbeddingDropout:
    case Handler::LossReduce:
    case Handler::MirrorAdd:
    case Handler::MoeAdd:
    case Handler::MlaAdd:
    case Handler::MtpAdd: return elementwise(op);
    case Handler::Embedding:
    case Handler::EmbeddingGrad: return embedding(op);
    case Handler::CrossEntropy:
    case Handler::CrossEntropyGrad: return cross_entropy(op);
    case Handler::Router:
    case Handler::RouterGrad: return router(op);
    case Handler::Permute:
    case Handler::PermuteGrad:
    case Handler::Unpermute:
    case Handler::UnpermuteGrad: return permute(op);
    case Handler::OptimizerStep: return optimizer(op);
    case Handler::CeCollective:
    case Handler::TpCollective:
    case Handler::PpSend:
    case Handler::PpRecv:
    case Handler::PpGather:
    case Handler::CpSend:
    case Handler::CpRecv:
    case Handler::DpGrad:
    case Handler::SpNormGrad:
    case Handler::EmbeddingGradSync:
    case Handler::GradNorm:
    case Handler::ParamGather:
    case Handler::MirrorSend:
    case Handler::MirrorRecv:
    case Handler::RouterCounts:
    case Handler::MoeCollective:
    case Handler::ExpertBias: return skip("not a compute kind");
  }
  return skip("not a compute kind");
}

// Norm over [m rows, n = h]: stats [m]; the backward's stats come from one forward call.
Prepared CallBuilder::norm(const OpShape& op) {
  const bool ln = norm_ == NormKind::LayerNorm;
  DeviceTensor x = random({op.m, op.n}), gamma = constant({op.n}, 1.0f);
  DeviceTensor beta = ln ? constant({op.n}, 0.0f) : DeviceTensor{};
  DeviceTensor y = dev_.empty({op.m, op.n}), mean = ln ? dev_.empty({op.m}) : DeviceTensor{}, rstd = dev_.empty({op.m});
  const NormKind kind = norm_;
  const float eps = eps_;
  Device& dev = dev_;
  if (op.kind == OpKind::Norm)
    return {"norm_forward x" + dims_text(x.shape), [=, &dev] { dev.norm_forward(kind, x, gamma, beta, eps, y, mean, rstd); }, ""};
  dev_.norm_forward(kind, x, gamma, beta, eps, y, mean, rstd);
  DeviceTensor dy = random({op.m, op.n}), dx = dev_.empty({op.m, op.n});
  DeviceTensor dgamma = constant({op.n}, 0.0f), dbeta = ln ? constant({op.n}, 0.0f) : DeviceTensor{};
  return {"norm_backward x" + dims_text(x.shape),
          [=, &dev] { dev.norm_backward(kind, x, gamma, mean, rstd, dy, dx, dgamma, dbeta); }, ""};
}

// Dense GEMMs: Gemm y [m, n] = x [m, k] W; GemmGradInput dx [m, k] = dy [m, n] W^T; GemmGradWeight
// dW [k, n] += x^T dy. W is [k, n] (InOut), or [n, k] for the output layer (the embedding's layout).
Prepared CallBuilder::gemm(const OpShape& op) {
  const WeightLayout layout = op.site == Site::Output ? WeightLayout::OutIn : WeightLayout::InOut;
  const Shape wshape = layout == WeightLayout::OutIn ? Shape{op.n, op.k} : Shape{op.k, op.n};
  const bool with_bias = (op.site == Site::Qkv && (d_.qkv_bias || d_.bias)) ||
                         ((op.site == Site::Fc1 || op.site == Site::SharedFc1) && d_.bias);
  Device& dev = dev_;
  DeviceTensor w = random(wshape, 0.05f);
  const std::string shapes = dims_text({op.m, op.k}) + "x" + dims_text(wshape);
  if (op.kind == OpKind::Gemm) {
    DeviceTensor x = random({op.m, op.k}), y = dev_.empty({op.m, op.n});
    DeviceTensor bias = with_bias ? random({op.n}) : DeviceTensor{};
    // Without RoPE the qkv handler also splits the heads.
    const bool split = op.site == Site::Qkv && !d_.rope && op.n == (d_.heads + 2 * d_.kv_heads) * d_.d;
    const int64_t g = d_.kv_heads, qpg = d_.kv_heads > 0 ? d_.heads / d_.kv_heads : 1, hd = d_.d;
    DeviceTensor q = split ? dev_.empty({op.m, d_.heads * hd}) : DeviceTensor{};
    DeviceTensor k = split ? dev_.empty({op.m, g * hd}) : DeviceTensor{}, v = split ? dev_.empty({op.m, g * hd}) : DeviceTensor{};
    return {"gemm_forward " + shapes + (split ? " + split_qkv" : ""), [=, &dev] {
              dev.gemm_forward(x, w, bias, layout, y);
              if (split) dev.split_qkv(y, g, qpg, hd, q, k, v);
            }, ""};
  }
  if (op.kind == OpKind::GemmGradInput) {
    DeviceTensor dy = random({op.m, op.n}), dx = dev_.empty({op.m, op.k});
    return {"gemm_grad_input " + dims_text(dy.shape) + "x" + dims_text(wshape) + "^T",
            [=, &dev] { dev.gemm_grad_input(dy, w, layout, dx); }, ""};
  }
  DeviceTensor x = random({op.m, op.k}), dy = random({op.m, op.n}), dw = constant(wshape, 0.0f);
  DeviceTensor dbias = with_bias ? constant({op.n}, 0.0f) : DeviceTensor{};
  return {"gemm_grad_weight " + dims_text(x.shape) + "^T x" + dims_text(dy.shape),
          [=, &dev] { dev.gemm_grad_weight(x, dy, layout, dw, dbias); }, ""};
}

// Expert GEMMs: `batch` local experts of m rows each, W [batch, k, n].
Prepared CallBuilder::grouped_gemm(const OpShape& op) {
  if (!is_expert_gemm(op.site))
    return skip("grouped GEMM label '" + std::string(to_string(op.site)) + "' is not executed by the real backends");
  const int64_t e = op.batch, rows = op.m * e;
  std::vector<int64_t> counts(static_cast<size_t>(e), op.m);
  DeviceTensor w = random({e, op.k, op.n}, 0.05f);
  Device& dev = dev_;
  const std::string tail = " " + std::to_string(e) + " experts x " + dims_text({op.m, op.k}) + "x" +
                           dims_text({op.k, op.n});
  if (op.kind == OpKind::Gemm) {
    DeviceTensor x = random({rows, op.k}), y = dev_.empty({rows, op.n});
    return {"grouped_gemm_forward" + tail, [=, &dev] { dev.grouped_gemm_forward(x, w, counts, y); }, ""};
  }
  if (op.kind == OpKind::GemmGradInput) {
    DeviceTensor dy = random({rows, op.n}), dx = dev_.empty({rows, op.k});
    return {"grouped_gemm_grad_input" + tail, [=, &dev] { dev.grouped_gemm_grad_input(dy, w, counts, dx); }, ""};
  }
  DeviceTensor x = random({rows, op.k}), dy = random({rows, op.n}), dw = constant({e, op.k, op.n}, 0.0f);
  return {"grouped_gemm_grad_weight" + tail, [=, &dev] { dev.grouped_gemm_grad_weight(x, dy, counts, dw); }, ""};
}

// The runner's attention arguments: positions (empty spans: 0..s-1) and, with attention
// dropout, a mask key and the samples. The vectors must outlive the calls (closures keep them).
AttentionArgs CallBuilder::attention_args(const std::vector<int32_t>* q_pos, const std::vector<int32_t>* kv_pos,
                                          const std::vector<int64_t>* smp) const {
  AttentionArgs args;
  if (q_pos != nullptr) args.q_positions = *q_pos;
  if (kv_pos != nullptr) args.kv_positions = *kv_pos;
  if (job_.training.attention_dropout > 0) {
    args.dropout = static_cast<float>(job_.training.attention_dropout);
    args.dropout_key = 0x5EEDu;
    args.samples = *smp;
  }
  return args;
}

// Attention core without CP: q [m, b, hq, d], k/v [n, b, hkv, d]; b x hq = batch.
Prepared CallBuilder::attention(const OpShape& op) {
  if (d_.mla) return skip("multi-latent attention's padded core and RoPE channels are not timed yet");
  const int64_t s_local = d_.s / d_.cp;
  if (op.batch != d_.b * d_.heads || op.k != d_.d || op.m != s_local || op.n != (op.step >= 0 ? s_local : d_.s))
    return skip("shape does not match the job's micro-batch x heads and sequence");
  if (op.step >= 0) return op.kind == OpKind::Attention ? cp_attention_forward(op) : cp_attention_backward(op);
  const int64_t b = d_.b, hq = d_.heads, hkv = d_.kv_heads, hd = d_.d;
  DeviceTensor q = random({op.m, b, hq, hd}), k = random({op.n, b, hkv, hd}), v = random({op.n, b, hkv, hd});
  DeviceTensor out = dev_.empty(q.shape), lse = dev_.empty({b, hq, op.m});
  auto smp = std::make_shared<std::vector<int64_t>>(samples());
  const AttentionArgs args = attention_args(nullptr, nullptr, smp.get());
  Device& dev = dev_;
  const std::string shapes = "q" + dims_text(q.shape) + " kv" + dims_text(k.shape);
  if (op.kind == OpKind::Attention)
    return {"attention_forward " + shapes, [=, &dev] {
              (void)smp;
              dev.attention_forward(q, k, v, args, out, lse);
            }, ""};
  dev_.attention_forward(q, k, v, args, out, lse);
  DeviceTensor d_out = random(q.shape), dq = dev_.empty(q.shape), dk = dev_.empty(k.shape), dv = dev_.empty(v.shape);
  const bool merge = !d_.rope;   // without RoPE the attention backward merges dq, dk, dv
  const int64_t n = op.m * b;
  DeviceTensor mixed = merge ? dev_.empty({n, (hq + 2 * hkv) * hd}) : DeviceTensor{};
  return {"attention_backward " + shapes + (merge ? " + merge_qkv" : ""), [=, &dev] {
            (void)smp;
            dev.attention_backward(q, k, v, out, lse, d_out, args, dq, dk, dv);
            if (merge)
              dev.merge_qkv(dq.reshaped({n, hq * hd}), dk.reshaped({n, hkv * hd}), dv.reshaped({n, hkv * hd}), hkv,
                            hq / hkv, hd, mixed);
          }, ""};
}

// Context-parallel ring steps as CP rank 0 runs them (runner_attention_cp.cpp): rank 0 holds
// sequence chunks 0 and 2CP-1 (c = s / 2CP positions each). Step 0 is its causal diagonal block;
// at step j > 0 it holds the block of rank CP - j, which only its second half (chunk 2CP-1)
// sees, fully: s/2CP queries x s/CP keys. (Ranks r > 0 compute s/CP queries x s/2CP keys at
// some steps: the same work.)
struct CpStepPlan {
  int64_t q_begin = 0;                    // first local query row of the block
  std::shared_ptr<std::vector<int32_t>> q_pos, kv_pos;   // [rows] of the block, [s/CP]
};

CpStepPlan cp_step_plan(int64_t cp, int64_t s, int64_t step) {
  auto chunks = [&](int64_t rank) {
    const int64_t c = s / (2 * cp);
    auto pos = std::make_shared<std::vector<int32_t>>();
    for (int64_t chunk : {rank, 2 * cp - 1 - rank})
      for (int64_t i = 0; i < c; ++i) pos->push_back(static_cast<int32_t>(chunk * c + i));
    return pos;
  };
  CpStepPlan p;
  const int64_t s_local = s / cp, src = (cp - step % cp) % cp;
  p.q_begin = step == 0 ? 0 : s_local / 2;
  auto q_all = chunks(0);
  p.q_pos = std::make_shared<std::vector<int32_t>>(q_all->begin() + p.q_begin, q_all->end());
  p.kv_pos = chunks(src);
  return p;
}

// Forward step: attention of the block's queries, merged into the running output (step > 0).
Prepared CallBuilder::cp_attention_forward(const OpShape& op) {
  const int64_t b = d_.b, hq = d_.heads, hkv = d_.kv_heads, hd = d_.d, s_local = op.m;
  const CpStepPlan plan = cp_step_plan(d_.cp, d_.s, op.step);
  const int64_t rows = s_local - plan.q_begin;
  auto smp = std::make_shared<std::vector<int64_t>>(samples());
  const AttentionArgs args = attention_args(plan.q_pos.get(), plan.kv_pos.get(), smp.get());
  DeviceTensor q = random({s_local, b, hq, hd}), k = random({s_local, b, hkv, hd}), v = random({s_local, b, hkv, hd});
  DeviceTensor out = dev_.empty({rows, b, hq, hd}), lse = dev_.empty({b, hq, rows});
  DeviceTensor ctx = random(q.shape), ctx_lse = random({b, hq, s_local});
  const int64_t q_begin = plan.q_begin;
  const bool merge = op.step > 0;
  Device& dev = dev_;
  return {"attention_forward q" + dims_text(out.shape) + " kv" + dims_text(k.shape) + (merge ? " + attention_merge" : ""),
          [=, &dev] {
            (void)plan;
            (void)smp;
            dev.attention_forward(q.rows(q_begin, s_local), k, v, args, out, lse);
            if (merge) dev.attention_merge(ctx, ctx_lse, out, lse, q_begin);
          }, ""};
}

// Backward step: the block's gradients, dQ and the travelling dK/dV accumulated (step 0 also
// stages K, V and zeroed dK, dV into the travelling buffer and zeroes dQ).
Prepared CallBuilder::cp_attention_backward(const OpShape& op) {
  const int64_t b = d_.b, hq = d_.heads, hkv = d_.kv_heads, hd = d_.d, s_local = op.m;
  const CpStepPlan plan = cp_step_plan(d_.cp, d_.s, op.step);
  const int64_t rows = s_local - plan.q_begin, q_begin = plan.q_begin;
  auto smp = std::make_shared<std::vector<int64_t>>(samples());
  const AttentionArgs args = attention_args(plan.q_pos.get(), plan.kv_pos.get(), smp.get());
  const Shape kv_shape{s_local, b, hkv, hd};
  const int64_t kv_n = numel_of(kv_shape);
  DeviceTensor q = random({s_local, b, hq, hd}), kv = random(kv_shape), travel = random({4 * kv_n});
  DeviceTensor ctx = random(q.shape), d_ctx = random(q.shape), ctx_lse = random({b * hq, s_local}, 0.1f);
  DeviceTensor lse = dev_.empty({b * hq, rows}), dq_all = dev_.empty(q.shape);
  DeviceTensor dq = dev_.empty({rows, b, hq, hd}), dks = dev_.empty(kv_shape), dvs = dev_.empty(kv_shape);
  const bool first = op.step == 0;
  Device& dev = dev_;
  return {std::string(first ? "copy K, V + " : "") + "attention_backward_block q" + dims_text(dq.shape) + " kv" +
              dims_text(kv_shape) + " + 3 axpy",
          [=, &dev] {
            (void)plan;
            (void)smp;
            const DeviceTensor k = travel.slice(0, kv_shape), v = travel.slice(kv_n, kv_shape);
            const DeviceTensor dk = travel.slice(2 * kv_n, kv_shape), dv = travel.slice(3 * kv_n, kv_shape);
            if (first) {
              dev.copy(kv, k);
              dev.copy(kv, v);
              dev.fill(travel.slice(2 * kv_n, {2 * kv_n}), 0.0f);
              dev.fill(dq_all, 0.0f);
            }
            dev.copy_columns(ctx_lse, q_begin, lse);
            dev.attention_backward_block(q.rows(q_begin, s_local), k, v, ctx.rows(q_begin, s_local),
                                         lse.reshaped({b, hq, rows}), d_ctx.rows(q_begin, s_local), args, dq, dks, dvs);
            dev.axpy(1.0f, dq, dq_all.rows(q_begin, s_local));
            dev.axpy(1.0f, dks, dk);
            dev.axpy(1.0f, dvs, dv);
          }, ""};
}

// RoPE over m = tokens rows of (hq + hkv) heads x d: the handler splits qkv and rotates q and k
// (backward: rotates dq, dk back and merges dq, dk, dv).
Prepared CallBuilder::rope(const OpShape& op) {
  if (d_.mla) return skip("multi-latent attention's padded core and RoPE channels are not timed yet");
  const int64_t hq = d_.heads, hkv = d_.kv_heads, hd = d_.d, s = d_.s / d_.cp, b = d_.b;
  if (op.m != s * b || op.n != (hq + hkv) * hd) return skip("shape does not match the job's heads");
  auto pos = std::make_shared<std::vector<int32_t>>(positions());
  const double base = job_.model.rotary_base;
  DeviceTensor q = random({s, b, hq, hd}), k = random({s, b, hkv, hd}), v = random({s, b, hkv, hd});
  DeviceTensor mixed = random({op.m, (hq + 2 * hkv) * hd});
  Device& dev = dev_;
  const int64_t n = op.m;
  if (op.kind == OpKind::Rope)
    return {"split_qkv + rope_forward q" + dims_text(q.shape) + " k" + dims_text(k.shape), [=, &dev] {
              dev.split_qkv(mixed, hkv, hq / hkv, hd, q.reshaped({n, hq * hd}), k.reshaped({n, hkv * hd}),
                            v.reshaped({n, hkv * hd}));
              dev.rope_forward(q, *pos, base, q);
              dev.rope_forward(k, *pos, base, k);
            }, ""};
  return {"rope_backward dq" + dims_text(q.shape) + " dk" + dims_text(k.shape) + " + merge_qkv", [=, &dev] {
            dev.rope_backward(q, *pos, base, q);
            dev.rope_backward(k, *pos, base, k);
            dev.merge_qkv(q.reshaped({n, hq * hd}), k.reshaped({n, hkv * hd}), v.reshaped({n, hkv * hd}), hkv, hq / hkv,
                          hd, mixed);
          }, ""};
}

// Activation over [m, n] outputs: input [m, 2n] with SwiGLU, else [m, n].
Prepared CallBuilder::activation(const OpShape& op) {
  const int64_t in_cols = act_ == ActivationKind::SwiGlu ? 2 * op.n : op.n;
  DeviceTensor x = random({op.m, in_cols});
  const ActivationKind kind = act_;
  Device& dev = dev_;
  if (op.kind == OpKind::Activation) {
    DeviceTensor y = dev_.empty({op.m, op.n});
    return {"activation_forward x" + dims_text(x.shape), [=, &dev] { dev.activation_forward(kind, x, y); }, ""};
  }
  DeviceTensor dy = random({op.m, op.n}), dx = dev_.empty(x.shape);
  return {"activation_backward x" + dims_text(x.shape), [=, &dev] { dev.activation_backward(kind, x, dy, dx); }, ""};
}

// Elementwise ops by site (model_runner.cpp's handlers).
Prepared CallBuilder::elementwise(const OpShape& op) {
  Device& dev = dev_;
  if (op.site == Site::AttnResidual || op.site == Site::MlpResidual) return residual(op);
  if (op.site == Site::ResidualGrad || op.site == Site::MoeGradAdd || op.site == Site::SharedAdd ||
      op.site == Site::SharedGradAdd || op.site == Site::MlaGradAdd || op.site == Site::MtpGradAdd) {
    DeviceTensor a = random({op.m, op.n}), b = random({op.m, op.n}), out = dev_.empty({op.m, op.n});
    return {"add " + dims_text(a.shape), [=, &dev] { dev.add(a, b, out); }, ""};
  }
  if (op.site == Site::MirrorGradAdd) {
    DeviceTensor x = random({op.m * op.n}), y = random({op.m * op.n});
    return {"axpy " + dims_text(x.shape), [=, &dev] { dev.axpy(1.0f, x, y); }, ""};
  }
  if (op.site == Site::LossReduce) {
    DeviceTensor mx = random({op.m}), sum = constant({op.m}, 2.0f), target = random({op.m}), loss = dev_.empty({op.m});
    return {"cross_entropy_loss + sum " + dims_text(mx.shape), [=, &dev] {
              dev.cross_entropy_loss(mx, sum, target, loss);
              (void)dev.sum(loss);
            }, ""};
  }
  if (op.site == Site::EmbedDropout) {
    if (job_.training.hidden_dropout <= 0) return skip("no device work: the job has no hidden dropout");
    DeviceTensor src = random({op.m, op.n}), out = dev_.empty({op.m, op.n});
    auto rows = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(op.m));
    std::iota(rows->begin(), rows->end(), int64_t{0});
    const float p = static_cast<float>(job_.training.hidden_dropout);
    return {"copy + dropout " + dims_text(src.shape), [=, &dev] {
              dev.copy(src, out);
              dev.dropout(out, p, 0x5EEDu, *rows);
            }, ""};
  }
  return not_executed(op);
}

// Bias-dropout-add over [m, n]. Forward: out = x + dropout(branch + bias); backward: the branch
// gradient is a masked copy, the bias gradient its column sums. The MLP residual of a MoE layer
// has no bias: with a MoE model it is timed without one.
Prepared CallBuilder::residual(const OpShape& op) {
  const bool attn = op.site == Site::AttnResidual;
  const bool bias_on = d_.bias && (attn || !job_.model.is_moe());
  const float p = static_cast<float>(job_.training.hidden_dropout);
  const bool drop = p > 0;
  auto rows = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(op.m));
  std::iota(rows->begin(), rows->end(), int64_t{0});
  DeviceTensor g = random({op.m, op.n}), branch = dev_.empty({op.m, op.n});
  DeviceTensor bias = bias_on ? random({op.n}) : DeviceTensor{}, dbias = bias_on ? constant({op.n}, 0.0f) : DeviceTensor{};
  Device& dev = dev_;
  if (op.backward) {
    return {std::string(drop ? "copy + dropout " : "") + (bias_on ? "column_sums " : "") + dims_text(g.shape), [=, &dev] {
              if (drop) {
                dev.copy(g, branch);
                dev.dropout(branch, p, 0x5EEDu, *rows);
              }
              if (bias_on) dev.column_sums_accumulate(drop ? branch : g, dbias);
            }, ""};
  }
  DeviceTensor x = random({op.m, op.n}), out = dev_.empty({op.m, op.n});
  const bool staged = drop || bias_on;
  return {std::string(staged ? "copy + " : "") + (bias_on ? "add_row_vector + " : "") + (drop ? "dropout + " : "") +
              "add " + dims_text(x.shape),
          [=, &dev] {
            if (staged) dev.copy(g, branch);
            if (bias_on) dev.add_row_vector(branch, bias);
            if (drop) dev.dropout(branch, p, 0x5EEDu, *rows);
            dev.add(x, staged ? branch : g, out);
          }, ""};
}

// Embedding rows of this rank's vocabulary slice [V/t, h] for m tokens (+ learned positions).
Prepared CallBuilder::embedding(const OpShape& op) {
  const int64_t v_local = d_.vocab / d_.t;
  auto tok = std::make_shared<std::vector<int32_t>>(ids(op.m, v_local));
  auto pos = std::make_shared<std::vector<int32_t>>(ids(op.m, std::max<int64_t>(d_.positions, 1)));
  const bool learned = d_.positions > 0;
  DeviceTensor table = random({v_local, op.n}), ptable = learned ? random({d_.positions, op.n}) : DeviceTensor{};
  Device& dev = dev_;
  const std::string what = dims_text({op.m}) + " of " + dims_text(table.shape) + (learned ? " + positions" : "");
  if (op.kind == OpKind::Embedding) {
    DeviceTensor out = dev_.empty({op.m, op.n}), pout = learned ? dev_.empty({op.m, op.n}) : DeviceTensor{};
    return {"embedding_forward " + what, [=, &dev] {
              dev.embedding_forward(*tok, table, 0, out);
              if (learned) {
                dev.embedding_forward(*pos, ptable, 0, pout);
                dev.add(out, pout, out);
              }
            }, ""};
  }
  DeviceTensor dy = random({op.m, op.n});
  return {"embedding_backward " + what, [=, &dev] {
            dev.embedding_backward(*tok, dy, 0, table);
            if (learned) dev.embedding_backward(*pos, dy, 0, ptable);
          }, ""};
}

// Vocabulary-parallel cross-entropy over logits [m tokens, n = V/t].
Prepared CallBuilder::cross_entropy(const OpShape& op) {
  auto targets = std::make_shared<std::vector<int32_t>>(ids(op.m, op.n * d_.t));
  DeviceTensor logits = random({op.m, op.n}, 4.0f), mx = dev_.empty({op.m}), sum = dev_.empty({op.m});
  DeviceTensor target = dev_.empty({op.m}), loss = dev_.empty({op.m});
  Device& dev = dev_;
  const bool one_rank = d_.t == 1;
  if (op.kind == OpKind::CrossEntropy)
    return {"cross_entropy_partials " + dims_text(logits.shape) + (one_rank ? " + cross_entropy_loss" : " + copy"),
            [=, &dev] {
              dev.cross_entropy_partials(logits, *targets, 0, mx, sum, target);
              if (one_rank) {
                dev.cross_entropy_loss(mx, sum, target, loss);
                (void)dev.sum(loss);
              } else {
                dev.copy(mx, loss);
              }
            }, ""};
  dev_.cross_entropy_partials(logits, *targets, 0, mx, sum, target);
  DeviceTensor d_loss = dev_.empty({op.m}), d_logits = dev_.empty(logits.shape);
  return {"fill + cross_entropy_backward " + dims_text(logits.shape), [=, &dev] {
            dev.fill(d_loss, 1.0e-3f);
            dev.cross_entropy_backward(logits, *targets, 0, mx, sum, d_loss, d_logits);
          }, ""};
}

// Router: logits [m, n = E] = x [m, k = h] W [h, E], then top-k; backward: d_logits and dx.
Prepared CallBuilder::router(const OpShape& op) {
  DeviceTensor x = random({op.m, op.k}), w = random({op.k, op.n}, 0.05f), logits = dev_.empty({op.m, op.n});
  const RouterArgs args = router_;
  Device& dev = dev_;
  if (op.kind == OpKind::Router)
    return {"gemm_forward " + dims_text(x.shape) + "x" + dims_text(w.shape) + " + router_forward", [=, &dev] {
              dev.gemm_forward(x, w, {}, WeightLayout::InOut, logits);
              (void)dev.router_forward(logits, args);
            }, ""};
  dev_.gemm_forward(x, w, {}, WeightLayout::InOut, logits);
  auto routing = std::make_shared<RoutingResult>(dev_.router_forward(logits, args));
  DeviceTensor d_probs = random({op.m, args.topk}), d_logits = dev_.empty(logits.shape), dx = dev_.empty(x.shape);
  return {"router_backward + gemm_grad_input " + dims_text(logits.shape) + "x" + dims_text(w.shape) + "^T",
          [=, &dev] {
            dev.router_backward(logits, *routing, d_probs, 0.0, {}, routing->tokens, 1.0, d_logits);
            dev.gemm_grad_input(d_logits, w, WeightLayout::InOut, dx);
          }, ""};
}

// Token (un)permutation of m rows x n = h: a plan of m copies over E experts, balanced, in
// expert-major order (as make_plan in runner_moe.cpp orders a real routing).
Prepared CallBuilder::permute(const OpShape& op) {
  const int64_t topk = std::max<int64_t>(router_.topk, 1), experts = std::max<int64_t>(d_.experts, 1);
  if (op.m % topk != 0) return skip("rows not a multiple of top-k: no routing gives this shape");
  auto plan = std::make_shared<PermutationPlan>();
  plan->tokens = op.m / topk;
  plan->topk = topk;
  plan->tokens_per_expert.assign(static_cast<size_t>(experts), 0);
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(experts));
  for (int64_t i = 0; i < op.m; ++i) by_expert[static_cast<size_t>((i / topk + i % topk) % experts)].push_back(i);
  for (int64_t e = 0; e < experts; ++e) {
    plan->tokens_per_expert[static_cast<size_t>(e)] = static_cast<int64_t>(by_expert[static_cast<size_t>(e)].size());
    for (int64_t s : by_expert[static_cast<size_t>(e)]) plan->source.push_back(s);
  }
  DeviceTensor tokens = random({plan->tokens, op.n}), rows = random({op.m, op.n}), probs = random({plan->tokens, topk});
  DeviceTensor d_probs = dev_.empty(probs.shape);
  Device& dev = dev_;
  const std::string shape = dims_text({op.m, op.n});
  switch (op.kind) {
    case OpKind::Permute:
      return {"permute_forward " + shape, [=, &dev] { dev.permute_forward(tokens, *plan, rows); }, ""};
    case OpKind::PermuteGrad:
      return {"permute_backward " + shape, [=, &dev] { dev.permute_backward(rows, *plan, tokens); }, ""};
    case OpKind::Unpermute:
      return {"unpermute_forward " + shape, [=, &dev] { dev.unpermute_forward(rows, *plan, probs, tokens); }, ""};
    default: {
      DeviceTensor d_rows = dev_.empty(rows.shape);
      return {"unpermute_backward " + shape,
              [=, &dev] { dev.unpermute_backward(rows, *plan, probs, tokens, d_rows, d_probs); }, ""};
    }
  }
}

// AdamW over the local shard of m parameters, after the squared gradient norm.
Prepared CallBuilder::optimizer(const OpShape& op) {
  const int64_t n = op.m * op.n;
  DeviceTensor param = random({n}), grad = random({n}, 1e-3f), m1 = constant({n}, 0.0f), m2 = constant({n}, 0.0f);
  const TrainingConfig& t = job_.training;
  const float b1 = static_cast<float>(t.adam_beta1), b2 = static_cast<float>(t.adam_beta2);
  const float eps = static_cast<float>(t.adam_eps), wd = static_cast<float>(t.weight_decay);
  Device& dev = dev_;
  return {"sum_of_squares + adamw_step " + dims_text({n}), [=, &dev] {
            (void)dev.sum_of_squares(grad);
            dev.adamw_step(param, grad, m1, m2, 1e-4f, b1, b2, eps, wd, 1, 1.0f);
          }, ""};
}

// ---- timing --------------------------------------------------------------------------------

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

OpTiming time_one(Device& device, const OpShape& op, const Prepared& p, const OpTimerOptions& o) {
  using clock = std::chrono::steady_clock;
  device.synchronize();
  p.run();   // warm-up: first-touch pages, library handles, caches
  device.synchronize();
  std::vector<double> samples;
  double total = 0;
  while (static_cast<int64_t>(samples.size()) < o.max_repeats &&
         (static_cast<int64_t>(samples.size()) < o.min_repeats || total < o.min_seconds)) {
    const auto t0 = clock::now();
    p.run();
    device.synchronize();
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    samples.push_back(s);
    total += s;
  }
  OpTiming t;
  t.op = op;
  t.repeats = static_cast<int64_t>(samples.size());
  // A clock tick can read 0 for a trivially small op; a profile needs seconds > 0.
  t.seconds = std::max(median(std::move(samples)), 1e-9);
  t.calls = p.calls;
  return t;
}

}  // namespace

OpTimingReport time_ops(Device& device, const Job& job, const std::vector<OpShape>& shapes,
                        const OpTimerOptions& options) {
  if (options.min_repeats < 1) throw_field_error("repeats", options.min_repeats, "must be at least 1");
  CallBuilder builder(device, job);
  OpTimingReport report;
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (options.progress) options.progress(i, shapes.size(), shapes[i]);
    const Prepared p = builder.build(shapes[i]);
    if (!p.run) {
      report.skipped.push_back(SkippedOp{shapes[i], p.skip});
      continue;
    }
    report.timed.push_back(time_one(device, shapes[i], p, options));
  }
  return report;
}

nlohmann::json profile_entries(const OpTimingReport& report) {
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, std::string>;
  struct Acc {
    double weighted_seconds = 0, count = 0, bytes = 0;
  };
  std::vector<Key> order;
  std::map<Key, Acc> acc;
  for (const OpTiming& t : report.timed) {
    const OpShape& s = t.op;
    const Key key{static_cast<int>(s.kind), s.m, s.n, s.k, s.batch, s.profile_dtype};
    auto [it, fresh] = acc.emplace(key, Acc{});
    if (fresh) {
      order.push_back(key);
      it->second.bytes = s.bytes;
    }
    const double c = static_cast<double>(std::max<int64_t>(s.count, 1));
    it->second.weighted_seconds += t.seconds * c;
    it->second.count += c;
  }
  nlohmann::json entries = nlohmann::json::array();
  for (const Key& key : order) {
    const Acc& a = acc.at(key);
    entries.push_back({{"op", to_string(static_cast<OpKind>(std::get<0>(key)))},
                       {"m", std::get<1>(key)},
                       {"n", std::get<2>(key)},
                       {"k", std::get<3>(key)},
                       {"batch", std::get<4>(key)},
                       {"dtype", std::get<5>(key)},
                       {"seconds", a.weighted_seconds / a.count},
                       {"bytes", a.bytes}});
  }
  return entries;
}

}  // namespace tandem::exec
