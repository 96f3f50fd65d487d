// --tp-comm-overlap: the simulator's rewrite of TP collective/GEMM pairs into pipelined chunks
// (backends/sim/tp_overlap.h), checked on lowered programs and end to end.
#include "backends/sim/tp_overlap.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

// One node, TP8 with sequence parallelism: TP communication is a visible share of the time.
Job tp_job(const std::vector<std::string>& extra = {}) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 8;
  request.megatron_flags = {"--num-layers", "2", "--hidden-size", "8192", "--num-attention-heads", "64",
                            "--seq-length", "2048", "--max-position-embeddings", "2048", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "2", "--bf16",
                            "--tensor-model-parallel-size", "8", "--sequence-parallel"};
  request.megatron_flags.insert(request.megatron_flags.end(), extra.begin(), extra.end());
  return load_job(request);
}

RankProgram program_of(const Job& job) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  return lower_rank(job, grid, schedule_for_job(job), 0);
}

double tp_collective_bytes(const RankProgram& p, OpKind kind) {
  double sum = 0;
  for (const Instruction& x : p.instructions)
    if (x.kind == kind && x.group == ParallelGroup::Tp) sum += x.bytes;
  return sum;
}

TEST(TpOverlap, PipelinesEveryGatherAndScatterPairKeepingFlopsAndBytes) {
  const Job job = tp_job({"--tp-comm-overlap"});
  const RankProgram lowered = program_of(job);
  RankProgram split = lowered;
  const TpOverlapResult r = pipeline_tp_overlap(split, 8);
  // Per layer and microbatch: qkv and fc1 (forward), proj and fc2 dgrad (backward) gather their
  // input; proj and fc2 (forward) scatter their output. 2 layers x 2 microbatches.
  EXPECT_EQ(r.gathers, 4 * 2 * 2);
  EXPECT_EQ(r.scatters, 2 * 2 * 2);
  EXPECT_EQ(split.instructions.size(), lowered.instructions.size() + r.gathers * (6 + 7) + r.scatters * (7 + 7));
  EXPECT_NEAR(split.total_flops(), lowered.total_flops(), 1e-9 * lowered.total_flops());
  for (OpKind kind : {OpKind::AllGather, OpKind::ReduceScatter})
    EXPECT_NEAR(tp_collective_bytes(split, kind), tp_collective_bytes(lowered, kind), 1e-12 * tp_collective_bytes(lowered, kind))
        << to_string(kind);
  EXPECT_EQ(split.peak_bytes(), lowered.peak_bytes());
  // Every dependency points backwards; every GEMM chunk after the first waits for an exchange step.
  for (size_t i = 0; i < split.instructions.size(); ++i)
    for (int32_t d : split.instructions[i].deps) ASSERT_LT(static_cast<size_t>(d), i);
  // Every piece carries its note: GEMM chunks their share of the whole, collective pieces after
  // the first that they continue one exchange; nothing else has a note.
  int64_t waiting_chunks = 0, gemm_chunks = 0, continuing = 0;
  for (const Instruction& x : split.instructions) {
    if (!x.cost) continue;
    ASSERT_GE(x.cost->piece, 0);
    if (is_collective(x.kind)) {
      EXPECT_EQ(x.cost->continues_exchange, x.cost->piece > 0);
      continuing += x.cost->continues_exchange;
      continue;
    }
    ++gemm_chunks;
    EXPECT_EQ(x.m * 8, x.cost->whole_m);
    EXPECT_DOUBLE_EQ(x.cost->share, 1.0 / 8);
    for (int32_t d : x.deps) waiting_chunks += split.instructions[static_cast<size_t>(d)].kind == OpKind::AllGather;
  }
  EXPECT_EQ(gemm_chunks, (r.gathers + r.scatters) * 8);
  EXPECT_EQ(continuing, r.gathers * 6 + r.scatters * 7);   // ring steps 1..6 of 0..6, reduce-scatter pieces 1..7
  EXPECT_EQ(waiting_chunks, r.gathers * 7);  // chunk 0 on the gather's input, chunks 1..7 on steps 0..6
}

TEST(TpOverlap, NothingToDoWithoutTensorParallelism) {
  const Job job = tp_job();
  RankProgram p = program_of(job);
  const RankProgram before = p;
  const TpOverlapResult r = pipeline_tp_overlap(p, 1);
  EXPECT_EQ(r.gathers + r.scatters, 0);
  EXPECT_TRUE(p.instructions == before.instructions);
}

nlohmann::json simulate_json(const Job& job, const SimOptions& options = {}) {
  return nlohmann::json::parse(testing::run_isolated([&] { return result_to_json(simulate(job, options)).dump(); }));
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TpOverlap, HidesTpCommunicationButNoMoreThanWasExposed) {
  const nlohmann::json plain = simulate_json(tp_job());
  const nlohmann::json overlapped = simulate_json(tp_job({"--tp-comm-overlap"}));
  const double t0 = plain["iteration_time_s"].get<double>(), t1 = overlapped["iteration_time_s"].get<double>();
  const double exposed0 = plain["breakdown"]["tp_comm"].get<double>();
  const double exposed1 = overlapped["breakdown"]["tp_comm"].get<double>();
  ASSERT_GT(exposed0, 0.05 * t0);  // the case is meaningful: TP communication shows without overlap
  EXPECT_LT(t1, t0);
  EXPECT_LT(exposed1, 0.6 * exposed0);
  EXPECT_GE(t1, t0 - exposed0);   // it cannot save more than the exposed TP time
  bool noted = false;
  for (const auto& n : overlapped["notes"]) noted |= n.get<std::string>().find("--tp-comm-overlap") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(TpOverlap, OpTraceShowsTheProgramAsLowered) {
  SimOptions a, b;
  a.op_trace_path = ::testing::TempDir() + "tp_overlap_plain.ops";
  b.op_trace_path = ::testing::TempDir() + "tp_overlap_on.ops";
  simulate_json(tp_job(), a);
  simulate_json(tp_job({"--tp-comm-overlap"}), b);
  const std::string plain = slurp(*a.op_trace_path), on = slurp(*b.op_trace_path);
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(plain, on);
}

TEST(TpOverlap, RequiresSequenceParallelism) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 8;
  request.megatron_flags = {"--num-layers", "2", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--tensor-model-parallel-size", "8", "--tp-comm-overlap"};
  try {
    load_job(request);
    FAIL() << "accepted --tp-comm-overlap without --sequence-parallel";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--sequence-parallel"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::sim
