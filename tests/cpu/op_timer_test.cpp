// The op timer behind `tandem calibrate` on the CPU device: the distinct compute shapes of a tiny
// job are complete (every compute instruction is timed or skipped with a reason), times are
// positive, a GEMM's measured FLOP rate agrees with a direct timing of the same call, and the
// profile merges variants that share a profile key.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_device.h"
#include "backends/executor/op_timer.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::exec {
namespace {

const char* kLlama =
    "--num-layers 2 --hidden-size 64 --num-attention-heads 4 --group-query-attention --num-query-groups 2 "
    "--seq-length 32 --max-position-embeddings 32 --vocab-size 128 --make-vocab-size-divisible-by 64 --swiglu "
    "--normalization RMSNorm --position-embedding-type rope --untie-embeddings-and-output-weights "
    "--disable-bias-linear --micro-batch-size 2 --global-batch-size 4";
const char* kGpt =
    "--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 32 --max-position-embeddings 32 "
    "--vocab-size 128 --make-vocab-size-divisible-by 64 --micro-batch-size 1 --global-batch-size 2 "
    "--hidden-dropout 0.1 --attention-dropout 0.1";
const char* kMoe =
    "--num-layers 2 --hidden-size 64 --num-attention-heads 4 --group-query-attention --num-query-groups 2 "
    "--seq-length 32 --max-position-embeddings 32 --vocab-size 128 --make-vocab-size-divisible-by 64 --swiglu "
    "--normalization RMSNorm --position-embedding-type rope --untie-embeddings-and-output-weights "
    "--disable-bias-linear --num-experts 4 --moe-router-topk 2 --moe-ffn-hidden-size 64 "
    "--moe-token-dispatcher-type alltoall --micro-batch-size 1 --global-batch-size 2";

Job tiny_job(const std::string& flags, int64_t gpus = 1, const std::string& extra = "") {
  JobRequest r;
  std::istringstream in(flags + " " + extra);
  for (std::string w; in >> w;) r.megatron_flags.push_back(w);
  r.gpus = gpus;
  return load_job(r);
}

OpTimerOptions quick() {
  OpTimerOptions o;
  o.min_repeats = 3;
  o.min_seconds = 0.002;
  return o;
}

// Compute instructions per kind in the programs, and in the report (timed + skipped, by count).
struct Coverage {
  std::map<OpKind, int64_t> in_programs, in_report;
};

Coverage coverage(const std::vector<RankProgram>& programs, const OpTimingReport& r) {
  Coverage c;
  for (const RankProgram& p : programs)
    for (const Instruction& ins : p.instructions)
      if (is_compute(ins.kind)) ++c.in_programs[ins.kind];
  for (const OpTiming& t : r.timed) c.in_report[t.op.kind] += t.op.count;
  for (const SkippedOp& s : r.skipped) c.in_report[s.op.kind] += s.op.count;
  return c;
}

OpTimingReport time_job(const Job& job, std::vector<RankProgram>* programs_out = nullptr) {
  const std::vector<RankProgram> programs = representative_programs(job);
  cpu::CpuDevice device;
  OpTimingReport r = time_ops(device, job, collect_op_shapes(job, programs), quick());
  if (programs_out != nullptr) *programs_out = programs;
  return r;
}

TEST(OpTimer, LlamaShapesCompleteAndTimed) {
  std::vector<RankProgram> programs;
  const OpTimingReport r = time_job(tiny_job(kLlama), &programs);
  const Coverage c = coverage(programs, r);
  EXPECT_EQ(c.in_programs, c.in_report);   // every compute instruction is timed or skipped
  std::set<OpKind> timed;
  for (const OpTiming& t : r.timed) {
    EXPECT_GT(t.seconds, 0.0) << t.op.describe();
    EXPECT_GE(t.repeats, 3) << t.op.describe();
    EXPECT_FALSE(t.calls.empty()) << t.op.describe();
    timed.insert(t.op.kind);
  }
  for (const SkippedOp& s : r.skipped) EXPECT_FALSE(s.reason.empty()) << s.op.describe();
  // A dense LLaMA layer on one rank has a faithful mapping for every kind it uses.
  for (const auto& [kind, n] : c.in_programs) EXPECT_TRUE(timed.count(kind)) << to_string(kind) << " not timed";
}

TEST(OpTimer, GptWithDropoutAndLearnedPositions) {
  std::vector<RankProgram> programs;
  const OpTimingReport r = time_job(tiny_job(kGpt), &programs);
  const Coverage c = coverage(programs, r);
  EXPECT_EQ(c.in_programs, c.in_report);
  std::set<OpKind> timed;
  for (const OpTiming& t : r.timed) timed.insert(t.op.kind);
  for (OpKind k : {OpKind::Embedding, OpKind::EmbeddingGrad, OpKind::Norm, OpKind::NormGrad, OpKind::Attention,
                   OpKind::AttentionGrad, OpKind::Activation, OpKind::ActivationGrad, OpKind::Elementwise,
                   OpKind::CrossEntropy, OpKind::CrossEntropyGrad, OpKind::OptimizerStep})
    EXPECT_TRUE(timed.count(k)) << to_string(k);
}

TEST(OpTimer, MoeRouterPermuteAndExpertGemms) {
  std::vector<RankProgram> programs;
  const OpTimingReport r = time_job(tiny_job(kMoe), &programs);
  const Coverage c = coverage(programs, r);
  EXPECT_EQ(c.in_programs, c.in_report);
  std::set<std::string> timed;
  for (const OpTiming& t : r.timed) timed.insert(std::string(to_string(t.op.kind)) + " " + to_string(t.op.site));
  for (const char* want : {"Router router", "RouterGrad router", "Permute permute", "Unpermute unpermute",
                           "PermuteGrad permute", "UnpermuteGrad unpermute", "Gemm expert-fc1", "GemmGradWeight expert-fc2",
                           "GemmGradWeight router"})
    EXPECT_TRUE(timed.count(want)) << want;
}

// Context parallelism: the ring steps (diagonal block, then half blocks) are timed as CP rank 0
// runs them, both the causal diagonal step and the half-block steps.
TEST(OpTimer, ContextParallelRingStepsTimed) {
  std::vector<RankProgram> programs;
  const OpTimingReport r = time_job(tiny_job(kLlama, 2, "--context-parallel-size 2"), &programs);
  const Coverage c = coverage(programs, r);
  EXPECT_EQ(c.in_programs, c.in_report);
  std::set<std::pair<OpKind, int>> steps;
  for (const OpTiming& t : r.timed)
    if (t.op.kind == OpKind::Attention || t.op.kind == OpKind::AttentionGrad) {
      steps.insert({t.op.kind, t.op.step});
      EXPECT_EQ(t.op.m, 16) << t.op.describe();   // s / CP local queries
      EXPECT_GT(t.seconds, 0.0);
    }
  for (OpKind k : {OpKind::Attention, OpKind::AttentionGrad})
    for (int step : {0, 1}) EXPECT_TRUE(steps.count({k, step})) << to_string(k) << " step " << step;
  for (const SkippedOp& s : r.skipped) EXPECT_NE(s.op.kind, OpKind::Attention) << s.reason;
}

// The largest forward GEMM of a wider job: the timer's rate vs the same call timed here.
TEST(OpTimer, GemmRatePlausibleAgainstDirectTiming) {
  const Job job = tiny_job(kLlama, 1, "--hidden-size 256 --seq-length 128 --max-position-embeddings 128");
  const OpTimingReport r = time_job(job);
  const OpTiming* big = nullptr;
  for (const OpTiming& t : r.timed)
    if (t.op.kind == OpKind::Gemm && t.op.batch == 1 && (big == nullptr || t.op.flops > big->op.flops)) big = &t;
  ASSERT_NE(big, nullptr);
  const OpShape& s = big->op;
  ASSERT_DOUBLE_EQ(s.flops, 2.0 * double(s.m) * double(s.n) * double(s.k));
  cpu::CpuDevice dev;
  DeviceTensor x = dev.zeros({s.m, s.k}), y = dev.empty({s.m, s.n});
  DeviceTensor w = dev.zeros(s.site == Site::Output ? Shape{s.n, s.k} : Shape{s.k, s.n});
  dev.fill(x, 0.25f);
  dev.fill(w, 0.5f);
  const WeightLayout layout = s.site == Site::Output ? WeightLayout::OutIn : WeightLayout::InOut;
  dev.gemm_forward(x, w, {}, layout, y);   // warm-up
  std::vector<double> times;
  for (int i = 0; i < 15; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    dev.gemm_forward(x, w, {}, layout, y);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double direct = s.flops / times[times.size() / 2], measured = s.flops / big->seconds;
  EXPECT_GT(measured, direct / 3.0) << s.describe() << ": " << measured / 1e9 << " vs " << direct / 1e9 << " GFLOP/s";
  EXPECT_LT(measured, direct * 3.0) << s.describe() << ": " << measured / 1e9 << " vs " << direct / 1e9 << " GFLOP/s";
  EXPECT_FLOAT_EQ(dev.to_host(y)[0], 0.125f * static_cast<float>(s.k));   // the direct call did the product
}

// Variants sharing a profile key (same op and shape, another site) become one count-weighted entry.
TEST(OpTimer, ProfileEntriesMergeVariantsByKey) {
  OpTimingReport r;
  OpShape a;
  a.kind = OpKind::Elementwise;
  a.m = 64;
  a.n = 32;
  a.site = Site::ResidualGrad;
  a.count = 3;
  a.profile_dtype = "bf16";
  OpShape b = a;
  b.site = Site::MoeGradAdd;
  b.count = 1;
  r.timed.push_back(OpTiming{a, 1e-6, 3, "add"});
  r.timed.push_back(OpTiming{b, 5e-6, 3, "add"});
  const nlohmann::json e = profile_entries(r);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["op"], "Elementwise");
  EXPECT_EQ(e[0]["dtype"], "bf16");
  EXPECT_DOUBLE_EQ(e[0]["seconds"].get<double>(), (3 * 1e-6 + 1 * 5e-6) / 4);
}

TEST(OpTimer, RepeatsMustBePositive) {
  const Job job = tiny_job(kLlama);
  cpu::CpuDevice dev;
  OpTimerOptions o;
  o.min_repeats = 0;
  EXPECT_THROW(time_ops(dev, job, {}, o), UserError);
}

}  // namespace
}  // namespace tandem::exec
