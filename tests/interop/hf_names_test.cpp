// The tandem <-> Hugging Face table (interop/hf_names.h) and the families (interop/hf_arch.h).
#include "interop/hf_names.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/check.h"

namespace tandem::interop {
namespace {

HfArch llama(int64_t heads, int64_t kv, int64_t d, bool tied) {
  HfArch a;
  a.family = HfFamily::Llama;
  a.layers = 2;
  a.heads = heads;
  a.kv_heads = kv;
  a.head_dim = d;
  a.hidden = 8;
  a.ffn = 6;
  a.vocab = 10;
  a.positions = 4;
  a.tied = tied;
  return a;
}

HfArch gpt2(int64_t heads, int64_t d, bool tied) {
  HfArch a = llama(heads, heads, d, tied);
  a.family = HfFamily::Gpt2;
  a.hidden = heads * d;
  a.ffn = 4 * a.hidden;
  return a;
}

const HfPiece& piece(const std::vector<HfPiece>& pieces, const std::string& name) {
  for (const HfPiece& p : pieces)
    if (p.hf_name == name) return p;
  throw std::runtime_error("no piece " + name);
}

// Megatron's fused QKV, by hand: 4 query heads in 2 groups, head_dim 1, columns per group
// [q q k v]: group 0 = columns 0..3, group 1 = 4..7.
TEST(HfNames, LlamaSplitsMegatronQueryGroups) {
  const auto p = hf_pieces(llama(4, 2, 1, false));
  EXPECT_EQ(piece(p, "model.layers.1.self_attn.q_proj.weight").cols, (std::vector<int64_t>{0, 1, 4, 5}));
  EXPECT_EQ(piece(p, "model.layers.1.self_attn.k_proj.weight").cols, (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(piece(p, "model.layers.1.self_attn.v_proj.weight").cols, (std::vector<int64_t>{3, 7}));
  EXPECT_TRUE(piece(p, "model.layers.1.self_attn.q_proj.weight").transpose);   // nn.Linear [out, in]
  EXPECT_EQ(piece(p, "model.layers.0.mlp.gate_proj.weight").cols.front(), 0);    // fc1 = [gate | up]
  EXPECT_EQ(piece(p, "model.layers.0.mlp.up_proj.weight").cols.front(), 6);
  EXPECT_EQ(piece(p, "lm_head.weight").tandem_name, "output.weight");
}

// GPT-2, 2 heads of 2: tandem's [q0 k0 v0 | q1 k1 v1] (2 columns each) becomes c_attn's
// [q0 q1 | k0 k1 | v0 v1]; Conv1D keeps [in, out].
TEST(HfNames, Gpt2RegroupsQkvIntoCAttn) {
  const auto p = hf_pieces(gpt2(2, 2, true));
  const HfPiece& w = piece(p, "transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ(w.cols, (std::vector<int64_t>{0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11}));
  EXPECT_FALSE(w.transpose);
  EXPECT_EQ(piece(p, "transformer.h.0.attn.c_attn.bias").cols, w.cols);
  for (const HfPiece& q : p) EXPECT_NE(q.hf_name, "lm_head.weight");   // tied: HF re-ties it
}

// Export then import gives back every tandem tensor, and the pieces cover each element once.
TEST(HfNames, PiecesCoverEveryTensorExactlyOnce) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (const HfArch& a : {llama(4, 2, 2, false), llama(4, 4, 2, true), llama(4, 1, 3, false), gpt2(2, 4, true),
                          gpt2(4, 2, false)}) {
    std::map<std::string, exec::CheckpointTensor> tandem, back;
    for (const TandemShape& s : tandem_shapes(a)) {
      exec::CheckpointTensor& t = tandem[s.name];
      t.rows = s.rows;
      t.cols = s.cols;
      for (int64_t i = 0; i < s.rows * s.cols; ++i) t.value.push_back(normal(rng));
      back[s.name] = {s.rows, s.cols, std::vector<float>(t.value.size(), std::nanf(""))};
    }
    std::map<std::string, int64_t> written;
    std::set<std::string> hf_names;
    for (const HfPiece& p : hf_pieces(a)) {
      EXPECT_TRUE(hf_names.insert(p.hf_name).second) << p.hf_name;
      std::vector<float> v = piece_from_tandem(p, tandem.at(p.tandem_name));
      int64_t numel = 1;
      for (int64_t d : p.hf_shape) numel *= d;
      ASSERT_EQ(static_cast<int64_t>(v.size()), numel) << p.hf_name;
      written[p.tandem_name] += numel;
      piece_into_tandem(p, std::move(v), back.at(p.tandem_name));
    }
    for (const auto& [name, t] : tandem) {
      EXPECT_EQ(written[name], t.rows * t.cols) << name;   // with equality below: each element once
      EXPECT_EQ(back.at(name).value, t.value) << name;
    }
  }
}

TEST(HfArch, FamiliesFromJobsAndRefusals) {
  Job job;
  ModelConfig& m = job.model;
  m.num_layers = 2;
  m.hidden_size = 8;
  m.num_attention_heads = 2;
  m.seq_length = 4;
  EXPECT_EQ(arch_from_job(job, 16, "ck").family, HfFamily::Gpt2);   // Megatron's defaults: GPT
  m.normalization = Normalization::RMSNorm;
  EXPECT_THROW(arch_from_job(job, 16, "ck"), UserError);           // RMSNorm + learned positions
  m.position_embedding = PositionEmbedding::Rope;
  m.swiglu = true;
  m.add_bias_linear = false;
  m.ffn_hidden_size = 12;
  const HfArch a = arch_from_job(job, 16, "ck");
  EXPECT_EQ(a.family, HfFamily::Llama);
  EXPECT_EQ(a.ffn, 12);
  EXPECT_EQ(a.vocab, 16);
  m.num_experts = 4;
  try {
    arch_from_job(job, 16, "ck");
    FAIL() << "MoE exported";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts = 4"), std::string::npos) << e.what();
  }
}

TEST(HfArch, ConfigRoundTrip) {
  for (const HfArch& a : {llama(4, 2, 2, false), gpt2(2, 4, true)}) {
    const HfArch b = arch_from_config(config_json(a, "float32"), "config.json");
    EXPECT_EQ(config_json(b, "float32"), config_json(a, "float32"));
  }
}

}  // namespace
}  // namespace tandem::interop
