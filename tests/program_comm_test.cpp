// Program lowering, communication: every Send has its Recv, group members issue the same
// collectives, MoE all-to-all bytes, pipeline scatter/gather, data-parallel buckets, symmetry.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

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

struct Layout {
  const char* name;
  Job job;
};

std::vector<Layout> layouts() {
  return {
      {"1f1b tp2 pp4 dp2", tiny_gpt({"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "4",
                                     "--global-batch-size", "8"}, 16)},
      {"interleaved pp2 v2 sp", tiny_llama({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                            "--pipeline-model-parallel-size", "2",
                                            "--num-virtual-stages-per-pipeline-rank", "2",
                                            "--global-batch-size", "4"}, 4)},
      {"zb-h1 pp4 cp2", tiny_llama({"--pipeline-model-parallel-size", "4", "--pipeline-schedule", "zb-h1",
                                    "--context-parallel-size", "2", "--global-batch-size", "8"}, 8)},
      {"zb-v pp2", tiny_llama({"--pipeline-model-parallel-size", "2", "--pipeline-schedule", "zb-v",
                               "--global-batch-size", "4"}, 2)},
      {"dualpipe pp4", tiny_gpt({"--pipeline-model-parallel-size", "4", "--pipeline-schedule", "dualpipe",
                                 "--global-batch-size", "8"}, 4)},
      {"dualpipe moe ep2 dist-opt overlap", tiny_moe({"--pipeline-model-parallel-size", "2", "--pipeline-schedule",
                                                      "dualpipe", "--expert-model-parallel-size", "2",
                                                      "--use-distributed-optimizer", "--overlap-grad-reduce",
                                                      "--global-batch-size", "8"}, 4)},
      {"moe tp2 sp ep2 cp2 pp2 dist-opt", tiny_moe({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                                    "--expert-model-parallel-size", "2", "--context-parallel-size", "2",
                                                    "--pipeline-model-parallel-size", "2", "--use-distributed-optimizer",
                                                    "--overlap-grad-reduce", "--overlap-param-gather",
                                                    "--recompute-granularity", "selective",
                                                    "--global-batch-size", "8"}, 16)},
  };
}

// (sender, receiver, tag) -> bytes of every Send and of every Recv.
using MessageKey = std::tuple<int64_t, int64_t, int64_t>;

TEST(ProgramMessages, EverySendHasOneMatchingRecv) {
  for (const Layout& c : layouts()) {
    const Lowered l = lower_all(c.job);
    std::map<MessageKey, double> sends, recvs;
    for (const RankProgram& p : l.programs) {
      for (const Instruction& ins : p.instructions) {
        if (ins.kind == OpKind::Send) {
          ASSERT_NE(ins.peer, p.rank) << c.name;
          EXPECT_TRUE(sends.emplace(MessageKey{p.rank, ins.peer, ins.tag}, ins.bytes).second)
              << c.name << ": duplicate " << op_trace_line(ins);
        } else if (ins.kind == OpKind::Recv) {
          EXPECT_TRUE(recvs.emplace(MessageKey{ins.peer, p.rank, ins.tag}, ins.bytes).second)
              << c.name << ": duplicate " << op_trace_line(ins);
        }
      }
    }
    EXPECT_FALSE(sends.empty()) << c.name;
    EXPECT_EQ(sends, recvs) << c.name;
  }
}

TEST(ProgramMessages, PipelineMessagesUseScatterGatherWithoutSequenceParallelism) {
  const Job job = tiny_gpt({"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                            "--global-batch-size", "2"}, 4);
  const Lowered l = lower_all(job);
  const double full = 64.0 * 128 * 2;   // [s*b, h] bf16
  int recvs = 0;
  for (const RankProgram& p : l.programs) {
    for (size_t i = 0; i < p.instructions.size(); ++i) {
      const Instruction& ins = p.instructions[i];
      if (ins.group != ParallelGroup::Pp || !is_communication(ins.kind)) continue;
      EXPECT_DOUBLE_EQ(ins.bytes, full / 2);
      if (ins.kind != OpKind::Recv) continue;
      ++recvs;
      const Instruction& next = p.instructions[i + 1];
      EXPECT_EQ(next.kind, OpKind::AllGather);
      EXPECT_EQ(next.group, ParallelGroup::Tp);
      EXPECT_DOUBLE_EQ(next.bytes, full);
    }
  }
  EXPECT_EQ(recvs, 4 * 2);   // 4 ranks x 2 microbatches (activation or gradient)
}

// Per group kind: every member of every group issues the same collectives, in the same order.
TEST(ProgramCollectives, GroupMembersIssueTheSameSequence) {
  const std::vector<ParallelGroup> kinds = {
      ParallelGroup::Tp, ParallelGroup::Cp, ParallelGroup::DpCp, ParallelGroup::ModelParallel, ParallelGroup::Embedding,
      ParallelGroup::Ep, ParallelGroup::ExpertTp, ParallelGroup::ExpertTpEp, ParallelGroup::ExpertTpEpPp,
      ParallelGroup::ExpertDp};
  std::vector<Layout> cases = layouts();
  cases.push_back({"gpt tied pp2 dp2 allgather-moe", tiny_moe({"--pipeline-model-parallel-size", "2",
                                                               "--expert-model-parallel-size", "2",
                                                               "--moe-token-dispatcher-type", "allgather",
                                                               "--global-batch-size", "4"}, 4)});
  for (const Layout& c : cases) {
    const Lowered l = lower_all(c.job);
    for (ParallelGroup kind : kinds) {
      for (const auto& members : l.grid.groups(kind)) {
        std::vector<std::tuple<OpKind, double, Site>> first;
        for (size_t m = 0; m < members.size(); ++m) {
          std::vector<std::tuple<OpKind, double, Site>> seq;
          for (const Instruction& ins : l.programs[static_cast<size_t>(members[m])].instructions)
            if (is_collective(ins.kind) && ins.group == kind) seq.emplace_back(ins.kind, ins.bytes, ins.site);
          if (m == 0) first = seq;
          else EXPECT_EQ(seq, first) << c.name << " group " << to_string(kind) << " member " << members[m];
        }
      }
    }
  }
}

TEST(ProgramCollectives, MoeAllToAllBytesAreExpectedUniformRouting) {
  // EP 4, ETP 1, no TP: each rank routes its 64 tokens x top-2 and sends 3/4 of the copies away.
  const Lowered a = lower_all(tiny_moe({"--expert-model-parallel-size", "4", "--expert-tensor-parallel-size", "1",
                                        "--global-batch-size", "4"}, 4));
  const double h = 128, e = 2;
  int count = 0;
  for (const Instruction& ins : a.programs[1].instructions) {
    if (ins.kind != OpKind::AllToAllV) continue;
    ++count;
    EXPECT_DOUBLE_EQ(ins.bytes, 64 * 2 * h * e * 3 / 4);
    EXPECT_TRUE(ins.routed);
    EXPECT_EQ(ins.group, ParallelGroup::Ep);
  }
  EXPECT_EQ(count, 4 * 4 * 1);   // 4 layers x (dispatch, combine, and their gradients) x 1 microbatch
  // TP 2 with SP, EP 2, ETP 2: 32 tokens per rank; the expert-TP group then gathers both shards.
  const Lowered b = lower_all(tiny_moe({"--tensor-model-parallel-size", "2", "--sequence-parallel",
                                        "--expert-model-parallel-size", "2", "--global-batch-size", "2"}, 4));
  for (const Instruction& ins : b.programs[0].instructions) {
    if (ins.kind == OpKind::AllToAllV) {
      EXPECT_DOUBLE_EQ(ins.bytes, 32 * 2 * h * e / 2);
    }
    if (ins.group == ParallelGroup::ExpertTp && is_collective(ins.kind)) {
      EXPECT_DOUBLE_EQ(ins.bytes, 32 * 2 * 2 * h * e);
    }
    if (ins.kind == OpKind::Gemm && ins.site == Site::ExpertFc1) {
      EXPECT_EQ(ins.batch, 4);        // 8 experts / EP 2
      EXPECT_EQ(ins.m, 32);           // 128 copies over 4 local experts
      EXPECT_EQ(ins.n, 2 * 192 / 2);  // SwiGLU [h, 2f] split by ETP 2
    }
  }
}

// Data-parallel gradient reduction: bucketed and overlapped on pipeline rank 0, one bucket per
// buffer elsewhere and without --overlap-grad-reduce.
TEST(ProgramDataParallel, BucketsFollowMegatronsRule) {
  auto job = [](bool overlap) {
    std::vector<std::string> f = {"--num-layers", "4", "--hidden-size", "2048", "--num-attention-heads", "16",
                                  "--seq-length", "128", "--max-position-embeddings", "128", "--vocab-size", "1000",
                                  "--micro-batch-size", "1", "--global-batch-size", "8", "--bf16",
                                  "--pipeline-model-parallel-size", "2"};
    if (overlap) f.push_back("--overlap-grad-reduce");
    return testing::job_from_flags(f, 4);
  };
  for (bool overlap : {false, true}) {
    const Lowered l = lower_all(job(overlap));
    for (const RankProgram& p : {l.programs[0], l.programs[2]}) {
      double bytes = 0;
      int buckets = 0;
      int32_t last_backward = -1;
      for (size_t i = 0; i < p.instructions.size(); ++i)
        if (p.instructions[i].phase == Phase::Backward && p.instructions[i].stream == StreamKind::Compute)
          last_backward = static_cast<int32_t>(i);
      for (size_t i = 0; i < p.instructions.size(); ++i) {
        const Instruction& ins = p.instructions[i];
        if (ins.site != Site::DpGrad) continue;
        ++buckets;
        bytes += ins.bytes;
        ASSERT_FALSE(ins.deps.empty());
        const Instruction& producer = p.instructions[static_cast<size_t>(ins.deps[0])];
        EXPECT_TRUE(producer.kind == OpKind::GemmGradWeight || producer.kind == OpKind::EmbeddingGrad ||
                    producer.kind == OpKind::NormGrad) << op_trace_line(producer);
        EXPECT_EQ(producer.microbatch, 3);   // the last microbatch's backward
        // Overlapped: issued right after its last gradient, inside the last backward.
        if (overlap) {
          EXPECT_EQ(ins.deps[0], static_cast<int32_t>(i) - 1);
        } else {
          EXPECT_GT(static_cast<int32_t>(i), last_backward);
        }
        if (overlap && p.pipeline_rank == 0 && buckets == 1) {
          EXPECT_LT(static_cast<int32_t>(i), last_backward);
        }
      }
      const StageMemory st = memory_per_rank(l.job).stages[static_cast<size_t>(p.pipeline_rank)];
      EXPECT_DOUBLE_EQ(bytes, st.gradients_bytes);
      // Layers of 12 h^2 = 50M parameters: on rank 0 with overlap a bucket closes once it holds
      // 40M, i.e. one per layer, plus the embedding's; elsewhere one bucket.
      EXPECT_EQ(buckets, overlap && p.pipeline_rank == 0 ? 3 : 1);
    }
  }
}

// PP 1 with tied embeddings: the word embedding's gradient is complete only after the embedding's
// backward (the output layer contributed first), so its bucket waits for EmbeddingGrad.
TEST(ProgramDataParallel, TiedEmbeddingBucketWaitsForBothContributions) {
  const Lowered l = lower_all(tiny_gpt({"--overlap-grad-reduce", "--use-distributed-optimizer",
                                        "--global-batch-size", "4"}, 2));
  const RankProgram& p = l.programs[0];
  int embedding_buckets = 0;
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    const Instruction& ins = p.instructions[i];
    if (ins.site != Site::DpGrad) continue;
    const Instruction& producer = p.instructions[static_cast<size_t>(ins.deps[0])];
    if (producer.kind == OpKind::EmbeddingGrad) ++embedding_buckets;
    EXPECT_NE(producer.site, Site::Output) << "bucket issued before the embedding's own gradient";
  }
  // The shared word embedding has its own bucket with the distributed optimizer; the learned
  // positions (same kernel) close the bucket before it.
  EXPECT_EQ(embedding_buckets, 2);
}

TEST(ProgramDataParallel, TiedEmbeddingAllReduceBetweenFirstAndLastStage) {
  const Lowered l = lower_all(tiny_gpt({"--pipeline-model-parallel-size", "4", "--global-batch-size", "4"}, 8));
  for (const RankProgram& p : l.programs) {
    int n = 0;
    for (const Instruction& ins : p.instructions)
      if (ins.group == ParallelGroup::Embedding) ++n;
    EXPECT_EQ(n, (p.pipeline_rank == 0 || p.pipeline_rank == 3) ? 1 : 0) << p.rank;
  }
}

TEST(ProgramSymmetry, ClassesAreExact) {
  for (const Layout& c : layouts()) {
    const Lowered l = lower_all(c.job);
    const std::vector<int64_t> reps = class_representatives(l.job, l.grid);
    ASSERT_EQ(static_cast<int64_t>(reps.size()), l.grid.pp_size());
    for (size_t i = 0; i < reps.size(); ++i) EXPECT_EQ(symmetry_class(l.job, l.grid, reps[i]), int64_t(i));
    for (const RankProgram& p : l.programs) {
      const int64_t cls = symmetry_class(l.job, l.grid, p.rank);
      const RankProgram& rep = l.programs[static_cast<size_t>(reps[static_cast<size_t>(cls)])];
      EXPECT_TRUE(equal_up_to_peers(p, rep)) << c.name << ": rank " << p.rank << " vs " << rep.rank;
      EXPECT_GE(p.rank, rep.rank);
    }
  }
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// Index of the GemmGradWeight at `site` that precedes instruction i most closely, or -1.
int32_t wgrad_before(const RankProgram& p, size_t i, Site site) {
  for (size_t j = i; j-- > 0;)
    if (p.instructions[j].kind == OpKind::GemmGradWeight && p.instructions[j].site == site) return int32_t(j);
  return -1;
}

// The backward TP all-reduce of dX waits for the layer's weight gradient only without Megatron's
// asynchronous TP all-reduce (--no-async-tensor-model-parallel-allreduce).
TEST(ProgramTensorParallel, BackwardAllReduceWaitsForTheWeightGradientOnlyWhenSynchronous) {
  for (bool async : {true, false}) {
    std::vector<std::string> flags = {"--tensor-model-parallel-size", "2", "--global-batch-size", "1"};
    if (!async) flags.push_back("--no-async-tensor-model-parallel-allreduce");
    const Lowered l = lower_all(tiny_gpt(flags, 2));
    EXPECT_EQ(l.job.parallel.async_tensor_model_parallel_allreduce, async);
    int checked = 0;
    const RankProgram& p = l.programs[0];
    for (size_t i = 0; i < p.instructions.size(); ++i) {
      const Instruction& x = p.instructions[i];
      if (x.kind != OpKind::AllReduce || (x.site != Site::QkvGradAr && x.site != Site::Fc1GradAr)) continue;
      const int32_t w = wgrad_before(p, i, x.site == Site::QkvGradAr ? Site::Qkv : Site::Fc1);
      ASSERT_GE(w, 0);
      const bool waits = std::find(x.deps.begin(), x.deps.end(), w) != x.deps.end();
      EXPECT_EQ(waits, !async) << to_string(x.site) << " at " << i;
      ++checked;
    }
    EXPECT_GT(checked, 0);
  }
}

// Without --overlap-p2p-communication a pipeline send blocks: the stage's next compute
// instruction depends on it. With it, no compute instruction waits for a send.
TEST(ProgramMessages, PipelineSendsBlockTheNextComputeUnlessOverlapped) {
  for (bool overlap : {false, true}) {
    std::vector<std::string> flags = {"--pipeline-model-parallel-size", "2", "--global-batch-size", "4"};
    if (overlap) flags.push_back("--overlap-p2p-communication");
    const Lowered l = lower_all(tiny_gpt(flags, 2));
    int sends = 0, followed = 0, gated = 0;
    for (const RankProgram& p : l.programs) {
      for (size_t i = 0; i < p.instructions.size(); ++i) {
        if (p.instructions[i].kind != OpKind::Send) continue;
        ++sends;
        for (size_t j = i + 1; j < p.instructions.size(); ++j) {
          const Instruction& y = p.instructions[j];
          if (y.stream != StreamKind::Compute) continue;
          ++followed;
          gated += std::find(y.deps.begin(), y.deps.end(), int32_t(i)) != y.deps.end();
          break;
        }
      }
    }
    EXPECT_GT(followed, 0);
    EXPECT_LE(followed, sends);
    EXPECT_EQ(gated, overlap ? 0 : followed) << "overlap " << overlap;
  }
}

}  // namespace
}  // namespace tandem
