#include "cli/job_report.h"

#include <cmath>

#include "cli/table.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#include "core/parallel_grid.h"
#include "models/accounting.h"

namespace tandem::cli {
namespace {

using json = nlohmann::json;

std::string layout_text(const Job& job) {
  const auto& p = job.parallel;
  std::string s = "TP" + std::to_string(p.tensor_model_parallel_size) + " PP" +
                  std::to_string(p.pipeline_model_parallel_size) + " CP" + std::to_string(p.context_parallel_size) +
                  " DP" + std::to_string(p.data_parallel_size);
  if (job.model.is_moe())
    s += " EP" + std::to_string(p.expert_model_parallel_size) + " ETP" + std::to_string(p.expert_tensor_parallel_size);
  if (p.virtual_pipeline_model_parallel_size > 1) s += " VPP" + std::to_string(p.virtual_pipeline_model_parallel_size);
  if (p.sequence_parallel) s += " +SP";
  return s;
}

std::string recompute_text(const TrainingConfig& t) {
  if (t.recompute_granularity == RecomputeGranularity::Full)
    return "full (" + to_string(t.recompute_method) + ", " + std::to_string(t.recompute_num_layers) + (t.recompute_num_layers == 1 ? " layer)" : " layers)");
  return to_string(t.recompute_granularity);
}

}  // namespace

std::string layout_summary(const Job& job) {
  return job.model.name + " · " + with_commas(job.world_size) + " x " + job.cluster.gpu.name + " (" +
         job.cluster.name + ") · " + layout_text(job);
}

std::string resolved_job_text(const Job& job) {
  const auto& m = job.model;
  const auto& p = job.parallel;
  const auto& t = job.training;
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", m.name},
      {"layers x hidden", std::to_string(m.num_layers) + " x " + std::to_string(m.hidden_size)},
      {"attention", m.multi_latent_attention
                        ? std::to_string(m.num_attention_heads) + " heads, multi-latent (kv rank " +
                              std::to_string(m.kv_lora_rank) + ", q rank " + std::to_string(m.q_lora_rank) +
                              ", q/k head dim " + std::to_string(m.qk_head_dim) + "+" +
                              std::to_string(m.qk_pos_emb_head_dim) + " rope, v head dim " +
                              std::to_string(m.v_head_dim) + ")"
                        : std::to_string(m.num_attention_heads) + " heads, " + std::to_string(m.num_query_groups) +
                              " query groups, head dim " + std::to_string(m.kv_channels)},
      {"MLP", std::to_string(m.ffn_hidden_size) + (m.swiglu ? " (SwiGLU)" : " (GeLU)")},
      {"vocabulary", std::to_string(m.vocab_size) + " padded to " + std::to_string(m.padded_vocab_size)},
      {"sequence", std::to_string(m.seq_length) + " tokens, " + to_string(m.position_embedding) + " positions, " +
                       to_string(m.normalization)},
  };
  if (m.is_moe())
    rows.push_back({"experts", std::to_string(m.num_experts) + " routed (top-" + std::to_string(m.moe_router_topk) +
                                   ", ffn " + std::to_string(m.moe_ffn_hidden_size) + ")" +
                                   (m.moe_shared_expert_intermediate_size
                                        ? " + shared " + std::to_string(m.moe_shared_expert_intermediate_size) : "")});
  rows.push_back({"GPUs", with_commas(job.world_size) + " x " + job.cluster.gpu.name + " on " + job.cluster.name});
  for (const Straggler& s : job.cluster.stragglers) rows.push_back({"straggler", to_text(s)});
  rows.push_back({"layout", layout_text(job) + " (order " + p.order + ")"});
  if (job.cluster.datacenters > 1)
    rows.push_back({"datacenters", std::to_string(job.cluster.datacenters) + ", placement " + to_string(p.dc_placement) +
                                       " (WAN " + fixed(job.cluster.wan_bandwidth * 8 / 1e9, 0) + " Gb/s, " +
                                       fixed(job.cluster.wan_latency * 1e3, 1) + " ms)"});
  rows.push_back({"pipeline schedule", p.pipeline_schedule});
  rows.push_back({"batch", "global " + std::to_string(t.global_batch_size) + " = micro " +
                               std::to_string(t.micro_batch_size) + " x DP " + std::to_string(p.data_parallel_size) +
                               " x " + std::to_string(t.num_microbatches) + " microbatches"});
  rows.push_back({"precision", to_string(t.params_dtype) +
                                   (t.fp8_format != Fp8Format::None ? " + fp8 " + to_string(t.fp8_format) : "")});
  rows.push_back({"recompute", recompute_text(t)});
  rows.push_back({"optimizer", std::string(p.use_distributed_optimizer ? "distributed " : "") + "AdamW" +
                                   (p.overlap_grad_reduce ? ", overlapped grad reduce" : "") +
                                   (p.overlap_param_gather ? ", overlapped param gather" : "")});
  std::string out = render_pairs(rows);
  for (const auto& n : job.notes) out += "  note: " + n + "\n";
  if (!job.ignored_flags.empty()) {
    std::string list;
    for (const auto& f : job.ignored_flags) list += (list.empty() ? "" : " ") + f;
    out += "  ignored (accepted, not modelled): " + list + "\n";
  }
  return out;
}

std::string accounting_text(const Job& job) {
  const ParameterCount params = parameter_count(job.model);
  const IterationFlops flops = flops_per_iteration(job);
  std::string out = render_pairs({
      {"parameters", human_count(double(params.total)) + " (" + with_commas(params.total) + ")" +
                         (job.model.is_moe() ? ", active per token " + human_count(double(params.active_per_token)) : "")},
      {"model FLOPs / iteration", human_count(flops.model) + "FLOP (no recompute)"},
      {"hardware FLOPs / iteration", human_count(flops.hardware) + "FLOP (with recompute)"},
      {"tokens / iteration", with_commas(job.training.global_batch_size * job.model.seq_length)},
  });
  const MemoryEstimate mem = memory_per_rank(job, memory_options_for(job));
  Table table({"pipeline stage", "layers", "weights GiB", "grads GiB", "optimizer GiB", "activations GiB", "total GiB"});
  const double hbm_gib = job.cluster.gpu.hbm_bytes / kBytesPerGiB;
  for (const auto& s : mem.stages)
    table.add_row({std::to_string(s.pipeline_rank), std::to_string(s.num_layers), fixed(s.weights_gib, 2),
                   fixed(s.gradients_gib, 2), fixed(s.optimizer_gib, 2), fixed(s.activations_gib, 2),
                   fixed(s.total_gib, 2) + (s.total_gib > hbm_gib ? " (exceeds " + fixed(hbm_gib, 0) + ")" : "")});
  out += "\nmemory per rank (ranks of one pipeline stage hold the same; analytical, before fragmentation):\n";
  out += table.render();
  return out;
}

json info_json(const Job& job) {
  const ParameterCount params = parameter_count(job.model);
  const IterationFlops flops = flops_per_iteration(job);
  const MemoryEstimate mem = memory_per_rank(job, memory_options_for(job));
  const ParallelGrid grid = ParallelGrid::from_job(job);
  json out;
  out["job"] = job_to_json(job);
  out["parameters"] = params.total;
  out["active_parameters"] = params.active_per_token;
  out["model_flops_per_iteration"] = flops.model;
  out["hardware_flops_per_iteration"] = flops.hardware;
  out["data_parallel_size"] = job.parallel.data_parallel_size;
  out["microbatches"] = job.training.num_microbatches;
  out["world_size"] = job.world_size;
  out["tokens_per_iteration"] = job.training.global_batch_size * job.model.seq_length;
  json ranks = json::array();
  for (int64_t r = 0; r < job.world_size; ++r) {
    const StageMemory& s = mem.stages.at(static_cast<size_t>(grid.dense_coord(r).pp));
    ranks.push_back({{"rank", r}, {"pipeline_stage", s.pipeline_rank}, {"weights_gib", s.weights_gib},
                     {"gradients_gib", s.gradients_gib}, {"optimizer_gib", s.optimizer_gib},
                     {"activations_gib", s.activations_gib}, {"total_gib", s.total_gib}});
  }
  out["memory_per_rank"] = std::move(ranks);
  out["peak_memory_gib"] = mem.peak_gib();
  out["oom"] = mem.peak_gib() * kBytesPerGiB > job.cluster.gpu.hbm_bytes;
  return out;
}

}  // namespace tandem::cli
