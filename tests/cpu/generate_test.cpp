// KV-cached decoding (backends/cpu/generate.h) on random weights: cached steps equal a full
// recomputation, prefill in pieces equals prefill at once, EOD stops, the sampler's top-k /
// top-p / temperature draw the distributions they promise, bad weights and prompts are named.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "backends/cpu/generate.h"
#include "backends/cpu/ops_gemm.h"
#include "core/check.h"

namespace tandem::cpu {
namespace {

ModelConfig llama_like() {
  ModelConfig m;
  m.num_layers = 3;
  m.hidden_size = 48;
  m.num_attention_heads = 6;
  m.num_query_groups = 2;
  m.kv_channels = 8;
  m.ffn_hidden_size = 40;
  m.seq_length = 24;
  m.max_position_embeddings = 24;
  m.vocab_size = 50;
  m.padded_vocab_size = 64;
  m.swiglu = true;
  m.normalization = Normalization::RMSNorm;
  m.position_embedding = PositionEmbedding::Rope;
  m.untie_embeddings_and_output_weights = true;
  m.add_bias_linear = false;
  return m;
}

ModelConfig gpt_like() {
  ModelConfig m = llama_like();
  m.num_query_groups = 6;
  m.swiglu = false;
  m.normalization = Normalization::LayerNorm;
  m.position_embedding = PositionEmbedding::LearnedAbsolute;
  m.untie_embeddings_and_output_weights = false;
  m.add_bias_linear = true;
  return m;
}

// Every tensor the model needs, normal(0, 0.3) (norm gains around 1), by tandem name.
WeightMap random_weights(const ModelConfig& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  WeightMap w;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, float offset = 0.0f) {
    exec::CheckpointTensor t{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
    for (float& x : t.value) x = offset + normal(rng);
    w[name] = std::move(t);
  };
  const int64_t h = m.hidden_size, d = m.kv_channels, qkv = (m.num_attention_heads + 2 * m.num_query_groups) * d;
  const int64_t fc1 = (m.swiglu ? 2 : 1) * m.ffn_hidden_size;
  const bool ln = m.normalization == Normalization::LayerNorm, bias = m.add_bias_linear;
  add("embedding.word", m.padded_vocab_size, h);
  if (m.position_embedding == PositionEmbedding::LearnedAbsolute) add("embedding.position", m.max_position_embeddings, h);
  for (int64_t i = 0; i < m.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (const char* n : {"input_norm", "pre_mlp_norm"}) {
      add(p + n + ".weight", 1, h, 1.0f);
      if (ln) add(p + n + ".bias", 1, h);
    }
    add(p + "qkv.weight", h, qkv);
    add(p + "proj.weight", m.num_attention_heads * d, h);
    add(p + "fc1.weight", h, fc1);
    add(p + "fc2.weight", m.ffn_hidden_size, h);
    if (bias) {
      add(p + "qkv.bias", 1, qkv);
      add(p + "proj.bias", 1, h);
      add(p + "fc1.bias", 1, fc1);
      add(p + "fc2.bias", 1, h);
    }
  }
  add("final_norm.weight", 1, h, 1.0f);
  if (ln) add("final_norm.bias", 1, h);
  if (m.untie_embeddings_and_output_weights) add("output.weight", m.padded_vocab_size, h);
  return w;
}

double max_relative(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

class Decoders : public ::testing::TestWithParam<bool> {
 protected:
  ModelConfig model() const { return GetParam() ? gpt_like() : llama_like(); }
};

// Each cached step's logits equal those of the whole sequence run from an empty cache.
TEST_P(Decoders, CachedStepsEqualFullRecomputation) {
  const ModelConfig m = model();
  KvCacheDecoder cached(m, random_weights(m, 1)), full(m, random_weights(m, 1));
  std::vector<int32_t> seq = {3, 17, 42, 8, 0};
  cached.reset(m.max_position_embeddings);
  std::vector<float> logits = cached.extend(seq);
  for (int step = 0; step < 12; ++step) {
    full.reset(m.max_position_embeddings);
    EXPECT_LT(max_relative(logits, full.extend(seq)), 1e-5) << "step " << step;
    const int32_t next = static_cast<int32_t>((step * 7 + 5) % m.vocab_size);
    seq.push_back(next);
    logits = cached.extend(std::span<const int32_t>(&seq.back(), 1));
  }
  EXPECT_EQ(cached.cached(), static_cast<int64_t>(seq.size()));
}

// A prompt fed in pieces leaves the caches as one prefill does.
TEST_P(Decoders, PrefillInPiecesEqualsPrefillAtOnce) {
  const ModelConfig m = model();
  KvCacheDecoder a(m, random_weights(m, 2)), b(m, random_weights(m, 2));
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  a.reset(16);
  b.reset(16);
  a.extend(std::span<const int32_t>(prompt).first(4));
  const std::vector<float> la = a.extend(std::span<const int32_t>(prompt).subspan(4));
  EXPECT_LT(max_relative(la, b.extend(prompt)), 1e-5);
}

TEST_P(Decoders, GreedyWithAndWithoutCacheAndEodStop) {
  const ModelConfig m = model();
  KvCacheDecoder dec(m, random_weights(m, 3));
  GenerateOptions o;
  o.max_new_tokens = 15;
  const std::vector<int32_t> prompt = {5, 9, 11};
  const GenerateResult with = generate(dec, prompt, o);
  o.kv_cache = false;
  const GenerateResult without = generate(dec, prompt, o);
  ASSERT_EQ(with.tokens.size(), 15u);
  EXPECT_EQ(with.tokens, without.tokens);
  EXPECT_LT(max_relative(with.last_logits, without.last_logits), 1e-5);
  for (size_t i = 0; i < with.tokens.size(); ++i) {
    EXPECT_LT(with.tokens[i], m.vocab_size);   // padded ids are never chosen
    EXPECT_LE(with.logprobs[i], 0.0);
    EXPECT_NEAR(with.logprobs[i], without.logprobs[i], 1e-5);
  }
  // Stopping at EOD: with the fourth token declared EOD, generation ends right after it.
  o.kv_cache = true;
  o.eod = with.tokens[3];
  const GenerateResult stopped = generate(dec, prompt, o);
  size_t first = 0;
  while (with.tokens[first] != *o.eod) ++first;
  EXPECT_TRUE(stopped.stopped_at_eod);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(with.tokens.begin(), with.tokens.begin() + first + 1));
}

INSTANTIATE_TEST_SUITE_P(Generate, Decoders, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "gpt" : "llama"; });

// Draw frequencies of the sampler against the distribution it promises.
std::vector<double> frequencies(const SamplingOptions& o, const std::vector<float>& logits, int draws) {
  TokenSampler s(o);
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) f[static_cast<size_t>(s.pick(logits))] += 1.0 / draws;
  return f;
}

TEST(TokenSampler, TemperatureTopKTopPDrawTheirDistributions) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 11;
  std::vector<double> f = frequencies(o, logits, 40000);
  EXPECT_NEAR(f[0], 0.5, 0.01);
  EXPECT_NEAR(f[1], 0.3, 0.01);
  EXPECT_NEAR(f[2], 0.2, 0.01);
  o.temperature = 2.0;   // p ~ sqrt(p): 0.4154, 0.3218, 0.2628
  f = frequencies(o, logits, 40000);
  EXPECT_NEAR(f[0], 0.4154, 0.01);
  EXPECT_NEAR(f[2], 0.2628, 0.01);
  o.temperature = 1.0;
  o.top_k = 2;   // renormalised over {0, 1}: 0.625, 0.375
  f = frequencies(o, logits, 40000);
  EXPECT_NEAR(f[0], 0.625, 0.01);
  EXPECT_EQ(f[2], 0.0);
  o.top_k = 0;
  o.top_p = 0.7;   // 0.5 < 0.7, so id 1 joins; 0.8 >= 0.7, so id 2 does not
  f = frequencies(o, logits, 40000);
  EXPECT_NEAR(f[1], 0.375, 0.01);
  EXPECT_EQ(f[2], 0.0);
  o.top_p = 1e-9;   // the nucleus is the single most likely id
  EXPECT_NEAR(frequencies(o, logits, 100)[0], 1.0, 1e-9);
}

TEST(TokenSampler, SameSeedSameDraws) {
  const std::vector<float> logits = {0.1f, 0.4f, -0.3f, 0.2f, 0.0f, 0.3f};
  SamplingOptions o;
  o.temperature = 1.0;
  o.seed = 5;
  TokenSampler a(o), b(o);
  o.seed = 6;
  TokenSampler c(o);
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t x = a.pick(logits);
    EXPECT_EQ(x, b.pick(logits));
    differ += x != c.pick(logits);
  }
  EXPECT_GT(differ, 50);
}

TEST(TokenSampler, GreedyTakesTheLowestIdAmongMaxima) {
  TokenSampler s(SamplingOptions{});
  EXPECT_EQ(s.pick(std::vector<float>{0.0f, 2.0f, 1.0f, 2.0f}), 1);
}

TEST(KvCacheDecoder, RefusesWhatItCannotRun) {
  ModelConfig m = llama_like();
  auto message = [](const ModelConfig& cfg, WeightMap w) {
    try {
      KvCacheDecoder d(cfg, std::move(w));
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  WeightMap w = random_weights(m, 4);
  w.erase("layers.1.fc2.weight");
  EXPECT_NE(message(m, w).find("layers.1.fc2.weight [40, 48] is missing"), std::string::npos);
  w = random_weights(m, 4);
  w["layers.0.qkv.weight"].cols -= 1;
  EXPECT_NE(message(m, w).find("layers.0.qkv.weight is [48, 79]"), std::string::npos);
  w = random_weights(m, 4);
  w["layers.0.qkv.bias"] = exec::CheckpointTensor{1, 80, std::vector<float>(80)};
  EXPECT_NE(message(m, w).find("layers.0.qkv.bias is present"), std::string::npos);
  ModelConfig moe = m;
  moe.num_experts = 4;
  EXPECT_NE(message(moe, random_weights(m, 4)).find("num_experts = 4"), std::string::npos);
  ModelConfig mla = m;
  mla.multi_latent_attention = true;
  EXPECT_NE(message(mla, random_weights(m, 4)).find("multi_latent_attention"), std::string::npos);
}

TEST(Generate, RefusesPromptsBeyondTheModel) {
  const ModelConfig m = llama_like();
  KvCacheDecoder dec(m, random_weights(m, 5));
  GenerateOptions o;
  o.max_new_tokens = 4;
  auto message = [&](std::vector<int32_t> prompt) {
    try {
      generate(dec, prompt, o);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(std::vector<int32_t>(25, 1)).find("prompt: 25 tokens, more than the model's 24"), std::string::npos);
  EXPECT_NE(message(std::vector<int32_t>(21, 1)).find("--max-new-tokens = 4"), std::string::npos);
  EXPECT_NE(message({1, 50}).find("token id 50 at offset 1"), std::string::npos);   // a padding id
  EXPECT_NE(message({}).find("prompt: empty"), std::string::npos);
}

// Decoding steps multiply one row by a weight: sgemm's one-row path (GEMV with OpenBLAS) equals
// Eigen's GEMM for every transpose, with strided rows, beta 0 over a NaN-poisoned output and beta 1.
TEST(Sgemm, OneRowEqualsEigen) {
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 37, k = 29, ld_pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        const int64_t lda = ta ? 1 + ld_pad : k + ld_pad, ldb = (tb ? k : n) + ld_pad;
        std::vector<float> a(static_cast<size_t>((ta ? k : 1) * lda)), b(static_cast<size_t>((tb ? n : k) * ldb));
        for (float& x : a) x = normal(rng);
        for (float& x : b) x = normal(rng);
        std::vector<float> c(static_cast<size_t>(n), beta == 0.0f ? std::nanf("") : 0.5f), ref(c);
        if (beta == 0.0f) std::fill(ref.begin(), ref.end(), 0.0f);
        sgemm(ta, tb, 1, n, k, 0.75f, a.data(), lda, b.data(), ldb, beta, c.data(), n);
        sgemm_eigen(ta, tb, 1, n, k, 0.75f, a.data(), lda, b.data(), ldb, beta, ref.data(), n);
        for (int64_t j = 0; j < n; ++j)
          EXPECT_NEAR(c[static_cast<size_t>(j)], ref[static_cast<size_t>(j)], 1e-4)
              << "trans_a " << ta << " trans_b " << tb << " beta " << beta << " column " << j;
      }
}

}  // namespace
}  // namespace tandem::cpu
