#pragma once
// program/'s public face for backends: the model layout a runner needs, without the lowering's
// internals (lower_context.h is private to program/).
//
//   Dims              sizes of one microbatch as a rank sees them (lower_rank uses the same)
//   ParamSlot, ParamTensor, param_key
//                     the parameter tensors of a rank, keyed as the program's instructions name them
//   Bucket            data-parallel gradient buckets, in communication order
//   rank_parameters() a rank's tensors, buckets and mirrored stages per chunk, computed by the
//                     same context set-up as lower_rank (program/lower_rank.cpp)
#include <cstdint>
#include <vector>

#include "core/job.h"
#include "core/parallel_grid.h"
#include "core/schedule.h"

namespace tandem::lower {

// Sizes of one microbatch as this rank sees them. Element counts unless noted.
struct Dims {
  int64_t b = 1;             // micro-batch (sequences)
  int64_t s = 0;             // sequence length
  int64_t cp = 1, t = 1;     // context- and tensor-parallel sizes
  int64_t r = 1;             // divisor of sequence-parallel tensors: t with SP, else 1
  int64_t n = 0;             // local tokens s/cp * b: rows of every GEMM inside a layer
  int64_t h = 0, a = 0, g = 0, d = 0, f = 0;
  int64_t heads = 0;         // a / t query heads on this rank
  int64_t kv_heads = 0;      // g / t (at least 1) key/value heads on this rank
  int64_t vocab = 0;         // padded vocabulary V
  int64_t positions = 0;     // learned position rows (0 without learned positions)
  int64_t e = 2;             // bytes per element of activations/weights
  DType dtype = DType::BF16;
  int norm_factor = 1;       // 2 LayerNorm (weight + bias), 1 RMSNorm
  bool sp = false, gated = false, bias = false, qkv_bias = false, rope = false;
  bool flash = true, attention_dropout = false, hidden_dropout = false, tied = true;
  // Multi-latent attention.
  bool mla = false;
  int64_t q_lora = 0, kv_lora = 0, d_nope = 0, d_rope = 0, d_v = 0;
  // MoE.
  int64_t experts = 0, topk = 0, f_moe = 0, f_shared = 0, ep = 1, etp = 1;
  TokenDispatcher dispatcher = TokenDispatcher::AllToAll;
  // Model.
  int64_t layers = 0, mtp_layers = 0;

  int64_t qk_head_dim() const { return mla ? d_nope + d_rope : d; }
  int64_t v_head_dim() const { return mla ? d_v : d; }
  int64_t sp_rows() const { return n / r; }   // rows of a sequence-parallel shard
  int64_t mlp_fc1_cols(int64_t ffn) const { return (gated ? 2 : 1) * ffn; }
};

Dims dims_for_job(const Job& job, const ParallelGrid& grid);

// Identifies one parameter tensor of this rank: (layer key, slot). Layer key is the global
// layer (MTP layers after the decoder layers) or one of the model-level keys below.
enum class ParamSlot : int {
  InputNorm, Qkv, QDown, QNorm, QUp, KvDown, KvNorm, KvUp, Proj, PreMlpNorm, Fc1, Fc2,
  Router, ExpertFc1, ExpertFc2, SharedFc1, SharedFc2,
  WordEmbedding, Positions, FinalNorm, Output, MtpNorms, MtpProj, Count
};
inline constexpr int32_t kModelLayerKey = -1;   // embedding, final norm, output layer
inline int64_t param_key(int32_t layer, ParamSlot slot) {
  return (int64_t(layer) + 2) * int64_t(ParamSlot::Count) + int64_t(slot);
}

// One parameter tensor of this rank.
struct ParamTensor {
  int64_t key = 0;
  int32_t layer = -1;
  ParamSlot slot = ParamSlot::InputNorm;
  double elements = 0;       // on this rank
  bool expert = false;       // routed experts: expert-DP group, expert optimizer sharding
  bool tp_replicated = false;
  bool shared_embedding = false;   // word embedding / tied output copy (own bucket with dist-opt)
  int32_t gate = 0;                // Emitter::param_gate key of its first use in the forward
};

// One data-parallel gradient bucket: the tensors (param_key) it holds, in order.
struct Bucket {
  bool expert = false;
  double elements = 0;
  std::vector<int64_t> keys;
};

// The parameters of one rank, chunk by chunk (a chunk is a local model chunk: a virtual stage).
struct RankParameters {
  Dims dims;
  int pipeline_rank = 0;
  std::vector<std::vector<ParamTensor>> tensors;   // [chunk] in Megatron's registration order
  std::vector<std::vector<Bucket>> buckets;         // [chunk] DP buckets, communication order, dense first
  std::vector<int> mirror_pipeline_rank;            // [chunk] the other rank holding its stage (DualPipe), or -1
};
RankParameters rank_parameters(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank);

}  // namespace tandem::lower
