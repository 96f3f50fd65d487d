// FLOPs of a training iteration (models/accounting.h).
//
// Forward FLOPs of one sequence of s tokens through one decoder layer, 2 FLOPs per
// multiply-accumulate, every matrix product counted from its shapes:
//   QKV            2·s·h·(a·d + 2·g·d)                 (GQA: g key/value heads)
//   scores QK^T    2·s·s·a·d                           (full s x s square, as in the papers)
//   softmax·V      2·s·s·a·d
//   output         2·s·a·d·h
//   MLP            2·s·h·f·2 (fc1 + fc2), SwiGLU 2·s·h·f·3 (gate, up, down)
//   MoE            router 2·s·h·E, routed experts k·(MLP of f_moe), shared expert MLP of f_shared
//   MLA            2·s·h·q_lora + 2·s·q_lora·a·(d_nope + d_rope)  (or 2·s·h·a·(d_nope + d_rope))
//                  + 2·s·h·(kv_lora + d_rope) + 2·s·kv_lora·a·(d_nope + d_v)
//                  + scores 2·s²·a·(d_nope + d_rope) + softmax·V 2·s²·a·d_v + output 2·s·a·d_v·h
// Logits add 2·s·h·V per sequence. For GPT (g = a, d = h/a, f = 4h) a layer is
// 24·s·h² + 4·s²·h, and 3 x forward over B sequences gives Korthikanti eq. (7) exactly.
#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"
#include "models/model_dims.h"

namespace tandem {
namespace {

using detail::ModelDims;

void attention_flops(const ModelDims& x, double s, ForwardFlops& f) {
  const double h = double(x.h), a = double(x.a);
  if (!x.mla) {
    const double d = double(x.d), g = double(x.g);
    f.attention_linear = 2 * s * h * (a * d + 2 * g * d) + 2 * s * a * d * h;
    f.attention_core = 2 * s * s * a * d + 2 * s * s * a * d;
    return;
  }
  const double q_head = double(x.d_nope + x.d_rope), dv = double(x.d_v);
  double linear = 0;
  if (x.q_lora > 0) linear += 2 * s * h * double(x.q_lora) + 2 * s * double(x.q_lora) * a * q_head;
  else linear += 2 * s * h * a * q_head;
  linear += 2 * s * h * double(x.kv_lora + x.d_rope);
  linear += 2 * s * double(x.kv_lora) * a * double(x.d_nope + x.d_v);
  linear += 2 * s * a * dv * h;
  f.attention_linear = linear;
  f.attention_core = 2 * s * s * a * q_head + 2 * s * s * a * dv;
}

double mlp_flops(const ModelDims& x, double tokens, int64_t ffn) {
  return 2 * tokens * double(x.h) * double(detail::mlp_matrix_columns(x, ffn));
}

}  // namespace

ForwardFlops layer_forward_flops(const ModelConfig& m, bool moe, int64_t seq) {
  const ModelDims x = detail::model_dims(m);
  const double s = double(seq);
  ForwardFlops f;
  attention_flops(x, s, f);
  if (!moe) {
    f.mlp = mlp_flops(x, s, x.f);
    return f;
  }
  f.router = 2 * s * double(x.h) * double(x.experts);
  f.experts = mlp_flops(x, s * double(x.topk), x.f_moe);
  if (x.f_shared > 0) f.mlp = mlp_flops(x, s, x.f_shared);
  return f;
}

namespace {

void add_layer(ForwardFlops& sum, const ForwardFlops& l, double times) {
  sum.attention_linear += times * l.attention_linear;
  sum.attention_core += times * l.attention_core;
  sum.mlp += times * l.mlp;
  sum.router += times * l.router;
  sum.experts += times * l.experts;
}

// Forward FLOPs of one MTP module: projection [2h, h], one layer, its own logits.
double mtp_module_flops(const ModelConfig& m, const ModelDims& x) {
  const double s = double(x.s), h = double(x.h);
  const ForwardFlops layer = layer_forward_flops(m, is_moe_layer(m, x.layers - 1), x.s);
  return 2 * s * 2 * h * h + layer.layers() + 2 * s * h * double(x.vocab);
}

}  // namespace

ForwardFlops forward_flops_per_sequence(const ModelConfig& m) {
  const ModelDims x = detail::model_dims(m);
  TANDEM_CHECK_MSG(x.layers > 0 && x.s > 0 && x.vocab > 0, "forward_flops needs layers, seq_length, vocab");
  ForwardFlops sum;
  const ForwardFlops dense = layer_forward_flops(m, false, x.s);
  const ForwardFlops moe = m.is_moe() ? layer_forward_flops(m, true, x.s) : ForwardFlops{};
  for (int64_t l = 0; l < x.layers; ++l) add_layer(sum, is_moe_layer(m, l) ? moe : dense, 1.0);
  sum.logits = 2 * double(x.s) * double(x.h) * double(x.vocab);
  if (m.mtp_num_layers > 0) sum.mtp = double(m.mtp_num_layers) * mtp_module_flops(m, x);
  return sum;
}

namespace {

// Forward FLOPs (per sequence) of the decoder layers that full recompute replays.
double full_recompute_forward(const Job& job) {
  const ModelConfig& m = job.model;
  const auto& t = job.training;
  const int64_t group = std::max<int64_t>(1, t.recompute_num_layers);
  double sum = 0;
  auto layer = [&](int64_t l) { return layer_forward_flops(m, is_moe_layer(m, l), m.seq_length).layers(); };
  if (t.recompute_method == RecomputeMethod::Uniform) {
    for (int64_t l = 0; l < m.num_layers; ++l) sum += layer(l);
    if (m.mtp_num_layers > 0)
      sum += double(m.mtp_num_layers) * layer_forward_flops(m, is_moe_layer(m, m.num_layers - 1), m.seq_length).layers();
    return sum;
  }
  // Block: the first recompute_num_layers layers of every model chunk are recomputed.
  for (const RankLayers& rank : pipeline_layout(job))
    for (const auto& chunk : rank.chunks)
      for (size_t i = 0; i < chunk.size() && static_cast<int64_t>(i) < group; ++i) sum += layer(chunk[i]);
  return sum;
}

// Forward FLOPs (per sequence) that selective recompute's modules other than core_attn replay:
// a dense MLP (mlp), a whole MoE block (moe) or its shared expert (shared_experts), MLA's up
// projections (mla_up_proj); norms and activations (layernorm, moe_act) are elementwise, 0 FLOPs.
double module_recompute_forward(const Job& job) {
  const ModelConfig& m = job.model;
  const auto& t = job.training;
  const ModelDims x = detail::model_dims(m);
  double sum = 0;
  for (int64_t l = 0; l < m.num_layers; ++l) {
    const bool moe = is_moe_layer(m, l);
    const ForwardFlops f = layer_forward_flops(m, moe, m.seq_length);
    if (!moe && t.recomputes(RecomputeModule::Mlp)) sum += f.mlp;
    if (moe && t.recomputes(RecomputeModule::Moe)) sum += f.router + f.experts + f.mlp;
    else if (moe && t.recomputes(RecomputeModule::SharedExperts)) sum += f.mlp;
  }
  if (x.mla && t.recomputes(RecomputeModule::MlaUpProj)) {
    const double s = double(m.seq_length), a = double(x.a);
    const double per_layer = 2 * s * (double(x.q_lora) * a * double(x.d_nope + x.d_rope) +
                                      double(x.kv_lora) * a * double(x.d_nope + x.d_v));
    sum += per_layer * double(m.num_layers);
  }
  return sum;
}

}  // namespace

IterationFlops flops_per_iteration(const Job& job) {
  const auto& t = job.training;
  const int64_t batch = t.global_batch_size > 0
                            ? t.global_batch_size
                            : t.micro_batch_size * std::max<int64_t>(1, job.parallel.data_parallel_size);
  const double b = double(batch);
  const ForwardFlops per_seq = forward_flops_per_sequence(job.model);
  IterationFlops it;
  it.forward = per_seq;
  for (double* v : {&it.forward.attention_linear, &it.forward.attention_core, &it.forward.mlp, &it.forward.router,
                    &it.forward.experts, &it.forward.logits, &it.forward.mtp})
    *v *= b;
  it.model = 3 * it.forward.total();
  switch (t.recompute_granularity) {
    case RecomputeGranularity::None: break;
    case RecomputeGranularity::Selective: {
      double core = per_seq.attention_core;
      if (job.model.mtp_num_layers > 0) {
        const bool moe = is_moe_layer(job.model, job.model.num_layers - 1);
        core += double(job.model.mtp_num_layers) * layer_forward_flops(job.model, moe, job.model.seq_length).attention_core;
      }
      if (!t.recomputes(RecomputeModule::CoreAttn) && !t.recompute_modules.empty()) core = 0;
      it.recompute = 3 * core * b;   // Korthikanti eq. (8) convention, see accounting.h
      it.recompute += module_recompute_forward(job) * b;
      break;
    }
    case RecomputeGranularity::Full: it.recompute = full_recompute_forward(job) * b; break;
  }
  it.hardware = it.model + it.recompute;
  return it;
}

}  // namespace tandem
