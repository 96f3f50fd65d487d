#pragma once
// Autoregressive generation on one CPU process with a KV cache (`tandem generate`).
//
// Weights arrive as full (unsharded) tensors by tandem's layout-independent names, as
// exec::read_checkpoint returns them (whatever TP/PP/DP layout saved the checkpoint) or as any
// importer that produces the same names; the model's shape comes from the job's ModelConfig.
// Supported: the dense decoders the CPU backend trains — LLaMA-style (RMSNorm, SwiGLU, RoPE, GQA,
// no biases, untied output) and GPT-2-style (LayerNorm, GeLU, learned positions, biases, tied
// embeddings) and their mixtures. MoE, MLA and MTP models are refused (UserError naming the field).
//
// Tensors (tandem names, shapes [rows, cols] row-major fp32; 1-D tensors are [1, C]):
//   embedding.word [V, h], embedding.position [P, h] (learned positions), output.weight [V, h]
//   (untied), final_norm.{weight,bias} [1, h]; per layer L, "layers.L.":
//   input_norm / pre_mlp_norm .{weight,bias} [1, h], qkv.weight [h, (a + 2g) d] (per query group
//   [q heads | k | v], Megatron's fused layout), qkv.bias [1, (a + 2g) d], proj.weight [a d, h],
//   proj.bias [1, h], fc1.weight [h, f or 2f] (SwiGLU: [gate | up]), fc1.bias, fc2.weight [f, h],
//   fc2.bias [1, h]. V is the padded vocabulary.
//
// The math is the training forward's (the same kernels: ops_gemm, ops_norm, ops_rope,
// ops_attention, ops_activation, ops_embedding) on a micro-batch of one sequence, b = 1.
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/tensor.h"
#include "backends/executor/checkpoint.h"
#include "core/job.h"

namespace tandem::cpu {

using WeightMap = std::map<std::string, exec::CheckpointTensor>;

// A dense decoder and its per-layer key/value caches k, v [layers][capacity, g, d].
class KvCacheDecoder {
 public:
  // Takes ownership of `weights`. UserError for an unsupported model (naming the ModelConfig
  // field) and for a missing tensor or one of another shape (naming the tensor).
  KvCacheDecoder(const ModelConfig& model, WeightMap weights);

  int64_t max_positions() const { return max_positions_; }   // tokens one sequence may hold
  int64_t vocab_size() const { return vocab_; }              // real tokens (before padding)
  int64_t padded_vocab() const { return padded_vocab_; }     // rows of the output layer
  int64_t cached() const { return cached_; }                 // positions held in the caches

  // Empties the caches and sizes them for `capacity` positions (<= max_positions()).
  void reset(int64_t capacity);
  // Runs `tokens` (ids < padded_vocab()) at positions [cached(), cached() + n) through every
  // layer, attending to the cached keys/values and appending their own; returns the logits
  // [padded_vocab] of the last token. n >= 1 and cached() + n <= the capacity of reset().
  std::vector<float> extend(std::span<const int32_t> tokens);

 private:
  struct Layer {
    Tensor input_norm_w, input_norm_b, qkv_w, qkv_b, proj_w, proj_b;
    Tensor pre_mlp_norm_w, pre_mlp_norm_b, fc1_w, fc1_b, fc2_w, fc2_b;
    Tensor k_cache, v_cache;   // [capacity, g, d]
  };

  Tensor take(const std::string& name, int64_t rows, int64_t cols, bool present = true);
  void norm(ConstTensorView x, const Tensor& w, const Tensor& b, TensorView y) const;
  void attention_block(Layer& l, Tensor& x, std::span<const int32_t> positions);
  void mlp_block(const Layer& l, Tensor& x) const;

  WeightMap weights_;   // emptied as tensors are taken
  int64_t h_ = 0, a_ = 0, g_ = 0, d_ = 0, f_ = 0, vocab_ = 0, padded_vocab_ = 0;
  int64_t max_positions_ = 0, capacity_ = 0, cached_ = 0;
  bool layer_norm_ = false, swiglu_ = false, rope_ = false, gelu_tanh_ = false, tied_ = true;
  float eps_ = 1e-5f;
  double rope_base_ = 10000.0;
  Tensor word_, positions_, output_, final_norm_w_, final_norm_b_;
  std::vector<Layer> layers_;
};

// How the next token is chosen from the logits of a step.
struct SamplingOptions {
  double temperature = 0.0;   // 0: greedy (argmax; the other options are ignored)
  int64_t top_k = 0;          // keep the k most likely tokens (0: all)
  double top_p = 1.0;         // then the smallest set whose probability reaches p, in (0, 1]
  uint64_t seed = 0;          // of the sampler's generator: same seed, same tokens
};

struct GenerateOptions {
  int64_t max_new_tokens = 0;
  SamplingOptions sampling;
  std::optional<int32_t> eod;   // stop after generating this token
  bool kv_cache = true;         // false: every step recomputes the whole sequence (no reuse)
};

struct GenerateResult {
  std::vector<int32_t> tokens;     // generated ids (the EOD included when it stopped there)
  std::vector<double> logprobs;    // per token: log softmax of the step's logits over the real vocabulary, at the chosen id
  bool stopped_at_eod = false;
  std::vector<float> last_logits;  // [padded_vocab] logits of the last step
  double prefill_s = 0.0;          // the prompt's forward (wall time, seconds)
  double decode_s = 0.0;           // every later step
};

// Generates up to options.max_new_tokens after `prompt` (sampling only among real tokens,
// ids < vocab_size()). UserError when the prompt is empty, holds an id outside the vocabulary, or
// prompt + max_new_tokens exceeds max_positions().
GenerateResult generate(KvCacheDecoder& decoder, std::span<const int32_t> prompt, const GenerateOptions& options);

// Draws token ids from logits: temperature, then top-k, then top-p (nucleus), then a draw from
// the renormalised distribution with a 64-bit Mersenne Twister seeded by `seed` (one uniform per
// draw, 53-bit mantissa). Greedy at temperature 0: the lowest id among the maxima.
class TokenSampler {
 public:
  explicit TokenSampler(const SamplingOptions& options);
  int32_t pick(std::span<const float> logits);   // logits [vocab] of the candidate ids 0..vocab-1

 private:
  SamplingOptions options_;
  std::mt19937_64 engine_;
};

}  // namespace tandem::cpu
