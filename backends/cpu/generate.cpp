// KV-cached decoding of a dense decoder and token sampling (generate.h).
#include "backends/cpu/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backends/cpu/ops_activation.h"
#include "backends/cpu/ops_attention.h"
#include "backends/cpu/ops_embedding.h"
#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/ops_norm.h"
#include "backends/cpu/ops_rope.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

std::string dims_text(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// a += b, both [rows, cols].
void add_in_place(Tensor& a, const Tensor& b) {
  TANDEM_CHECK(a.shape == b.shape);
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] += b.data[i];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---- model ----------------------------------------------------------------------------------

KvCacheDecoder::KvCacheDecoder(const ModelConfig& m, WeightMap weights) : weights_(std::move(weights)) {
  if (m.num_experts > 0)
    throw_field_error("num_experts", m.num_experts, "MoE models are not supported by generate (dense decoders only)");
  if (m.multi_latent_attention)
    throw_field_error("multi_latent_attention", "true", "MLA models are not supported by generate");
  if (m.mtp_num_layers > 0) throw_field_error("mtp_num_layers", m.mtp_num_layers, "not supported by generate");
  h_ = m.hidden_size;
  a_ = m.num_attention_heads;
  g_ = m.num_query_groups > 0 ? m.num_query_groups : a_;
  d_ = m.kv_channels > 0 ? m.kv_channels : h_ / a_;
  f_ = m.ffn_hidden_size;
  vocab_ = m.vocab_size;
  padded_vocab_ = m.padded_vocab_size > 0 ? m.padded_vocab_size : m.vocab_size;
  if (h_ <= 0 || a_ <= 0 || g_ <= 0 || a_ % g_ != 0 || f_ <= 0 || vocab_ <= 0 || m.num_layers <= 0)
    throw UserError("model: hidden_size " + std::to_string(h_) + ", heads " + std::to_string(a_) + ", query groups " +
                    std::to_string(g_) + ", ffn " + std::to_string(f_) + ", vocab " + std::to_string(vocab_) +
                    " do not describe a decoder");
  max_positions_ = m.max_position_embeddings > 0 ? m.max_position_embeddings : m.seq_length;
  layer_norm_ = m.normalization == Normalization::LayerNorm;
  swiglu_ = m.swiglu;
  rope_ = m.position_embedding == PositionEmbedding::Rope;
  // As training (backends/executor/trainer.cpp): Megatron's fused bias-GeLU is the tanh form.
  gelu_tanh_ = m.add_bias_linear;
  tied_ = !m.untie_embeddings_and_output_weights;
  eps_ = static_cast<float>(m.norm_epsilon);
  rope_base_ = m.rotary_base;
  const bool bias = m.add_bias_linear, qkv_bias = m.add_bias_linear || m.add_qkv_bias;
  const int64_t qkv_cols = (a_ + 2 * g_) * d_, fc1_cols = (swiglu_ ? 2 : 1) * f_;

  word_ = take("embedding.word", padded_vocab_, h_);
  if (m.position_embedding == PositionEmbedding::LearnedAbsolute)
    positions_ = take("embedding.position", max_positions_, h_);
  for (int64_t i = 0; i < m.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Layer l;
    l.input_norm_w = take(p + "input_norm.weight", 1, h_);
    l.input_norm_b = take(p + "input_norm.bias", 1, h_, layer_norm_);
    l.qkv_w = take(p + "qkv.weight", h_, qkv_cols);
    l.qkv_b = take(p + "qkv.bias", 1, qkv_cols, qkv_bias);
    l.proj_w = take(p + "proj.weight", a_ * d_, h_);
    l.proj_b = take(p + "proj.bias", 1, h_, bias);
    l.pre_mlp_norm_w = take(p + "pre_mlp_norm.weight", 1, h_);
    l.pre_mlp_norm_b = take(p + "pre_mlp_norm.bias", 1, h_, layer_norm_);
    l.fc1_w = take(p + "fc1.weight", h_, fc1_cols);
    l.fc1_b = take(p + "fc1.bias", 1, fc1_cols, bias);
    l.fc2_w = take(p + "fc2.weight", f_, h_);
    l.fc2_b = take(p + "fc2.bias", 1, h_, bias);
    layers_.push_back(std::move(l));
  }
  final_norm_w_ = take("final_norm.weight", 1, h_);
  final_norm_b_ = take("final_norm.bias", 1, h_, layer_norm_);
  if (!tied_) output_ = take("output.weight", padded_vocab_, h_);
  if (!weights_.empty())
    throw UserError("weights: tensor " + weights_.begin()->first + " is not part of the job's model (" +
                    std::to_string(weights_.size()) + " such tensors)");
}

// The tensor `name` [rows, cols] (1-D as [cols]) moved out of the map; with present = false it
// must be absent and an empty tensor is returned.
Tensor KvCacheDecoder::take(const std::string& name, int64_t rows, int64_t cols, bool present) {
  const auto it = weights_.find(name);
  if (!present) {
    if (it != weights_.end()) throw UserError("weights: tensor " + name + " is present, the job's model has none");
    return Tensor{};
  }
  if (it == weights_.end()) throw UserError("weights: tensor " + name + " " + dims_text(rows, cols) + " is missing");
  const exec::CheckpointTensor& t = it->second;
  if (t.rows != rows || t.cols != cols)
    throw UserError("weights: tensor " + name + " is " + dims_text(t.rows, t.cols) + ", the job's model needs " +
                    dims_text(rows, cols));
  Tensor out(rows == 1 ? Shape{cols} : Shape{rows, cols}, std::move(it->second.value));
  weights_.erase(it);
  return out;
}

void KvCacheDecoder::reset(int64_t capacity) {
  TANDEM_CHECK_MSG(capacity >= 1 && capacity <= max_positions_, "cache capacity " << capacity << " of " << max_positions_);
  capacity_ = capacity;
  cached_ = 0;
  for (Layer& l : layers_) {
    if (!l.k_cache.shape.empty() && l.k_cache.dim(0) == capacity) continue;   // values beyond cached_ are never read
    l.k_cache = Tensor({capacity, g_, d_});
    l.v_cache = Tensor({capacity, g_, d_});
  }
}

void KvCacheDecoder::norm(ConstTensorView x, const Tensor& w, const Tensor& b, TensorView y) const {
  Tensor mean({x.dim(0)}), rstd({x.dim(0)});
  if (layer_norm_) layernorm_forward(x, w, b, eps_, y, mean, rstd);
  else rmsnorm_forward(x, w, eps_, y, rstd);
}

// x [n, h] += proj(attention(norm(x))) for the n rows at `positions`, whose keys and values are
// appended to the layer's caches at rows positions[0] .. positions[0] + n - 1.
void KvCacheDecoder::attention_block(Layer& l, Tensor& x, std::span<const int32_t> positions) {
  const int64_t n = x.dim(0), p0 = positions[0], total = p0 + n;
  Tensor ln({n, h_}), qkv({n, (a_ + 2 * g_) * d_});
  norm(x, l.input_norm_w, l.input_norm_b, ln);
  gemm_forward(ln, l.qkv_w, l.qkv_b, WeightLayout::InOut, qkv);
  Tensor q({n, a_ * d_}), k({n, g_ * d_}), v({n, g_ * d_});
  split_qkv(qkv, g_, a_ / g_, d_, q, k, v);
  TensorView q4 = make_view(std::span<float>(q.data), {n, 1, a_, d_});
  TensorView k4 = make_view(std::span<float>(k.data), {n, 1, g_, d_});
  if (rope_) {
    RopeOptions ro;
    ro.base = rope_base_;
    ro.positions = positions;
    rope_forward(q4, ro, q4);
    rope_forward(k4, ro, k4);
  }
  const size_t row = static_cast<size_t>(g_ * d_);
  std::copy(k.data.begin(), k.data.end(), l.k_cache.data.begin() + static_cast<std::ptrdiff_t>(p0 * g_ * d_));
  std::copy(v.data.begin(), v.data.end(), l.v_cache.data.begin() + static_cast<std::ptrdiff_t>(p0 * g_ * d_));
  const auto prefix = [&](const Tensor& cache) {
    return make_view(std::span<const float>(cache.data).first(static_cast<size_t>(total) * row), {total, 1, g_, d_});
  };
  Tensor ctx({n, 1, a_, d_}), lse({1, a_, n});
  AttentionOptions ao;
  ao.q_positions = positions;   // keys 0 .. total-1 sit at positions 0 .. total-1
  attention_forward(q4, prefix(l.k_cache), prefix(l.v_cache), ao, ctx, lse);
  Tensor proj({n, h_});
  gemm_forward(make_view(std::span<const float>(ctx.data), {n, a_ * d_}), l.proj_w, l.proj_b, WeightLayout::InOut, proj);
  add_in_place(x, proj);
}

// x [n, h] += fc2(act(fc1(norm(x)))).
void KvCacheDecoder::mlp_block(const Layer& l, Tensor& x) const {
  const int64_t n = x.dim(0);
  Tensor ln({n, h_}), fc1({n, (swiglu_ ? 2 : 1) * f_}), act({n, f_}), out({n, h_});
  norm(x, l.pre_mlp_norm_w, l.pre_mlp_norm_b, ln);
  gemm_forward(ln, l.fc1_w, l.fc1_b, WeightLayout::InOut, fc1);
  if (swiglu_) swiglu_forward(fc1, act);
  else gelu_forward(fc1, gelu_tanh_ ? GeluForm::Tanh : GeluForm::Erf, act);
  gemm_forward(act, l.fc2_w, l.fc2_b, WeightLayout::InOut, out);
  add_in_place(x, out);
}

std::vector<float> KvCacheDecoder::extend(std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  TANDEM_CHECK_MSG(n >= 1 && cached_ + n <= capacity_, n << " tokens after " << cached_ << " in a cache of " << capacity_);
  for (int32_t t : tokens) TANDEM_CHECK_MSG(t >= 0 && t < padded_vocab_, "token id " << t);
  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), static_cast<int32_t>(cached_));
  Tensor x({n, h_});
  embedding_forward(tokens, word_, 0, x);
  if (!positions_.data.empty()) {
    Tensor pe({n, h_});
    embedding_forward(positions, positions_, 0, pe);
    add_in_place(x, pe);
  }
  for (Layer& l : layers_) {
    attention_block(l, x, positions);
    mlp_block(l, x);
  }
  cached_ += n;
  // Only the last row's logits are needed: final norm and output layer on [1, h].
  const ConstTensorView last = make_view(std::span<const float>(x.data).last(static_cast<size_t>(h_)), {1, h_});
  Tensor y({1, h_}), logits({1, padded_vocab_});
  norm(last, final_norm_w_, final_norm_b_, y);
  gemm_forward(y, tied_ ? word_ : output_, {}, WeightLayout::OutIn, logits);
  return std::move(logits.data);
}

// ---- sampling -------------------------------------------------------------------------------

TokenSampler::TokenSampler(const SamplingOptions& options) : options_(options), engine_(options.seed) {
  TANDEM_CHECK(options.temperature >= 0.0 && options.top_k >= 0 && options.top_p > 0.0 && options.top_p <= 1.0);
}

int32_t TokenSampler::pick(std::span<const float> logits) {
  const int64_t v = static_cast<int64_t>(logits.size());
  TANDEM_CHECK(v >= 1);
  if (options_.temperature == 0.0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates by decreasing logit (ties: lower id first), cut to the top k.
  std::vector<int32_t> ids(static_cast<size_t>(v));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t x, int32_t y) { return logits[x] > logits[y]; });
  if (options_.top_k > 0 && options_.top_k < v) ids.resize(static_cast<size_t>(options_.top_k));
  // Softmax of logits / T over the candidates (double).
  std::vector<double> p(ids.size());
  const double top = logits[ids[0]] / options_.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) sum += p[i] = std::exp(logits[ids[i]] / options_.temperature - top);
  for (double& x : p) x /= sum;
  // Nucleus: the shortest prefix whose probability reaches top_p (at least one token).
  if (options_.top_p < 1.0) {
    double cumulative = 0.0;
    size_t keep = 0;
    while (keep < p.size() && cumulative < options_.top_p) cumulative += p[keep++];
    ids.resize(keep);
    p.resize(keep);
  }
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  const double u = static_cast<double>(engine_() >> 11) * 0x1.0p-53 * total;   // uniform in [0, total)
  double cumulative = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += p[i];
    if (u < cumulative) return ids[i];
  }
  return ids.back();
}

// ---- the loop -------------------------------------------------------------------------------

namespace {

// log softmax(logits)[id] over the real vocabulary (double).
double log_probability(std::span<const float> logits, int32_t id) {
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - top);
  return static_cast<double>(logits[static_cast<size_t>(id)]) - top - std::log(sum);
}

}  // namespace

GenerateResult generate(KvCacheDecoder& decoder, std::span<const int32_t> prompt, const GenerateOptions& options) {
  const int64_t n = static_cast<int64_t>(prompt.size()), limit = decoder.max_positions();
  if (n == 0) throw UserError("prompt: empty (give at least one token)");
  for (int64_t i = 0; i < n; ++i)
    if (prompt[i] < 0 || prompt[i] >= decoder.vocab_size())
      throw UserError("prompt: token id " + std::to_string(prompt[i]) + " at offset " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(decoder.vocab_size()) + ")");
  if (n > limit)
    throw UserError("prompt: " + std::to_string(n) + " tokens, more than the model's " + std::to_string(limit) +
                    " positions (max_position_embeddings)");
  if (options.max_new_tokens < 1 || n + options.max_new_tokens > limit)
    throw_field_error("--max-new-tokens", options.max_new_tokens,
                      "prompt (" + std::to_string(n) + " tokens) + new tokens must be within the model's " +
                          std::to_string(limit) + " positions (max_position_embeddings), at least 1 new token");
  const int64_t capacity = n + options.max_new_tokens;
  TokenSampler sampler(options.sampling);
  std::vector<int32_t> sequence(prompt.begin(), prompt.end());
  GenerateResult r;
  auto t0 = std::chrono::steady_clock::now();
  decoder.reset(capacity);
  std::vector<float> logits = decoder.extend(prompt);
  r.prefill_s = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const std::span<const float> real(logits.data(), static_cast<size_t>(decoder.vocab_size()));
    const int32_t token = sampler.pick(real);
    r.tokens.push_back(token);
    r.logprobs.push_back(log_probability(real, token));
    sequence.push_back(token);
    if (options.eod && token == *options.eod) {
      r.stopped_at_eod = true;
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    if (options.kv_cache) {
      logits = decoder.extend(std::span<const int32_t>(&sequence.back(), 1));
    } else {   // no reuse: empty caches, the whole sequence again
      decoder.reset(capacity);
      logits = decoder.extend(sequence);
    }
  }
  r.decode_s = seconds_since(t0);
  r.last_logits = std::move(logits);
  return r;
}

}  // namespace tandem::cpu
