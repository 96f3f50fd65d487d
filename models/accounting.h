#pragma once
// Closed-form accounting of a transformer training job: parameters, FLOPs and memory per rank.
//
// Everything here is a pure function of a resolved Job (core/job_loader.h: resolve_job fills the
// derived fields). The formulas are exact counts of the tensors and matrix products that
// Megatron-LM builds, so that on GPT-style models they reduce to the published closed forms:
//   parameters   Narayanan et al. 2021 eq. (2)  P = 12·l·h²·(1 + 13/(12h) + (V+s)/(12·l·h))
//   model FLOPs  Korthikanti et al. 2022 eq. (7) 72·B·L·s·h²·(1 + s/(6h) + V/(12·h·L))
//   with selective recompute                 eq. (8) 72·B·L·s·h²·(1 + s/(3h) + V/(12·h·L))
//   with full recompute   Narayanan eq. (3)  96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))
//   activations  Korthikanti §4: 34·s·b·h + 5·a·s²·b bytes per layer (16-bit, no parallelism)
// Notation: s sequence, b micro-batch, h hidden, a heads, g query groups, d head dim, f MLP
// hidden, V padded vocabulary, L layers, t TP, p PP, v virtual stages, m microbatches.
//
// Files: param_count.cpp (parameters), flops.cpp (FLOPs), activations.cpp (bytes saved per
// layer), memory.cpp (per-rank totals), pipeline_layout.cpp (which layers a rank holds).
#include <cstdint>
#include <string>
#include <vector>

#include "core/job.h"

namespace tandem {

// ---------------------------------------------------------------------------------------------
// Parameters (element counts)

// One transformer layer's parameters, grouped by how Megatron shards them.
struct LayerParameters {
  int64_t attention = 0;        // QKV (or MLA) projections + output projection, with biases
  int64_t mlp = 0;              // dense MLP, or the shared expert(s) of an MoE layer
  int64_t norms = 0;            // normalization weights (+ LayerNorm biases), incl. MLA's latent norms
  int64_t router = 0;           // MoE router weight [E, h]
  int64_t experts = 0;          // all routed experts' MLPs
  int64_t active_experts = 0;   // the top-k routed experts one token passes through
  // Parameters every TP rank holds in full: norms, router, row-parallel biases, MLA down
  // projections. The rest of attention + mlp is split over TP; experts over EP x ETP.
  int64_t tp_replicated = 0;

  int64_t total() const { return attention + mlp + norms + router + experts; }
  int64_t dense() const { return attention + mlp + norms + router; }   // everything but routed experts
  int64_t active() const { return dense() + active_experts; }
};

struct ParameterCount {
  int64_t total = 0;              // every parameter once (a tied output layer is not counted twice), MTP included
  int64_t embedding = 0;          // word embedding [V, h] + learned positions [max_positions, h]
  int64_t output_layer = 0;       // untied output layer [V, h]; 0 when tied
  int64_t final_norm = 0;         // norm before the output layer
  LayerParameters dense_layer;    // one dense decoder layer (also computed for all-MoE models)
  LayerParameters moe_layer;      // one MoE decoder layer (zeros for dense models)
  int64_t num_dense_layers = 0;
  int64_t num_moe_layers = 0;
  int64_t decoder = 0;            // sum over the num_layers decoder layers
  int64_t mtp = 0;                // multi-token-prediction modules (norms, eh projection, layer); shares embedding/output
  int64_t active_per_token = 0;   // total minus the routed experts a token skips (MTP included)
  int64_t active_without_mtp = 0;

  int64_t without_mtp() const { return total - mtp; }
};

// Parameters of one decoder layer of `m` (moe: with the MoE MLP). Uses the resolved fields of
// `m` and falls back to Megatron's defaults for the ones left 0.
LayerParameters layer_parameters(const ModelConfig& m, bool moe);
ParameterCount parameter_count(const ModelConfig& m);

// True when decoder layer `layer` (0-based) has an MoE MLP. The MTP layer copies the last layer.
bool is_moe_layer(const ModelConfig& m, int64_t layer);

// ---------------------------------------------------------------------------------------------
// FLOPs (2 per multiply-accumulate; only matrix products are counted)

// Forward FLOPs of one sequence of model.seq_length tokens.
struct ForwardFlops {
  double attention_linear = 0;  // QKV / MLA projections + output projection
  double attention_core = 0;    // QK^T and softmax·V over the full s x s square (as in the papers)
  double mlp = 0;               // dense MLPs and shared experts
  double router = 0;            // MoE router logits
  double experts = 0;           // routed experts, top-k per token
  double logits = 0;            // output layer [h] x [h, V] per token
  double mtp = 0;               // MTP modules: eh projection, layer and their own logits

  double layers() const { return attention_linear + attention_core + mlp + router + experts; }
  double total() const { return layers() + logits + mtp; }
};

// Forward FLOPs of one decoder layer for one sequence of length seq.
ForwardFlops layer_forward_flops(const ModelConfig& m, bool moe, int64_t seq);
ForwardFlops forward_flops_per_sequence(const ModelConfig& m);

struct IterationFlops {
  double model = 0;         // forward + backward (2x forward) of the global batch, no recompute: MFU numerator
  double hardware = 0;      // model + recompute: HFU numerator
  double recompute = 0;     // hardware - model
  ForwardFlops forward;     // one forward pass of the whole global batch
};

// Recompute accounting:
//  - full: one extra forward of every recomputed decoder layer (uniform: all layers, MTP layer
//    included; block: recompute_num_layers per model chunk). Logits are not recomputed.
//    This is Narayanan eq. (3).
//  - selective: the attention core (QK^T, softmax·V) is recomputed. Following Korthikanti
//    eq. (8), which doubles the s/(6h) term, the recomputed core is counted with its forward and
//    backward FLOPs (3x its forward); a literal replay of the core's forward alone is 1/3 of that.
IterationFlops flops_per_iteration(const Job& job);

// ---------------------------------------------------------------------------------------------
// Memory

// Bytes per parameter a rank keeps for its weights, its gradient buffer and (unsharded) optimizer
// state, by training dtype: bf16 {2, 4, 12} (fp32 main gradients; fp32 master weights and two
// moments), bf16 with --grad-reduce-in-bf16 {2, 2, 12} (the optimizer makes fp32 copies of its
// gradient shard at the step, not kept), fp16 {2, 2, 16}, fp32 {4, 4, 8}. The program's
// persistent buffers and memory_per_rank both use it.
struct BytesPerParameter {
  double weights = 0, gradients = 0, optimizer = 0;
};
BytesPerParameter bytes_per_parameter(const TrainingConfig& training);

// What the saved activations depend on beyond shapes. Defaults reproduce Korthikanti et al.
// 2022 (dropout, no flash attention); memory_options_for(job) reads them from the job.
struct MemoryOptions {
  bool attention_dropout = true;  // dropout on attention probabilities (mask + output saved)
  bool hidden_dropout = true;     // dropout after attention/MLP and on embeddings (1-byte masks)
  bool flash_attention = false;   // fused attention: no s x s tensors saved, an fp32 row statistic instead
  // FP8 training with Transformer Engine: a linear layer saves the FP8 (1-byte) cast of its input
  // for the weight gradient instead of the 16-bit tensor (models/activations.cpp lists which).
  bool fp8_linear_inputs = false;
};

// From the job: attention_backend (auto/flash/fused: flash attention), dropout probabilities > 0.
MemoryOptions memory_options_for(const Job& job);

// Which decoder layers one pipeline rank holds: chunks[c] = global layer indices of its model
// chunk c (virtual stage c·p + r). Even split, or first/last virtual stage sizes from
// decoder_first/last_pipeline_num_layers with the rest spread evenly (earlier stages take the
// remainder). The MTP block sits on the last rank's last chunk.
struct RankLayers {
  int64_t pipeline_rank = 0;
  std::vector<std::vector<int64_t>> chunks;
  bool has_embedding = false;     // first rank: word/position embeddings (chunk 0)
  bool has_output_layer = false;  // last rank: final norm + output layer (+ MTP)
  bool has_mtp = false;
  int64_t num_layers() const;
};
std::vector<RankLayers> pipeline_layout(const Job& job);

// Bytes one rank keeps from the forward to the backward pass of one microbatch for one decoder
// layer (Korthikanti §4.1-4.2 generalised to GQA, SwiGLU, MoE, MLA and CP), for the given
// recompute granularity (full: only the layer input). 16-bit training with dropout:
//   no parallelism       34·s·b·h + 5·a·s²·b
//   TP                   s·b·h·(10 + 24/t + 5·a·s/(h·t))
//   TP + SP              s·b·h·(34/t + 5·a·s/(h·t))
//   TP + SP + selective  34·s·b·h/t
//   full recompute       2·s·b·h/t (with SP)
double activation_bytes_per_layer(const Job& job, bool moe_layer, RecomputeGranularity granularity,
                                  const MemoryOptions& options = {});
// Same, with the job's own recompute granularity.
double activation_bytes_per_layer(const Job& job, bool moe_layer, const MemoryOptions& options = {});

// Memory of one rank of one pipeline stage. Ranks that share the pipeline coordinate hold the
// same amounts (TP/CP/EP/DP shards are equal in size).
struct StageMemory {
  int64_t pipeline_rank = 0;
  int64_t num_layers = 0;                 // decoder layers held (all chunks)
  double dense_parameters = 0;            // elements on this rank: embeddings, attention, dense MLPs, norms, router
  double expert_parameters = 0;           // elements on this rank: routed experts (already / (EP x ETP))
  double in_flight_microbatches = 0;      // microbatches (chunk-microbatches / v with interleaving) held at the peak
  double weights_bytes = 0;
  double gradients_bytes = 0;
  double optimizer_bytes = 0;             // fp32 master weights + Adam moments (+ fp32 grad copy with fp16)
  double activations_bytes = 0;           // saved activations at the 1F1B peak + recompute working set
  double total_bytes = 0;
  double weights_gib = 0, gradients_gib = 0, optimizer_gib = 0, activations_gib = 0, total_gib = 0;
};

struct MemoryEstimate {
  std::vector<StageMemory> stages;        // index = pipeline rank
  const StageMemory& peak() const;        // the stage with the largest total
  double peak_gib() const { return peak().total_gib; }
};

// Mixed precision as in Megatron's distributed-optimizer table (bytes per parameter):
//   bf16 params, fp32 grads   weights 2, grads 4, optimizer 12 (master 4 + Adam m 4 + v 4)  = 18
//   fp16 params, fp16 grads   weights 2, grads 2, optimizer 16 (+ fp32 grad copy 4)         = 20
//   fp32                      weights 4, grads 4, optimizer 8                               = 16
// With use_distributed_optimizer the optimizer part is divided by DP x CP (dense parameters)
// or by the expert data-parallel size world / (PP x EP x ETP) (routed experts).
MemoryEstimate memory_per_rank(const Job& job, const MemoryOptions& options = {});

inline constexpr double kBytesPerGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace tandem
