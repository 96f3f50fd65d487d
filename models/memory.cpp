// Memory per rank (models/accounting.h: memory_per_rank).
//
// Weights, gradients and optimizer states follow the parameters a rank holds:
//   decoder layers of its chunks: TP-split part / t + TP-replicated part, routed experts / (EP x ETP)
//   first rank: word embedding [V, h] / t + learned positions [max_positions, h]
//   last rank: final norm, output layer [V, h] / t when untied; with PP > 1 a copy of the word
//     embedding when the output layer is tied to it or MTP needs it (Megatron keeps both copies
//     and all-reduces their gradients); MTP modules (eh projection [2h, h] / t, norms, one layer).
// Activations follow the pipeline schedule. A rank keeps the activations of every forward whose
// backward has not run yet. With 1F1B, rank r runs min(p - r, m) forwards before its first
// backward; with the interleaved schedule (Megatron's warmup with microbatch groups of p) rank r
// keeps 2·(p - r - 1) + (v - 1)·p + 1 chunk-microbatches, the k-th of them in chunk (k / p) mod v.
// For rank 0 that is L·(1 + (p - 1)/(p·v)) layers' worth: Korthikanti §4.2.3.
// The first rank adds the embedding dropout mask per in-flight microbatch of chunk 0; the last
// rank adds the output layer's saved tensors for one microbatch (final-norm input and output-layer
// input [n, h] / r, fp32 logits [n, V] / t) and the MTP modules'. Full recompute adds the working
// set of one recompute group, replayed in full during the backward.
#include <algorithm>

#include "core/check.h"
#include "models/accounting.h"
#include "models/model_dims.h"

namespace tandem {
namespace {

using detail::ModelDims;

struct RankParameters {
  double dense = 0;    // elements on one rank, sharded over TP where Megatron shards them
  double expert = 0;   // routed-expert elements on one rank
};

void add_layer_share(const LayerParameters& lp, double t, double ep_etp, RankParameters& rp) {
  rp.dense += double(lp.dense() - lp.tp_replicated) / t + double(lp.tp_replicated);
  rp.expert += double(lp.experts) / ep_etp;
}

RankParameters rank_parameters(const Job& job, const RankLayers& rank, const ParameterCount& pc) {
  const ModelConfig& m = job.model;
  const ModelDims x = detail::model_dims(m);
  const auto& par = job.parallel;
  const double t = double(std::max<int64_t>(1, par.tensor_model_parallel_size));
  const double etp = double(par.expert_tensor_parallel_size > 0 ? par.expert_tensor_parallel_size
                                                                : par.tensor_model_parallel_size);
  const double ep_etp = double(std::max<int64_t>(1, par.expert_model_parallel_size)) * etp;
  const double word = double(x.vocab) * double(x.h) / t;
  RankParameters rp;
  for (const auto& chunk : rank.chunks)
    for (int64_t l : chunk) add_layer_share(is_moe_layer(m, l) ? pc.moe_layer : pc.dense_layer, t, ep_etp, rp);
  if (rank.has_embedding) rp.dense += word + double(x.positions) * double(x.h);
  if (!rank.has_output_layer) return rp;
  rp.dense += double(pc.final_norm);
  if (m.untie_embeddings_and_output_weights) rp.dense += word;
  const bool needs_word_copy = !rank.has_embedding && (!m.untie_embeddings_and_output_weights || rank.has_mtp);
  if (needs_word_copy) rp.dense += word;
  if (rank.has_mtp) {
    const LayerParameters& lp = is_moe_layer(m, x.layers - 1) ? pc.moe_layer : pc.dense_layer;
    for (int64_t i = 0; i < m.mtp_num_layers; ++i) {
      rp.dense += 3.0 * double(x.norm_params) + 2.0 * double(x.h) * double(x.h) / t;
      add_layer_share(lp, t, ep_etp, rp);
    }
  }
  return rp;
}

// Chunk index of each chunk-microbatch whose activations rank r holds at its peak.
std::vector<int64_t> in_flight_chunks(const Job& job, int64_t r) {
  const auto& par = job.parallel;
  const int64_t p = std::max<int64_t>(1, par.pipeline_model_parallel_size);
  const int64_t v = std::max<int64_t>(1, par.virtual_pipeline_model_parallel_size);
  const int64_t m = std::max<int64_t>(1, job.training.num_microbatches);
  int64_t units = 0;
  if (v > 1) units = std::min((p - r - 1) * 2 + (v - 1) * p + 1, m * v);
  else if (par.pipeline_schedule == "gpipe") units = m;
  else units = std::min(p - r, m);
  std::vector<int64_t> chunks;
  for (int64_t k = 0; k < units; ++k) chunks.push_back((k / p) % v);
  return chunks;
}

// Saved bytes of one model chunk for one microbatch, and the largest recompute working set.
struct ChunkActivations {
  double saved = 0;
  double working_set = 0;
};

ChunkActivations chunk_activations(const Job& job, const std::vector<int64_t>& layers, const MemoryOptions& o) {
  const ModelConfig& m = job.model;
  const auto& t = job.training;
  auto full = [&](int64_t l) { return activation_bytes_per_layer(job, is_moe_layer(m, l), RecomputeGranularity::None, o); };
  ChunkActivations c;
  if (t.recompute_granularity != RecomputeGranularity::Full) {
    for (int64_t l : layers) c.saved += activation_bytes_per_layer(job, is_moe_layer(m, l), o);
    return c;
  }
  const int64_t group = std::max<int64_t>(1, t.recompute_num_layers);
  const double input = activation_bytes_per_layer(job, false, RecomputeGranularity::Full, o);
  const int64_t n = static_cast<int64_t>(layers.size());
  if (t.recompute_method == RecomputeMethod::Uniform) {
    for (int64_t begin = 0; begin < n; begin += group) {
      c.saved += input;   // each group of `group` layers keeps its input
      double replay = 0;
      for (int64_t i = begin; i < std::min(n, begin + group); ++i) replay += full(layers[static_cast<size_t>(i)]);
      c.working_set = std::max(c.working_set, replay);
    }
    return c;
  }
  for (int64_t i = 0; i < n; ++i) {   // block: the first `group` layers are recomputed one by one
    const double all = full(layers[static_cast<size_t>(i)]);
    if (i < group) {
      c.saved += input;
      c.working_set = std::max(c.working_set, all);
    } else {
      c.saved += all;
    }
  }
  return c;
}

// Local tokens n = s / CP · b of one microbatch, TP size t, and r = t with SP (else 1).
struct Tokens {
  double n = 0, t = 1, r = 1;
};

Tokens tokens(const Job& job) {
  const auto& par = job.parallel;
  Tokens k;
  k.t = double(std::max<int64_t>(1, par.tensor_model_parallel_size));
  k.r = (par.sequence_parallel && k.t > 1) ? k.t : 1.0;
  k.n = double(job.model.seq_length) / double(std::max<int64_t>(1, par.context_parallel_size)) *
        double(std::max<int64_t>(1, job.training.micro_batch_size));
  return k;
}

// Output layer and MTP tensors saved on the last rank for one microbatch (see the file comment).
double output_activations(const Job& job, bool with_mtp, const MemoryOptions& o) {
  const ModelDims x = detail::model_dims(job.model);
  const double e = double(bytes_per_element(job.training.params_dtype));
  const auto [n, t, r] = tokens(job);
  const double h = double(x.h);
  const double head = 2 * e * n * h / r + 4.0 * n * double(x.vocab) / t;   // norm in, matmul in, fp32 logits
  double bytes = head;
  if (with_mtp) {
    const bool moe = is_moe_layer(job.model, x.layers - 1);
    // enorm and hnorm inputs, eh-projection input [n, 2h], the layer, then its own head.
    const double module = 2 * e * n * h / r + 2 * e * n * h / r + activation_bytes_per_layer(job, moe, o) + head;
    bytes += double(job.model.mtp_num_layers) * module;
  }
  return bytes;
}

StageMemory stage_memory(const Job& job, const RankLayers& rank, const ParameterCount& pc, const MemoryOptions& o) {
  const auto& par = job.parallel;
  StageMemory s;
  s.pipeline_rank = rank.pipeline_rank;
  s.num_layers = rank.num_layers();
  const RankParameters rp = rank_parameters(job, rank, pc);
  s.dense_parameters = rp.dense;
  s.expert_parameters = rp.expert;

  const BytesPerParameter bpp = bytes_per_parameter(job.training);
  const double params = rp.dense + rp.expert;
  s.weights_bytes = bpp.weights * params;
  s.gradients_bytes = bpp.gradients * params;
  double dense_shards = 1, expert_shards = 1;
  if (par.use_distributed_optimizer) {
    const int64_t pp = std::max<int64_t>(1, par.pipeline_model_parallel_size);
    const int64_t etp = par.expert_tensor_parallel_size > 0 ? par.expert_tensor_parallel_size : par.tensor_model_parallel_size;
    const int64_t ep = std::max<int64_t>(1, par.expert_model_parallel_size);
    dense_shards = double(std::max<int64_t>(1, par.data_parallel_size) * std::max<int64_t>(1, par.context_parallel_size));
    const int64_t world = job.world_size > 0 ? job.world_size
                                             : par.tensor_model_parallel_size * pp * par.context_parallel_size;
    expert_shards = double(std::max<int64_t>(1, world / (pp * ep * std::max<int64_t>(1, etp))));
  }
  s.optimizer_bytes = bpp.optimizer * (rp.dense / dense_shards + rp.expert / expert_shards);

  const double v = double(std::max<int64_t>(1, par.virtual_pipeline_model_parallel_size));
  std::vector<ChunkActivations> per_chunk;
  for (const auto& chunk : rank.chunks) per_chunk.push_back(chunk_activations(job, chunk, o));
  const std::vector<int64_t> units = in_flight_chunks(job, rank.pipeline_rank);
  double act = 0, working = 0;
  for (int64_t c : units) act += per_chunk[static_cast<size_t>(c)].saved;
  for (const auto& c : per_chunk) working = std::max(working, c.working_set);
  if (rank.has_embedding && o.hidden_dropout) {
    const Tokens k = tokens(job);
    const double mask = k.n * double(job.model.hidden_size) / k.r;   // embedding dropout mask, 1 byte per element
    act += mask * double(std::count(units.begin(), units.end(), int64_t{0}));
  }
  if (rank.has_output_layer) act += output_activations(job, rank.has_mtp, o);
  s.in_flight_microbatches = double(units.size()) / v;
  s.activations_bytes = act + working;

  s.total_bytes = s.weights_bytes + s.gradients_bytes + s.optimizer_bytes + s.activations_bytes;
  s.weights_gib = s.weights_bytes / kBytesPerGiB;
  s.gradients_gib = s.gradients_bytes / kBytesPerGiB;
  s.optimizer_gib = s.optimizer_bytes / kBytesPerGiB;
  s.activations_gib = s.activations_bytes / kBytesPerGiB;
  s.total_gib = s.total_bytes / kBytesPerGiB;
  return s;
}

}  // namespace

BytesPerParameter bytes_per_parameter(const TrainingConfig& training) {
  switch (training.params_dtype) {
    case DType::BF16: return {2, training.grad_reduce_in_bf16 ? 2.0 : 4.0, 12};
    case DType::FP16: return {2, 2, 16};
    case DType::FP32: return {4, 4, 8};
  }
  return {4, 4, 8};
}

const StageMemory& MemoryEstimate::peak() const {
  TANDEM_CHECK_MSG(!stages.empty(), "empty memory estimate");
  return *std::max_element(stages.begin(), stages.end(),
                           [](const StageMemory& a, const StageMemory& b) { return a.total_bytes < b.total_bytes; });
}

MemoryOptions memory_options_for(const Job& job) {
  MemoryOptions o;
  o.flash_attention = uses_flash_attention(job.training.attention_backend);
  o.attention_dropout = job.training.attention_dropout > 0;
  o.hidden_dropout = job.training.hidden_dropout > 0;
  o.fp8_linear_inputs = job.training.fp8_format != Fp8Format::None;
  return o;
}

MemoryEstimate memory_per_rank(const Job& job, const MemoryOptions& options) {
  const ParameterCount pc = parameter_count(job.model);
  MemoryEstimate est;
  for (const RankLayers& rank : pipeline_layout(job)) est.stages.push_back(stage_memory(job, rank, pc, options));
  return est;
}

}  // namespace tandem
