#pragma once
// Shared helpers of the program tests: tiny jobs from Megatron flags, lowering of every rank.
#include <optional>
#include <string>
#include <vector>

#include "core/job_loader.h"
#include "core/parallel_grid.h"
#include "program/program.h"

namespace tandem::testing {

inline Job job_from_flags(std::vector<std::string> flags, int64_t gpus) {
  JobRequest request;
  request.megatron_flags = std::move(flags);
  request.gpus = gpus;
  return load_job(request);
}

// A tiny GPT (learned positions, LayerNorm, GeLU) plus `extra` flags on `gpus` ranks.
inline Job tiny_gpt(std::vector<std::string> extra, int64_t gpus) {
  std::vector<std::string> flags = {"--num-layers", "4", "--hidden-size", "128", "--num-attention-heads", "8",
                                    "--seq-length", "64", "--max-position-embeddings", "64", "--vocab-size", "1000",
                                    "--micro-batch-size", "1", "--bf16"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return job_from_flags(flags, gpus);
}

// A tiny LLaMA (GQA, SwiGLU, RMSNorm, RoPE, untied, no biases) plus `extra`.
inline Job tiny_llama(std::vector<std::string> extra, int64_t gpus) {
  std::vector<std::string> flags = {"--num-layers", "4", "--hidden-size", "128", "--ffn-hidden-size", "352",
                                    "--num-attention-heads", "8", "--group-query-attention", "--num-query-groups", "4",
                                    "--seq-length", "64", "--max-position-embeddings", "64", "--vocab-size", "1000",
                                    "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
                                    "--untie-embeddings-and-output-weights", "--disable-bias-linear",
                                    "--micro-batch-size", "1", "--bf16"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return job_from_flags(flags, gpus);
}

// A tiny Mixtral-style MoE (8 experts, top-2) plus `extra`.
inline Job tiny_moe(std::vector<std::string> extra, int64_t gpus) {
  std::vector<std::string> flags = {"--num-experts", "8", "--moe-router-topk", "2", "--moe-ffn-hidden-size", "192",
                                    "--moe-token-dispatcher-type", "alltoall"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return tiny_llama(flags, gpus);
}

struct Lowered {
  Job job;
  ParallelGrid grid;
  Schedule schedule;
  std::vector<RankProgram> programs;   // [rank]
};

inline Lowered lower_all(const Job& job) {
  Lowered out{job, ParallelGrid::from_job(job), schedule_for_job(job), {}};
  for (int64_t r = 0; r < out.grid.world_size(); ++r) out.programs.push_back(lower_rank(job, out.grid, out.schedule, r));
  return out;
}

inline double sum_flops(const Lowered& l) {
  double sum = 0;
  for (const RankProgram& p : l.programs) sum += p.total_flops();
  return sum;
}

}  // namespace tandem::testing
