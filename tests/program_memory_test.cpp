// Program lowering, memory: alloc/free pairing, persistent buffers and peak against
// models/accounting's memory_per_rank.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "models/accounting.h"
#include "tests/program_test_util.h"

namespace tandem {
namespace {

using testing::Lowered;
using testing::lower_all;
using testing::tiny_gpt;
using testing::tiny_llama;
using testing::tiny_moe;

double rel(double got, double want) { return std::abs(got - want) / std::abs(want); }

TEST(ProgramMemory, EveryActivationIsFreedAndPersistentBuffersAreNot) {
  const std::vector<Job> jobs = {
      tiny_llama({"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "zb-h1", "--recompute-granularity",
                  "full", "--recompute-num-layers", "2", "--global-batch-size", "4"}, 2),
      tiny_moe({"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "dualpipe", "--expert-model-parallel-size",
                "2", "--global-batch-size", "8"}, 4),
      tiny_gpt({"--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "1",
                "--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "1",
                "--global-batch-size", "4"}, 2),
  };
  for (const Job& job : jobs) {
    const Lowered l = lower_all(job);
    for (const RankProgram& p : l.programs) {
      std::vector<int> allocs(p.buffers.size(), 0), frees(p.buffers.size(), 0);
      for (const Instruction& ins : p.instructions) {
        if (ins.kind == OpKind::Alloc) {
          EXPECT_EQ(allocs[static_cast<size_t>(ins.buffer)]++, 0);
        } else if (ins.kind == OpKind::Free) {
          EXPECT_EQ(allocs[static_cast<size_t>(ins.buffer)], 1) << "free before alloc";
          EXPECT_EQ(frees[static_cast<size_t>(ins.buffer)]++, 0);
        }
      }
      for (size_t b = 0; b < p.buffers.size(); ++b) {
        EXPECT_EQ(allocs[b], 1) << p.buffers[b].name();
        EXPECT_EQ(frees[b], is_persistent(p.buffers[b].role) ? 0 : 1) << p.buffers[b].name();
      }
    }
  }
}

// Parameters, gradients and optimizer states equal the accounting's per-stage bytes.
TEST(ProgramMemory, PersistentBytesMatchAccounting) {
  const std::vector<Job> jobs = {
      tiny_gpt({"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "4", "--global-batch-size", "4"}, 8),
      tiny_gpt({"--num-layers", "6", "--pipeline-model-parallel-size", "2", "--num-virtual-stages-per-pipeline-rank", "2",
                "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split", "--bf16",
                "--grad-reduce-in-bf16", "--use-distributed-optimizer", "--global-batch-size", "8"}, 4),
      tiny_gpt({"--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "1",
                "--use-distributed-optimizer", "--global-batch-size", "8"}, 4),
      tiny_moe({"--tensor-model-parallel-size", "2", "--sequence-parallel", "--expert-model-parallel-size", "2",
                "--expert-tensor-parallel-size", "1", "--pipeline-model-parallel-size", "2",
                "--use-distributed-optimizer", "--global-batch-size", "4"}, 8),
      testing::job_from_flags(
          {"--num-layers", "4", "--hidden-size", "128", "--num-attention-heads", "4", "--multi-latent-attention",
           "--q-lora-rank", "64", "--kv-lora-rank", "32", "--qk-head-dim", "32", "--qk-pos-emb-head-dim", "16",
           "--v-head-dim", "32", "--seq-length", "64", "--vocab-size", "1000", "--swiglu", "--normalization", "RMSNorm",
           "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights", "--disable-bias-linear",
           "--num-experts", "8", "--moe-ffn-hidden-size", "64", "--moe-shared-expert-intermediate-size", "64",
           "--moe-layer-freq", "([0]*1+[1]*3)", "--mtp-num-layers", "1", "--expert-model-parallel-size", "2",
           "--pipeline-model-parallel-size", "2", "--tensor-model-parallel-size", "2", "--sequence-parallel",
           "--use-distributed-optimizer", "--micro-batch-size", "1", "--global-batch-size", "4", "--bf16"}, 8),
  };
  for (const Job& job : jobs) {
    const Lowered l = lower_all(job);
    const MemoryEstimate mem = memory_per_rank(job, memory_options_for(job));
    for (const RankProgram& p : l.programs) {
      const StageMemory& st = mem.stages[static_cast<size_t>(p.pipeline_rank)];
      const double want = st.weights_bytes + st.gradients_bytes + st.optimizer_bytes;
      EXPECT_LT(rel(p.persistent_bytes(), want), 1e-12) << "rank " << p.rank << ": " << p.persistent_bytes() << " vs " << want;
    }
  }
}

Job gpt_8_layers(std::vector<std::string> variant) {
  std::vector<std::string> f = {"--num-layers", "8", "--tensor-model-parallel-size", "2",
                                "--pipeline-model-parallel-size", "4", "--global-batch-size", "16"};
  f.insert(f.end(), variant.begin(), variant.end());
  return tiny_gpt(f, 16);
}

// With 1F1B the program's peak equals the accounting's estimate: persistent state + p - r
// microbatches of saved activations (+ the embedding masks and the head's tensors).
TEST(ProgramMemory, PeakMatchesAccountingFor1F1B) {
  const std::vector<std::vector<std::string>> variants = {
      {"--sequence-parallel", "--recompute-granularity", "selective"},
      {"--attention-backend", "unfused"},
      {"--use-distributed-optimizer", "--fp16"},
      {"--sequence-parallel", "--attention-dropout", "0", "--hidden-dropout", "0"},
  };
  for (const auto& v : variants) {
    const Job job = gpt_8_layers(v);
    const Lowered l = lower_all(job);
    const MemoryEstimate mem = memory_per_rank(job, memory_options_for(job));
    for (const RankProgram& p : l.programs) {
      const double want = mem.stages[static_cast<size_t>(p.pipeline_rank)].total_bytes;
      EXPECT_LT(rel(p.peak_bytes(), want), 1e-12) << v[0] << " rank " << p.rank << ": " << p.peak_bytes() << " vs " << want;
    }
  }
}

// Full recompute: the accounting adds one recompute working set on top of everything saved. The
// program frees what the backward has already consumed before the replay: the head's tensors on
// the last stage (uniform), and with the block method the full activations of the layers after
// the recomputed one (here 1 of the 2 layers of a stage).
TEST(ProgramMemory, FullRecomputePeakIsTheAccountingBoundLessWhatTheBackwardFreedBeforeTheReplay) {
  const Job uniform = gpt_8_layers({"--sequence-parallel", "--recompute-granularity", "full", "--recompute-num-layers", "2"});
  const Job block = gpt_8_layers({"--recompute-granularity", "full", "--recompute-method", "block",
                                  "--recompute-num-layers", "1", "--use-distributed-optimizer"});
  for (const Job* job : {&uniform, &block}) {
    const bool is_block = job == &block;
    const MemoryEstimate mem = memory_per_rank(*job, memory_options_for(*job));
    const MemoryOptions o = memory_options_for(*job);
    const double layer = activation_bytes_per_layer(*job, false, RecomputeGranularity::None, o);
    const double n = 64, h = 128, V = 1024, t = 2, r = job->parallel.sequence_parallel ? 2 : 1;
    const double head = 2 * 2 * n * h / r + 4 * n * V / t;
    for (const RankProgram& p : lower_all(*job).programs) {
      const double bound = mem.stages[static_cast<size_t>(p.pipeline_rank)].total_bytes;
      const double freed = is_block ? layer : (p.pipeline_rank == 3 ? head : 0.0);
      EXPECT_LT(rel(p.peak_bytes(), bound - freed), 1e-12) << (is_block ? "block" : "uniform") << " rank " << p.rank;
    }
  }
}

}  // namespace
}  // namespace tandem
