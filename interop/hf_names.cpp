// The name and layout table between tandem and Hugging Face (hf_names.h).
#include "interop/hf_names.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace tandem::interop {
namespace {

// Columns of tandem's fused QKV [h, (a + 2g) d] holding query head i (kind 0), or the key (1) /
// value (2) of group i, each d wide.
std::vector<int64_t> qkv_cols(const HfArch& a, int kind) {
  const int64_t qpg = a.heads / a.kv_heads, d = a.head_dim, group = (qpg + 2) * d;
  std::vector<int64_t> cols;
  const int64_t count = kind == 0 ? a.heads : a.kv_heads;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t start = kind == 0 ? (i / qpg) * group + (i % qpg) * d : (i * group + (qpg + kind - 1) * d);
    for (int64_t e = 0; e < d; ++e) cols.push_back(start + e);
  }
  return cols;
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v(static_cast<size_t>(end - begin));
  std::iota(v.begin(), v.end(), begin);
  return v;
}

std::vector<HfPiece> llama_pieces(const HfArch& a) {
  const int64_t h = a.hidden, d = a.head_dim, f = a.ffn;
  std::vector<HfPiece> p;
  p.push_back({"model.embed_tokens.weight", {a.vocab, h}, "embedding.word", {}, false});
  for (int64_t l = 0; l < a.layers; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".", t = "layers." + std::to_string(l) + ".";
    p.push_back({hf + "self_attn.q_proj.weight", {a.heads * d, h}, t + "qkv.weight", qkv_cols(a, 0), true});
    p.push_back({hf + "self_attn.k_proj.weight", {a.kv_heads * d, h}, t + "qkv.weight", qkv_cols(a, 1), true});
    p.push_back({hf + "self_attn.v_proj.weight", {a.kv_heads * d, h}, t + "qkv.weight", qkv_cols(a, 2), true});
    p.push_back({hf + "self_attn.o_proj.weight", {h, a.heads * d}, t + "proj.weight", {}, true});
    p.push_back({hf + "mlp.gate_proj.weight", {f, h}, t + "fc1.weight", range(0, f), true});
    p.push_back({hf + "mlp.up_proj.weight", {f, h}, t + "fc1.weight", range(f, 2 * f), true});
    p.push_back({hf + "mlp.down_proj.weight", {h, f}, t + "fc2.weight", {}, true});
    p.push_back({hf + "input_layernorm.weight", {h}, t + "input_norm.weight", {}, false});
    p.push_back({hf + "post_attention_layernorm.weight", {h}, t + "pre_mlp_norm.weight", {}, false});
  }
  p.push_back({"model.norm.weight", {h}, "final_norm.weight", {}, false});
  if (!a.tied) p.push_back({"lm_head.weight", {a.vocab, h}, "output.weight", {}, false});
  return p;
}

std::vector<HfPiece> gpt2_pieces(const HfArch& a) {
  const int64_t h = a.hidden, f = a.ffn;
  std::vector<int64_t> qkv = qkv_cols(a, 0);
  for (int kind : {1, 2}) {
    const std::vector<int64_t> more = qkv_cols(a, kind);
    qkv.insert(qkv.end(), more.begin(), more.end());
  }
  std::vector<HfPiece> p;
  p.push_back({"transformer.wte.weight", {a.vocab, h}, "embedding.word", {}, false});
  p.push_back({"transformer.wpe.weight", {a.positions, h}, "embedding.position", {}, false});
  for (int64_t l = 0; l < a.layers; ++l) {
    const std::string hf = "transformer.h." + std::to_string(l) + ".", t = "layers." + std::to_string(l) + ".";
    p.push_back({hf + "ln_1.weight", {h}, t + "input_norm.weight", {}, false});
    p.push_back({hf + "ln_1.bias", {h}, t + "input_norm.bias", {}, false});
    p.push_back({hf + "attn.c_attn.weight", {h, 3 * h}, t + "qkv.weight", qkv, false});
    p.push_back({hf + "attn.c_attn.bias", {3 * h}, t + "qkv.bias", qkv, false});
    p.push_back({hf + "attn.c_proj.weight", {h, h}, t + "proj.weight", {}, false});
    p.push_back({hf + "attn.c_proj.bias", {h}, t + "proj.bias", {}, false});
    p.push_back({hf + "ln_2.weight", {h}, t + "pre_mlp_norm.weight", {}, false});
    p.push_back({hf + "ln_2.bias", {h}, t + "pre_mlp_norm.bias", {}, false});
    p.push_back({hf + "mlp.c_fc.weight", {h, f}, t + "fc1.weight", {}, false});
    p.push_back({hf + "mlp.c_fc.bias", {f}, t + "fc1.bias", {}, false});
    p.push_back({hf + "mlp.c_proj.weight", {f, h}, t + "fc2.weight", {}, false});
    p.push_back({hf + "mlp.c_proj.bias", {h}, t + "fc2.bias", {}, false});
  }
  p.push_back({"transformer.ln_f.weight", {h}, "final_norm.weight", {}, false});
  p.push_back({"transformer.ln_f.bias", {h}, "final_norm.bias", {}, false});
  if (!a.tied) p.push_back({"lm_head.weight", {a.vocab, h}, "output.weight", {}, false});
  return p;
}

}  // namespace

std::vector<HfPiece> hf_pieces(const HfArch& arch) {
  return arch.family == HfFamily::Llama ? llama_pieces(arch) : gpt2_pieces(arch);
}

std::vector<TandemShape> tandem_shapes(const HfArch& a) {
  const int64_t h = a.hidden, qkv = (a.heads + 2 * a.kv_heads) * a.head_dim;
  const bool gpt = a.family == HfFamily::Gpt2;
  const int64_t fc1 = gpt ? a.ffn : 2 * a.ffn;
  std::vector<TandemShape> s = {{"embedding.word", a.vocab, h}};
  if (gpt) s.push_back({"embedding.position", a.positions, h});
  auto norm = [&](const std::string& name) {
    s.push_back({name + ".weight", 1, h});
    if (gpt) s.push_back({name + ".bias", 1, h});
  };
  for (int64_t l = 0; l < a.layers; ++l) {
    const std::string t = "layers." + std::to_string(l) + ".";
    norm(t + "input_norm");
    s.push_back({t + "qkv.weight", h, qkv});
    if (gpt) s.push_back({t + "qkv.bias", 1, qkv});
    s.push_back({t + "proj.weight", a.heads * a.head_dim, h});
    if (gpt) s.push_back({t + "proj.bias", 1, h});
    norm(t + "pre_mlp_norm");
    s.push_back({t + "fc1.weight", h, fc1});
    if (gpt) s.push_back({t + "fc1.bias", 1, fc1});
    s.push_back({t + "fc2.weight", a.ffn, h});
    if (gpt) s.push_back({t + "fc2.bias", 1, h});
  }
  norm("final_norm");
  if (!a.tied) s.push_back({"output.weight", a.vocab, h});
  return s;
}

std::vector<float> piece_from_tandem(const HfPiece& piece, const exec::CheckpointTensor& t) {
  if (piece.cols.empty() && !piece.transpose) return t.value;
  const int64_t rows = t.rows, k = piece.cols.empty() ? t.cols : static_cast<int64_t>(piece.cols.size());
  std::vector<float> out(static_cast<size_t>(rows * k));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = piece.cols.empty() ? j : piece.cols[static_cast<size_t>(j)];
      const float v = t.value[static_cast<size_t>(r * t.cols + c)];
      out[static_cast<size_t>(piece.transpose ? j * rows + r : r * k + j)] = v;
    }
  return out;
}

void piece_into_tandem(const HfPiece& piece, std::vector<float> values, exec::CheckpointTensor& t) {
  const int64_t rows = t.rows, k = piece.cols.empty() ? t.cols : static_cast<int64_t>(piece.cols.size());
  TANDEM_CHECK(static_cast<int64_t>(values.size()) == rows * k);
  if (piece.cols.empty() && !piece.transpose) {
    t.value = std::move(values);
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = piece.cols.empty() ? j : piece.cols[static_cast<size_t>(j)];
      t.value[static_cast<size_t>(r * t.cols + c)] = values[static_cast<size_t>(piece.transpose ? j * rows + r : r * k + j)];
    }
}

}  // namespace tandem::interop
