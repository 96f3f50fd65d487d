// Activation memory of one decoder layer (models/accounting.h: activation_bytes_per_layer).
//
// Korthikanti et al. 2022 §4.1 list the tensors a GPT layer saves for its backward pass. Here
// each is written with its shape, for one microbatch on one rank. Notation: e bytes per element
// of the training dtype (2 for bf16/fp16, 4 for fp32), masks 1 byte per element, n = s_l·b tokens
// with s_l = s / CP the local sequence, s_kv = s the keys one query attends to, t = TP, and
// r = t with sequence parallelism (else 1) for tensors that SP splits along the sequence.
//
//   attention (standard)                                    GPT value (e = 2, g = a, d·a = h)
//     norm1 input            [n, h]          e·n·h / r       2sbh
//     QKV input (norm out)   [n, h]          e·n·h / r       2sbh
//     Q                      [n, a·d]        e·n·a·d / t     2sbh
//     K, V                   [n, g·d] each   2·e·n·g·d / t   4sbh     (GQA: g < a)
//     softmax output         [a, s_l, s_kv]  e·a·s_l·s·b / t 2as²b
//     dropout mask           [a, s_l, s_kv]  a·s_l·s·b / t   as²b
//     dropout output         [a, s_l, s_kv]  e·a·s_l·s·b / t 2as²b
//     output-proj input      [n, a·d]        e·n·a·d / t     2sbh
//     dropout mask           [n, h]          n·h / r         sbh
//   MLP (dense, f = 4h)
//     norm2 input            [n, h]          e·n·h / r       2sbh
//     fc1 input              [n, h]          e·n·h / r       2sbh
//     activation input       [n, f] or [n, 2f] (SwiGLU)      8sbh
//     activation output      [n, f]          e·n·f / t       8sbh
//     dropout mask           [n, h]          n·h / r         sbh
//   sum: 34sbh + 5as²b; with TP: sbh(10 + 24/t + 5as/(ht)); with TP+SP: sbh(34/t + 5as/(ht)).
//
//   selective recompute drops the three [a, s_l, s_kv] tensors (the core is recomputed from Q, K, V).
//   flash attention never saves them either; it keeps an fp32 log-sum-exp [a, n] instead.
//
//   FP8 with Transformer Engine (fp8_linear_inputs): a linear layer keeps the FP8 cast of its
//   input (1 byte per element) for its weight gradient. The QKV input and the fc1 input are
//   then the FP8 outputs of TE's fused LayerNorm-Linear (the 16-bit norm output is never
//   materialised), and the fc2 input is the FP8 cast of the activation output (its 16-bit
//   original is freed). The output-projection input stays 16-bit, since flash attention's
//   backward reads its own output, and TE keeps an FP8 copy beside it (+1 byte per element).
//   Norm inputs (the residual stream) and Q, K, V (attention is not FP8) stay 16-bit. Routed MoE
//   experts are counted in 16 bits.
//   full recompute keeps the layer input only: e·n·h / r (Korthikanti: 2sbh/t with SP).
//
//   selective recompute replays the modules of --recompute-modules (default core_attn) and drops
//   what they saved: core_attn the [a, s_l, s_kv] tensors; layernorm the outputs of the input and
//   pre-MLP norms (QKV / down-projection input, fc1 or router input); mla_up_proj MLA's Q, K, V;
//   mlp a dense MLP's fc1 and activation outputs (its input stays, unless layernorm drops it);
//   moe_act the routed experts' activation outputs; shared_experts the shared expert's fc1 and
//   activation outputs; moe everything of an MoE block but its input.
//
//   MLA replaces Q, K, V by the latent path: the down-projection outputs (query latent
//   [n, q_lora] and its norm output; key/value latent [n, kv_lora + d_rope] and its norm output,
//   all / r), then Q and K [n, a·(d_nope + d_rope)] and V [n, a·d_v] / t; core as above.
//
//   MoE replaces the dense MLP after the norm2 and fc1-input tensors (the router and the token
//   dispatcher read the same norm output) by:
//     router logits and scores, fp32   2 x 4·n·E / r
//     routed tokens                    T = (n / t)·k·ETP copies on this rank with SP, n·k without
//       (expected value under balanced routing: each rank sends its k copies of its n/t tokens
//       over EP and receives as many; the ETP group then gathers them, so with ETP = TP a rank
//       sees the n·k copies of its TP group, with ETP = 1 only its own n·k/t)
//       each copy saves fc1 input [h], fc1 output [f_moe / ETP] (x2 SwiGLU), activation output
//       [f_moe / ETP] and fc2 output [h] (for the backward of the probability-weighted combine)
//     shared expert                    as the dense MLP with f_shared
//     dropout mask                     n·h / r
// Normalization statistics (fp32 [n] per norm) and RoPE tables are negligible and not counted.
#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"
#include "models/model_dims.h"

namespace tandem {
namespace {

using detail::ModelDims;

// Which modules a layer replays in its backward instead of keeping their saved tensors.
struct Replays {
  bool core_attn = false, layernorm = false, mla_up_proj = false, mlp = false, moe_act = false, moe = false,
       shared_experts = false;
};

Replays replays_of(const Job& job, RecomputeGranularity gran) {
  Replays r;
  if (gran != RecomputeGranularity::Selective) return r;
  const auto& t = job.training;
  const bool given = t.recompute_granularity == RecomputeGranularity::Selective && !t.recompute_modules.empty();
  const auto has = [&](RecomputeModule m) { return given ? t.recomputes(m) : m == RecomputeModule::CoreAttn; };
  r.core_attn = has(RecomputeModule::CoreAttn);
  r.layernorm = has(RecomputeModule::Layernorm);
  r.mla_up_proj = has(RecomputeModule::MlaUpProj);
  r.mlp = has(RecomputeModule::Mlp);
  r.moe_act = has(RecomputeModule::MoeAct);
  r.moe = has(RecomputeModule::Moe);
  r.shared_experts = has(RecomputeModule::SharedExperts);
  return r;
}

struct Geometry {
  double e = 2;          // bytes per activation element
  double e_in = 2;       // bytes per element of a saved linear-layer input (1 with FP8, else e)
  double n = 0;          // local tokens s_l·b
  double s_kv = 0;       // keys per query
  double b = 1;          // micro-batch
  double t = 1;          // TP
  double r = 1;          // divisor of sequence-split tensors: t with SP, else 1
  double etp = 1;        // expert TP
  bool sp = false;
};

Geometry geometry(const Job& job, const MemoryOptions& o) {
  const auto& par = job.parallel;
  Geometry g;
  g.e = double(bytes_per_element(job.training.params_dtype));
  g.e_in = g.e;
  const double cp = double(std::max<int64_t>(1, par.context_parallel_size));
  g.b = double(std::max<int64_t>(1, job.training.micro_batch_size));
  g.n = double(job.model.seq_length) / cp * g.b;
  g.s_kv = double(job.model.seq_length);
  g.t = double(std::max<int64_t>(1, par.tensor_model_parallel_size));
  g.sp = par.sequence_parallel && g.t > 1;
  g.r = g.sp ? g.t : 1.0;
  g.etp = double(par.expert_tensor_parallel_size > 0 ? par.expert_tensor_parallel_size : par.tensor_model_parallel_size);
  if (o.fp8_linear_inputs) g.e_in = 1.0;
  return g;
}

// The saved [a, s_l, s_kv] tensors, or flash attention's row statistic.
double attention_core_bytes(const ModelDims& x, const Geometry& g, const Replays& rc, const MemoryOptions& o) {
  const double a = double(x.a);
  if (o.flash_attention) return 4.0 * a * g.n / g.t;
  if (rc.core_attn) return 0.0;
  const double scores = a * g.n * g.s_kv / g.t;   // a·s_l·s·b / t elements
  double bytes = g.e * scores;                     // softmax output
  if (o.attention_dropout) bytes += scores + g.e * scores;   // mask + dropout output
  return bytes;
}

double attention_bytes(const ModelDims& x, const Geometry& g, const Replays& rc, const MemoryOptions& o) {
  const double h = double(x.h), a = double(x.a);
  double bytes = (g.e + (rc.layernorm ? 0.0 : g.e_in)) * g.n * h / g.r;   // norm1 input, QKV/down-projection input
  const double fp8_copy = g.e_in < g.e ? g.e_in : 0.0;   // TE's FP8 copy of the output-projection input
  if (!x.mla) {
    const double d = double(x.d), kv = double(x.g);
    bytes += g.e * g.n * (a * d + 2 * kv * d) / g.t;   // Q, K, V
    bytes += (g.e + fp8_copy) * g.n * a * d / g.t;     // output-projection input
  } else {
    if (x.q_lora > 0) bytes += 2 * g.e * g.n * double(x.q_lora) / g.r;     // query latent, its norm output
    bytes += g.e * g.n * double(x.kv_lora + x.d_rope) / g.r;              // key/value latent (+ rope key)
    bytes += g.e * g.n * double(x.kv_lora) / g.r;                         // its norm output
    if (!rc.mla_up_proj) bytes += g.e * g.n * a * (2.0 * double(x.d_nope + x.d_rope) + double(x.d_v)) / g.t;   // Q, K, V
    bytes += (g.e + fp8_copy) * g.n * a * double(x.d_v) / g.t;             // output-projection input
  }
  bytes += attention_core_bytes(x, g, rc, o);
  if (o.hidden_dropout) bytes += g.n * h / g.r;
  return bytes;
}

// fc1 output and activation output (the fc2 input, `e_out` bytes) of an MLP of size f over
// `tokens` rows, f split by `split`.
double mlp_inner_bytes(const ModelDims& x, const Geometry& g, double tokens, int64_t f, double split, double e_out) {
  const double ff = double(f);
  return tokens * (g.e * (x.gated ? 2.0 : 1.0) * ff + e_out * ff) / split;
}

double mlp_bytes(const ModelDims& x, const Geometry& g, bool moe, const Replays& rc, const MemoryOptions& o) {
  const double h = double(x.h);
  const double dropout = o.hidden_dropout ? g.n * h / g.r : 0.0;
  if (!moe) {                                       // norm2 input, fc1 input, fc1 output, fc2 input
    const double fc1_input = rc.layernorm ? 0.0 : g.e_in * g.n * h / g.r;
    return g.e * g.n * h / g.r + fc1_input + dropout + (rc.mlp ? 0.0 : mlp_inner_bytes(x, g, g.n, x.f, g.t, g.e_in));
  }
  double bytes = (rc.layernorm ? 1 : 2) * g.e * g.n * h / g.r + dropout;   // norm2 input, router/dispatcher input
  if (rc.moe) return bytes;
  bytes += 2 * 4.0 * g.n * double(x.experts) / g.r;                       // router logits, scores (fp32)
  const double routed = g.sp ? g.n / g.t * double(x.topk) * g.etp : g.n * double(x.topk);
  bytes += routed * (2 * g.e * h) + mlp_inner_bytes(x, g, routed, x.f_moe, g.etp, rc.moe_act ? 0.0 : g.e);
  if (x.f_shared > 0 && !rc.shared_experts) bytes += mlp_inner_bytes(x, g, g.n, x.f_shared, g.t, g.e);
  return bytes;
}

}  // namespace

double activation_bytes_per_layer(const Job& job, bool moe_layer, RecomputeGranularity granularity,
                                  const MemoryOptions& options) {
  const ModelDims x = detail::model_dims(job.model);
  TANDEM_CHECK_MSG(x.h > 0 && x.a > 0 && x.s > 0, "activation_bytes_per_layer needs hidden, heads, seq_length");
  TANDEM_CHECK_MSG(!moe_layer || x.experts > 0, "MoE layer requested for a dense model");
  const Geometry g = geometry(job, options);
  if (granularity == RecomputeGranularity::Full) return g.e * g.n * double(x.h) / g.r;
  const Replays rc = replays_of(job, granularity);
  return attention_bytes(x, g, rc, options) + mlp_bytes(x, g, moe_layer, rc, options);
}

double activation_bytes_per_layer(const Job& job, bool moe_layer, const MemoryOptions& options) {
  return activation_bytes_per_layer(job, moe_layer, job.training.recompute_granularity, options);
}

}  // namespace tandem
