// Program lowering: FLOPs against models/accounting, recompute, deps, traces, lowering speed.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/accounting.h"
#include "tests/program_test_util.h"

namespace tandem {
namespace {

using testing::Lowered;
using testing::lower_all;
using testing::sum_flops;
using testing::tiny_gpt;
using testing::tiny_llama;
using testing::tiny_moe;

double rel(double got, double want) { return std::abs(got - want) / std::abs(want); }

struct FlopsCase {
  const char* name;
  Job job;
};

std::vector<FlopsCase> flops_cases(std::vector<std::string> recompute) {
  auto with = [&](std::vector<std::string> f) {
    f.insert(f.end(), recompute.begin(), recompute.end());
    return f;
  };
  return {
      {"gpt tp2 pp2 dp2", tiny_gpt(with({"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                                         "--global-batch-size", "8"}), 8)},
      {"gpt tp2 sp pp2 interleaved", tiny_gpt(with({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                                    "--pipeline-model-parallel-size", "2",
                                                    "--num-layers-per-virtual-pipeline-stage", "1",
                                                    "--global-batch-size", "8"}), 4)},
      {"llama gqa swiglu tp2 sp cp2 pp2", tiny_llama(with({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                                           "--context-parallel-size", "2",
                                                           "--pipeline-model-parallel-size", "2",
                                                           "--global-batch-size", "4"}), 8)},
      {"llama zb-h1", tiny_llama(with({"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "zb-h1",
                                       "--global-batch-size", "8"}), 4)},
      {"moe ep2 tp2 sp", tiny_moe(with({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                        "--expert-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                                        "--global-batch-size", "4"}), 8)},
      {"moe ep4 etp1 allgather", tiny_moe(with({"--expert-model-parallel-size", "4", "--expert-tensor-parallel-size", "1",
                                                "--moe-token-dispatcher-type", "allgather",
                                                "--global-batch-size", "8"}), 4)},
  };
}

TEST(ProgramFlops, SumOverRanksEqualsModelFlopsWithoutRecompute) {
  for (const FlopsCase& c : flops_cases({})) {
    const Lowered l = lower_all(c.job);
    const IterationFlops want = flops_per_iteration(c.job);
    EXPECT_LT(rel(sum_flops(l), want.model), 1e-12) << c.name << ": " << sum_flops(l) << " vs " << want.model;
    EXPECT_DOUBLE_EQ(want.model, want.hardware);
  }
}

TEST(ProgramFlops, FullRecomputeEqualsHardwareFlops) {
  for (const auto& method : {"uniform", "block"}) {
    for (const FlopsCase& c : flops_cases({"--recompute-granularity", "full", "--recompute-method", method,
                                           "--recompute-num-layers", "1"})) {
      const Lowered l = lower_all(c.job);
      const IterationFlops want = flops_per_iteration(c.job);
      EXPECT_GT(want.hardware, want.model);
      EXPECT_LT(rel(sum_flops(l), want.hardware), 1e-12) << c.name << " " << method;
    }
  }
}

// Selective recompute replays the attention core's forward once; the accounting follows
// Korthikanti eq. (8) and counts the recomputed core three times (models/accounting.h).
TEST(ProgramFlops, SelectiveRecomputeReplaysOneCoreForward) {
  for (const FlopsCase& c : flops_cases({"--recompute-granularity", "selective"})) {
    const Lowered l = lower_all(c.job);
    const IterationFlops want = flops_per_iteration(c.job);
    const double replay = sum_flops(l) - want.model;
    EXPECT_LT(rel(replay, want.forward.attention_core), 1e-9) << c.name;
    EXPECT_LT(rel(3 * replay, want.recompute), 1e-9) << c.name;
  }
}

TEST(ProgramFlops, MultiLatentAttentionAndMtp) {
  // DeepSeek-V3's shape scaled down: MLA, dense first layer then MoE with a shared expert, MTP.
  const Job job = testing::job_from_flags(
      {"--num-layers", "4", "--hidden-size", "128", "--num-attention-heads", "4", "--multi-latent-attention",
       "--q-lora-rank", "64", "--kv-lora-rank", "32", "--qk-head-dim", "32", "--qk-pos-emb-head-dim", "16",
       "--v-head-dim", "32", "--seq-length", "64", "--max-position-embeddings", "64", "--vocab-size", "1000",
       "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
       "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--num-experts", "8", "--moe-router-topk", "2",
       "--moe-ffn-hidden-size", "64", "--moe-shared-expert-intermediate-size", "64", "--moe-layer-freq",
       "([0]*1+[1]*3)", "--mtp-num-layers", "1", "--expert-model-parallel-size", "2", "--pipeline-model-parallel-size",
       "2", "--micro-batch-size", "1", "--global-batch-size", "4", "--bf16"},
      4);
  const Lowered l = lower_all(job);
  EXPECT_LT(rel(sum_flops(l), flops_per_iteration(job).model), 1e-12);
}

TEST(ProgramRecompute, SelectiveReplaysEveryAttentionCoreBeforeItsGradient) {
  const Job job = tiny_llama({"--pipeline-model-parallel-size", "2", "--recompute-granularity", "selective",
                              "--global-batch-size", "4"}, 2);
  const Lowered l = lower_all(job);
  for (const RankProgram& p : l.programs) {
    int replays = 0;
    for (size_t i = 0; i < p.instructions.size(); ++i) {
      const Instruction& ins = p.instructions[i];
      if (ins.kind != OpKind::Attention || !ins.recompute) continue;
      ++replays;
      // The next compute op is the gradient of the same layer and microbatch.
      size_t j = i + 1;
      while (p.instructions[j].stream != StreamKind::Compute) ++j;
      EXPECT_EQ(p.instructions[j].kind, OpKind::AttentionGrad);
      EXPECT_EQ(p.instructions[j].layer, ins.layer);
      EXPECT_EQ(p.instructions[j].microbatch, ins.microbatch);
    }
    EXPECT_EQ(replays, 2 * 4);   // 2 layers x 4 microbatches per stage
  }
}

TEST(ProgramRecompute, FullRecomputeReplaysTheForwardOfRecomputedLayers) {
  auto count = [](const Job& job, bool recompute) {
    std::map<OpKind, int> n;
    for (const RankProgram& p : lower_all(job).programs)
      for (const Instruction& ins : p.instructions)
        if (ins.recompute == recompute && ins.phase != Phase::Forward && is_compute(ins.kind)) ++n[ins.kind];
    return n;
  };
  const std::vector<std::string> base = {"--pipeline-model-parallel-size", "2", "--tensor-model-parallel-size", "2",
                                         "--global-batch-size", "4"};
  auto flags = [&](std::vector<std::string> more) {
    auto f = base;
    f.insert(f.end(), more.begin(), more.end());
    return f;
  };
  const Job uniform = tiny_gpt(flags({"--recompute-granularity", "full", "--recompute-num-layers", "2"}), 4);
  const Job block = tiny_gpt(flags({"--recompute-granularity", "full", "--recompute-method", "block",
                                    "--recompute-num-layers", "1"}), 4);
  // Per rank: 2 layers per stage x 4 microbatches; each layer replays qkv, proj, fc1, fc2.
  EXPECT_EQ(count(uniform, true)[OpKind::Gemm], 2 * 2 * 4 * 4 * 2);   // ranks x layers x mb x gemms x TP
  EXPECT_EQ(count(block, true)[OpKind::Gemm], 2 * 1 * 4 * 4 * 2);
  EXPECT_EQ(count(uniform, true)[OpKind::Attention], 2 * 2 * 4 * 2);
  EXPECT_EQ(count(tiny_gpt(base, 4), true).size(), 0u);
}

TEST(ProgramStructure, DepsPointBackwardsToOtherStreams) {
  const Job job = tiny_moe({"--tensor-model-parallel-size", "2", "--sequence-parallel", "--expert-model-parallel-size",
                            "2", "--pipeline-model-parallel-size", "2", "--context-parallel-size", "2",
                            "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
                            "--global-batch-size", "8"}, 16);
  const Lowered l = lower_all(job);
  for (const RankProgram& p : l.programs) {
    for (size_t i = 0; i < p.instructions.size(); ++i) {
      for (int32_t d : p.instructions[i].deps) {
        ASSERT_GE(d, 0);
        ASSERT_LT(static_cast<size_t>(d), i) << op_trace_line(p.instructions[i]);
        EXPECT_NE(p.instructions[static_cast<size_t>(d)].stream, p.instructions[i].stream);
      }
    }
  }
}

TEST(ProgramStructure, ZeroBubbleMovesWeightGradientsToBackwardWeight) {
  auto grads = [](const Job& job) {
    std::map<Phase, int> n;
    for (const RankProgram& p : lower_all(job).programs)
      for (const Instruction& ins : p.instructions)
        if (ins.kind == OpKind::GemmGradWeight) ++n[ins.phase];
    return n;
  };
  const auto zb = grads(tiny_llama({"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "zb-h1",
                                    "--global-batch-size", "8"}, 2));
  const auto one = grads(tiny_llama({"--pipeline-model-parallel-size", "2", "--global-batch-size", "8"}, 2));
  EXPECT_EQ(one.at(Phase::Backward), zb.at(Phase::WeightGrad) + (zb.count(Phase::Backward) ? zb.at(Phase::Backward) : 0));
  EXPECT_GT(zb.at(Phase::WeightGrad), 0);
}

TEST(ProgramStructure, TraceAndJson) {
  const Lowered l = lower_all(tiny_gpt({"--tensor-model-parallel-size", "2", "--global-batch-size", "2"}, 2));
  const RankProgram& p = l.programs[0];
  ASSERT_FALSE(p.instructions.empty());
  bool saw_qkv = false;
  for (const Instruction& ins : p.instructions) {
    const std::string line = op_trace_line(ins);
    if (ins.kind == OpKind::Gemm && ins.site == Site::Qkv) {
      saw_qkv = true;
      EXPECT_EQ(line.rfind("Gemm qkv L0 mb0 c0 m=64 n=192 k=128 batch=1", 0), 0u) << line;
      break;
    }
  }
  EXPECT_TRUE(saw_qkv);
  const nlohmann::json j = program_to_json(p);
  EXPECT_EQ(j["instructions"].size(), p.instructions.size());
  EXPECT_EQ(j["buffers"].size(), p.buffers.size());
  EXPECT_DOUBLE_EQ(j["total_flops"].get<double>(), p.total_flops());
}

// LLaMA-3 405B on 16,384 GPUs (TP 8, PP 16, DP 128): one rank lowers well under a second.
TEST(ProgramSpeed, Llama405bRankLowersQuickly) {
  JobRequest request;
  request.config_file = "llama3-405b";
  request.gpus = 16384;
  const Job job = load_job(request);
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  const auto start = std::chrono::steady_clock::now();
  const RankProgram p = lower_rank(job, grid, schedule, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("405B rank 0: %zu instructions, %zu buffers, lowered in %.3f s\n", p.instructions.size(),
              p.buffers.size(), seconds);
  EXPECT_LT(seconds, 5.0);   // generous for debug builds; typically a few milliseconds
  EXPECT_GT(p.total_flops(), 0);
}

}  // namespace
}  // namespace tandem
