#pragma once
// tandem's tensors <-> Hugging Face's, for the two families of hf_arch.h. One table (hf_pieces)
// drives both directions, so export and import are inverse by construction.
//
// tandem (backends/executor/param_store.h), full tensors [rows, cols], weights [in, out]:
//   embedding.word [V, h], embedding.position [P, h], output.weight [V, h]
//   layers.L.qkv.weight [h, (a + 2g) d]: columns in query groups, group k = [q heads of k | k_k | v_k]
//     (Megatron's interleaved layout, qpg = a / g query heads per group), .bias [1, (a + 2g) d]
//   layers.L.proj.weight [a d, h] (+ .bias [1, h]), layers.L.fc1.weight [h, f] or SwiGLU [h, 2f] as
//   [gate | up] (+ .bias), layers.L.fc2.weight [f, h] (+ .bias), norms *.weight / *.bias [1, h]
// LlamaForCausalLM (nn.Linear weights are [out, in]):
//   model.embed_tokens.weight [V, h]; model.layers.L.self_attn.{q,k,v,o}_proj.weight [a d, h] [g d, h]
//   [g d, h] [h, a d]; mlp.{gate,up,down}_proj.weight [f, h] [f, h] [h, f]; input_layernorm.weight,
//   post_attention_layernorm.weight [h]; model.norm.weight [h]; lm_head.weight [V, h] when untied.
//   RoPE: HF's rotate_half is tandem's convention (kernel_math/rope_math.h), so q/k need no permutation.
// GPT2LMHeadModel (Conv1D weights are [in, out], tandem's own orientation):
//   transformer.wte.weight [V, h], transformer.wpe.weight [P, h]; transformer.h.L.ln_1.{weight,bias},
//   attn.c_attn.{weight [h, 3h], bias [3h]} as [all q | all k | all v], attn.c_proj.{weight [h, h], bias},
//   ln_2, mlp.c_fc.{weight [h, f], bias [f]}, mlp.c_proj.{weight [f, h], bias [h]};
//   transformer.ln_f.{weight,bias}; lm_head.weight [V, h] only when untied.
#include <cstdint>
#include <string>
#include <vector>

#include "backends/executor/checkpoint.h"
#include "interop/hf_arch.h"
#include "interop/safetensors.h"

namespace tandem::interop {

// A tandem tensor the model has: [rows, cols] (1-D tensors are [1, cols]).
struct TandemShape {
  std::string name;
  int64_t rows = 1, cols = 1;
};

// One HF tensor = columns `cols` (all when empty) of tandem tensor `tandem_name`, transposed or not.
struct HfPiece {
  std::string hf_name;
  std::vector<int64_t> hf_shape;
  std::string tandem_name;
  std::vector<int64_t> cols;
  bool transpose = false;
};

// In model order (Hugging Face's state_dict order): the order of shards when export splits them.
std::vector<HfPiece> hf_pieces(const HfArch& arch);
std::vector<TandemShape> tandem_shapes(const HfArch& arch);

// The HF tensor of `piece` (numel(hf_shape) values, row-major) from its tandem tensor.
std::vector<float> piece_from_tandem(const HfPiece& piece, const exec::CheckpointTensor& t);
// Writes the HF values of `piece` into their place in tandem tensor `t` (already sized).
void piece_into_tandem(const HfPiece& piece, std::vector<float> values, exec::CheckpointTensor& t);

}  // namespace tandem::interop
