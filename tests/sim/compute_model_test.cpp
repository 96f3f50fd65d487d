// The compute model: GEMM ceilings, tile/wave quantisation, small-k, memory-bound ops, flash
// attention, fp8, measured profiles, data-file errors and determinism.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "backends/sim/stack.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::sim {
namespace {

namespace fs = std::filesystem;

GpuSpec gpu_of(const std::string& cluster) { return load_cluster(cluster).gpu; }

ComputeModel h100(ComputeOptions o = {}) { return ComputeModel::for_gpu(gpu_of("dgx-h100"), o); }
ComputeModel a100(ComputeOptions o = {}) { return ComputeModel::for_gpu(gpu_of("dgx-a100"), o); }
// The H100 stack with every parameter at its prior (the public short benchmarks, before any fit).
ComputeModel h100_at_priors() {
  Stack s = stack_for_gpu("H100-SXM5-80GB");
  for (const StackParameter& p : std::vector<StackParameter>(s.parameters)) set_parameter(s, p.name, p.prior);
  return ComputeModel(gpu_of("dgx-h100"), s.efficiency);
}

Instruction gemm(int64_t m, int64_t n, int64_t k, int64_t batch = 1, OpKind kind = OpKind::Gemm) {
  Instruction ins;
  ins.kind = kind;
  ins.m = m;
  ins.n = n;
  ins.k = k;
  ins.batch = batch;
  ins.flops = 2.0 * double(m) * double(n) * double(k) * double(batch);
  return ins;
}

Instruction attention(int64_t s, int64_t d, int64_t batch, OpKind kind = OpKind::Attention) {
  Instruction ins;
  ins.kind = kind;
  ins.m = s;
  ins.n = s;
  ins.k = d;
  ins.batch = batch;
  ins.flops = 4.0 * double(batch) * double(s) * double(s) * double(d) * (kind == OpKind::Attention ? 1.0 : 2.5);
  return ins;
}

Instruction memory_op(OpKind kind, double bytes) {
  Instruction ins;
  ins.kind = kind;
  ins.m = 4096;
  ins.n = 8192;
  ins.bytes = bytes;
  return ins;
}

double tflops(const ComputeModel& model, const Instruction& ins) { return ins.flops / model.time(ins) / 1e12; }

// A scratch file that disappears with the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_((fs::temp_directory_path() / ("tandem_cm_" + std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The H100 stack's priors are the short benchmarks (training runs them at the fitted
// tensor_clock_factor): at the priors 8192^3 lands on the measured Hopper ceiling.
TEST(ComputeModel, Gemm8192CubeOnH100LandsAtTheMeasuredHopperCeilingAtTheBenchmarkClock) {
  const ComputeModel model = h100_at_priors();
  EXPECT_FALSE(model.generic());
  const double benchmark = tflops(model, gemm(8192, 8192, 8192)) * 1e12 / model.gpu().peak_flops_bf16;
  EXPECT_GE(benchmark, 0.78);
  EXPECT_LE(benchmark, 0.81);
}

TEST(ComputeModel, OneTileMoreThanAFullWaveIsSlowerPerFlop) {
  const ComputeModel model = h100();
  ASSERT_EQ(model.gpu().sm_count, 132);
  // 6 x 22 = 132 output tiles of 128 x 256 fill one wave; 7 x 19 = 133 need a second one (or a
  // split-K that still leaves a partial wave).
  const GemmPlan full = model.plan_gemm({{768}, 5632, 8192});
  EXPECT_EQ(full.ctas, 132);
  EXPECT_EQ(full.waves, 1);
  const double per_flop_full = model.time(gemm(768, 5632, 8192)) / gemm(768, 5632, 8192).flops;
  const double per_flop_spill = model.time(gemm(896, 4864, 8192)) / gemm(896, 4864, 8192).flops;
  EXPECT_GT(per_flop_spill / per_flop_full, 1.2);
  // Tile quantisation: one more row costs a whole row of tiles.
  const double per_flop_row = model.time(gemm(769, 5632, 8192)) / gemm(769, 5632, 8192).flops;
  EXPECT_GT(per_flop_row / per_flop_full, 1.2);
}

TEST(ComputeModel, SmallKGemmsAreLessEfficient) {
  const ComputeModel model = h100();
  double previous = 0;
  for (int64_t k : {64, 256, 1024, 4096, 16384}) {
    const double rate = tflops(model, gemm(8192, 8192, k));
    EXPECT_GT(rate, previous) << "k = " << k;
    previous = rate;
  }
  EXPECT_LT(tflops(model, gemm(8192, 8192, 256)), 0.6 * tflops(model, gemm(8192, 8192, 8192)));
}

TEST(ComputeModel, SmallOutputsWithLongKSplitK) {
  const GemmPlan plan = h100().plan_gemm({{256}, 256, 65536});
  EXPECT_GT(plan.split_k, 1);
  EXPECT_GT(plan.ctas, 4);
}

TEST(ComputeModel, GroupedExpertGemmsShareWavesAndEmptyExpertsCostALaunch) {
  const ComputeModel model = h100();
  // 8 experts of 512 rows: 4 x 16 tiles each = 512 CTAs, 4 waves together; separately 8 x 1 wave.
  const GemmPlan grouped = model.plan_gemm({{512, 512, 512, 512, 512, 512, 512, 512}, 4096, 4096});
  const GemmPlan one = model.plan_gemm({{512}, 4096, 4096});
  EXPECT_LT(grouped.compute_s, 8 * one.compute_s);
  Instruction empty = gemm(0, 4096, 4096);
  empty.flops = 0;
  EXPECT_DOUBLE_EQ(model.time(empty), model.efficiency().launch_overhead_s);
}

// The stack's "moe" parameters: expert GEMMs (sites expert-fc1/fc2, every GEMM kind) take
// 1 / expert_gemm_efficiency the time of the dense GEMM of their shape, other GEMMs are untouched,
// and each forward router adds forward_overhead_us; the router's backward does not.
TEST(ComputeModel, MoeStackParametersSlowExpertGemmsAndTheForwardRouterOnly) {
  Stack s = stack_for_gpu("H100-SXM5-80GB");
  set_parameter(s, "moe.expert_gemm_efficiency", 1.0);
  set_parameter(s, "moe.forward_overhead_us", 0.0);
  const ComputeModel before(gpu_of("dgx-h100"), s.efficiency);
  set_parameter(s, "moe.expert_gemm_efficiency", 0.5);
  set_parameter(s, "moe.forward_overhead_us", 250.0);
  const ComputeModel after(gpu_of("dgx-h100"), s.efficiency);
  for (OpKind kind : {OpKind::Gemm, OpKind::GemmGradInput, OpKind::GemmGradWeight}) {
    Instruction expert = gemm(2048, 1536, 2048, 16, kind);
    expert.site = Site::ExpertFc1;
    const Instruction dense = gemm(2048, 1536, 2048, 16, kind);
    EXPECT_NEAR(after.op_time(expert).kernels, 2.0 * before.op_time(expert).kernels, 1e-12);
    EXPECT_DOUBLE_EQ(after.op_time(dense).kernels, before.op_time(dense).kernels);
  }
  Instruction router = gemm(4096, 128, 2048, 1, OpKind::Router);
  router.site = Site::Router;
  EXPECT_NEAR(after.op_time(router).kernels - before.op_time(router).kernels, 250e-6, 1e-12);
  Instruction router_grad = router;
  router_grad.kind = OpKind::RouterGrad;
  EXPECT_DOUBLE_EQ(after.op_time(router_grad).kernels, before.op_time(router_grad).kernels);
}

TEST(ComputeModel, MemoryBoundOpTimeIsBytesOverBandwidth) {
  const ComputeModel model = h100();
  const double bytes = 4.0 * 1024 * 1024 * 1024;
  const double t = model.time(memory_op(OpKind::Elementwise, bytes));
  const double bandwidth = model.gpu().hbm_bandwidth;
  EXPECT_GT(t, bytes / bandwidth);          // never faster than the HBM
  EXPECT_LT(t, 1.25 * bytes / bandwidth);   // and close to it for a streaming kernel
  const GpuEfficiency& e = model.efficiency();
  const double expected = bytes / (bandwidth * e.copy_fraction * e.ops[size_t(OpKind::Elementwise)].efficiency);
  EXPECT_NEAR(t, expected, 1e-12);   // its launch is issued while earlier work runs
  const OpTime parts = model.op_time(memory_op(OpKind::Elementwise, bytes));
  EXPECT_NEAR(parts.kernels, expected, 1e-12);
  EXPECT_NEAR(parts.launches, e.launch_overhead_s * e.ops[size_t(OpKind::Elementwise)].launches, 1e-15);
  // Tiny ops are launch-bound: with a 5 us launch the host needs longer to launch one than the GPU
  // to run it, and time() is then the launch.
  GpuEfficiency slow_host = e;
  slow_host.launch_overhead_s = 5e-6;
  const ComputeModel launched(model.gpu(), slow_host);
  const OpTime tiny = launched.op_time(memory_op(OpKind::Norm, 1024));
  EXPECT_LT(tiny.kernels, 2e-6);
  EXPECT_NEAR(tiny.launches, 5e-6 * e.ops[size_t(OpKind::Norm)].launches, 1e-12);
  EXPECT_DOUBLE_EQ(launched.time(memory_op(OpKind::Norm, 1024)), tiny.launches);
}

// At the public short-benchmark priors (FlashAttention-3 paper's cuDNN figures vs cuBLAS 8192^3);
// a training fit may move them.
TEST(ComputeModel, AttentionIsSlowerPerFlopThanABigGemmAtThePriors) {
  const ComputeModel model = h100_at_priors();
  const double gemm_rate = tflops(model, gemm(8192, 8192, 8192));
  const Instruction fwd = attention(4096, 128, 2 * 32);
  const Instruction bwd = attention(4096, 128, 2 * 32, OpKind::AttentionGrad);
  const double fwd_rate = model.attention_kernel_flops(fwd) / model.time(fwd) / 1e12;
  const double bwd_rate = 2.5 * model.attention_kernel_flops(bwd) / model.time(bwd) / 1e12;
  EXPECT_LT(fwd_rate, 0.85 * gemm_rate);
  EXPECT_LT(bwd_rate, fwd_rate);
}

TEST(ComputeModel, CausalKernelSkipsHalfTheSquare) {
  const ComputeModel model = h100();
  const Instruction fwd = attention(4096, 128, 16);
  const double square = 4.0 * 16 * 4096.0 * 4096.0 * 128;
  EXPECT_DOUBLE_EQ(fwd.flops, square);
  const double ratio = model.attention_kernel_flops(fwd) / square;
  EXPECT_GT(ratio, 0.5);     // diagonal blocks are computed whole
  EXPECT_LT(ratio, 0.52);    // (32 + 1) / 64 blocks of 128 at s = 4096
  // The instruction's FLOPs count the full square, so the kernel finishes in about half the time
  // that FLOPs / rate would suggest: the rate in the papers' causal convention (half the square),
  // with the stack's priors (the short benchmarks, before the training fit), is what the
  // FlashAttention-3 paper reports for cuDNN at 4k (518 TFLOP/s).
  const Instruction paper = attention(4096, 128, 4 * 16);   // batch x seqlen = 16k, 16 heads
  const double causal_convention = paper.flops / 2 / h100_at_priors().time(paper) / 1e12;
  EXPECT_NEAR(causal_convention, 518, 0.06 * 518);
}

// Dropout inside a flash kernel costs its Philox draws: the kernel part of the time grows by
// 1 / dropout_forward_factor (0.88 on H100) and 1 / dropout_backward_factor (0.78).
TEST(ComputeModel, FlashAttentionWithDropoutPaysForItsRandomNumbers) {
  const ComputeModel plain = h100();
  const ComputeModel dropout = h100({.fp8 = false, .flash_attention = true, .attention_dropout = 0.1});
  const Instruction fwd = attention(4096, 128, 16);
  const Instruction bwd = attention(4096, 128, 16, OpKind::AttentionGrad);
  const double fwd_ratio = dropout.op_time(fwd).kernels / plain.op_time(fwd).kernels;
  const double bwd_ratio = dropout.op_time(bwd).kernels / plain.op_time(bwd).kernels;
  EXPECT_NEAR(fwd_ratio, 1 / 0.88, 1e-9);
  EXPECT_NEAR(bwd_ratio, 1 / 0.78, 1e-9);
}

TEST(ComputeModel, UnfusedAttentionIsSlowerThanFlash) {
  const ComputeModel flash = a100();
  const ComputeModel unfused = a100({.fp8 = false, .flash_attention = false, .attention_dropout = 0.1});
  const Instruction fwd = attention(2048, 128, 8 * 12);
  EXPECT_GT(unfused.time(fwd), 1.5 * flash.time(fwd));
  const Instruction bwd = attention(2048, 128, 8 * 12, OpKind::AttentionGrad);
  EXPECT_GT(unfused.time(bwd), flash.time(bwd));
  // V100 has no flash kernel: its attention runs unfused whatever the options say.
  const ComputeModel v100 = ComputeModel::for_gpu(gpu_of("dgx-v100"));
  EXPECT_FALSE(v100.efficiency().flash_supported);
  EXPECT_NE(v100.describe().find("unfused"), std::string::npos);
}

TEST(ComputeModel, Fp8GemmsUseTheFp8PeakAndPayACast) {
  const ComputeModel bf16 = h100();
  const ComputeModel fp8 = h100({.fp8 = true});
  const Instruction big = gemm(16384, 8192, 8192);
  const double speedup = bf16.time(big) / fp8.time(big);
  EXPECT_GT(speedup, 1.3);
  EXPECT_LT(speedup, 2.0);
  // Attention stays 16-bit.
  const Instruction fwd = attention(4096, 128, 32);
  EXPECT_DOUBLE_EQ(bf16.time(fwd), fp8.time(fwd));
  // So does the output layer (Megatron-Core's ColumnParallelLinear, not a Transformer Engine module).
  Instruction logits = big;
  logits.site = Site::Output;
  EXPECT_DOUBLE_EQ(bf16.time(logits), fp8.time(logits));
  EXPECT_LT(fp8.time(big), fp8.time(logits));
  // A100 has no FP8 tensor cores.
  EXPECT_THROW(a100({.fp8 = true}), UserError);
}

TEST(ComputeModel, EveryComputeKindOnEveryGpuFileHasAPositiveTime) {
  for (const char* cluster : {"dgx-a100", "dgx-h100", "dgx-v100", "hgx-h800"}) {
    const ComputeModel model = ComputeModel::for_gpu(gpu_of(cluster));
    EXPECT_FALSE(model.generic()) << cluster;
    for (int i = 0; i < kOpKindCount; ++i) {
      const auto kind = static_cast<OpKind>(i);
      if (!is_compute_kind(kind)) continue;
      Instruction ins = gemm(4096, 4096, 4096, 1, kind);
      if (kind == OpKind::Attention || kind == OpKind::AttentionGrad) ins = attention(2048, 128, 16, kind);
      if (kind == OpKind::Router || kind == OpKind::RouterGrad) ins = gemm(4096, 64, 4096, 1, kind);
      if (ins.flops > 0 && kind != OpKind::Gemm && kind != OpKind::GemmGradInput && kind != OpKind::GemmGradWeight &&
          kind != OpKind::Attention && kind != OpKind::AttentionGrad && kind != OpKind::Router && kind != OpKind::RouterGrad)
        ins.flops = 0;
      const double t = model.time(ins);
      EXPECT_GT(t, 0) << cluster << " " << op_kind_name(kind);
      EXPECT_LT(t, 1.0) << cluster << " " << op_kind_name(kind);
    }
  }
}

TEST(ComputeModel, UnknownGpuFallsBackToTheGenericModelAndSaysSo) {
  GpuSpec gpu = gpu_of("dgx-h100");
  gpu.name = "Mystery-GPU";
  const ComputeModel model = ComputeModel::for_gpu(gpu);
  EXPECT_TRUE(model.generic());
  EXPECT_NE(model.describe().find("generic fallback"), std::string::npos);
  EXPECT_NE(model.describe().find("Mystery-GPU"), std::string::npos);
  EXPECT_GT(model.time(gemm(4096, 4096, 4096)), 0);
}

TEST(ComputeModel, CommunicationAndMemoryKindsAreNotItsBusiness) {
  const ComputeModel model = h100();
  Instruction ins;
  ins.kind = OpKind::AllReduce;
  ins.bytes = 1e6;
  EXPECT_DEATH(model.time(ins), "compute instructions only");
}

TEST(ComputeModel, ProfileOverridesExactShapesAndScalesNearestOnes) {
  ComputeModel model = h100();
  const Instruction measured = gemm(4096, 4096, 4096);
  const Instruction near = gemm(4096, 8192, 4096);
  const double model_near = model.time(near);
  const TempFile profile("profile.json", R"([
    {"op": "Gemm", "m": 4096, "n": 4096, "k": 4096, "batch": 1, "dtype": "bf16", "seconds": 0.5},
    {"op": "Gemm", "m": 4096, "n": 4096, "k": 4096, "batch": 1, "dtype": "fp16", "seconds": 0.25},
    {"op": "norm", "m": 4096, "n": 8192, "k": 0, "dtype": "bf16", "seconds": 0.125}
  ])");
  const double model_measured = model.analytical_time(measured);
  model.load_profile(profile.path());
  EXPECT_EQ(model.profile().size(), 3u);
  EXPECT_DOUBLE_EQ(model.time(measured), 0.5);                       // exact shape and dtype
  EXPECT_NEAR(model.time(near), model_near * 0.5 / model_measured, 1e-12 * model_near / model_measured);
  Instruction fp16 = measured;
  fp16.dtype = DType::FP16;
  EXPECT_DOUBLE_EQ(model.time(fp16), 0.25);
  EXPECT_DOUBLE_EQ(model.time(memory_op(OpKind::Norm, 1e6)), 0.125);  // same shape, op names case-insensitive
  // Kinds without entries keep the analytical model.
  const Instruction fwd = attention(4096, 128, 32);
  EXPECT_DOUBLE_EQ(model.time(fwd), model.analytical_time(fwd));
  EXPECT_NE(model.describe().find("3 measured ops"), std::string::npos);
}

TEST(ComputeModel, BadProfilesNameFileFieldAndValue) {
  ComputeModel model = h100();
  const TempFile bad_op("bad_op.json", R"([{"op": "Gemmm", "m": 1, "n": 1, "k": 1, "dtype": "bf16", "seconds": 1}])");
  try {
    model.load_profile(bad_op.path());
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(bad_op.path()), std::string::npos) << what;
    EXPECT_NE(what.find("entries[0].op"), std::string::npos) << what;
    EXPECT_NE(what.find("Gemmm"), std::string::npos) << what;
  }
  const TempFile comm("comm.json", R"([{"op": "AllReduce", "m": 1, "n": 1, "k": 1, "dtype": "bf16", "seconds": 1}])");
  EXPECT_THROW(model.load_profile(comm.path()), UserError);
  const TempFile neg("neg.json", R"([{"op": "Gemm", "m": 1, "n": 1, "k": 1, "dtype": "bf16", "seconds": -1}])");
  EXPECT_THROW(model.load_profile(neg.path()), UserError);
  const TempFile gpu("gpu.json", R"({"gpu": "A100-SXM4-80GB", "entries": []})");
  EXPECT_THROW(model.load_profile(gpu.path()), UserError);
}

TEST(ComputeModel, BadDataFileValuesNameFileFieldAndValue) {
  const std::string good = (fs::path(data_dir()) / "clusters" / "stacks" / "mcore-0.8-h100.json").string();
  const std::string text = read_text(good);
  nlohmann::json doc = nlohmann::json::parse(text);
  doc["gemm"]["fraction_bf16"]["value"] = 1.5;
  const TempFile file("bad_gpu.json", doc.dump(2));
  try {
    load_gpu_efficiency_file(file.path());
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.path()), std::string::npos) << what;
    EXPECT_NE(what.find("gemm.fraction_bf16"), std::string::npos) << what;
    EXPECT_NE(what.find("1.5"), std::string::npos) << what;
  }
  const TempFile unknown("unknown_field.json", R"({"gpu": "X", "gemm": {"fraction_bf16x": {"value": 1}}})");
  EXPECT_THROW(load_gpu_efficiency_file(unknown.path()), UserError);
  std::string underived = text;
  underived.replace(underived.find("\"derivation\""), 12, "\"why\"");
  const TempFile no_derivation("no_derivation.json", underived);
  EXPECT_THROW(load_gpu_efficiency_file(no_derivation.path()), UserError);
}

TEST(ComputeModel, DeterministicAcrossCallsAndInstances) {
  const ComputeModel a = h100();
  const ComputeModel b = h100();
  for (const Instruction& ins : {gemm(5000, 3000, 1000, 3), attention(3000, 96, 24), memory_op(OpKind::Norm, 3e7)}) {
    const double t = a.time(ins);
    EXPECT_EQ(t, a.time(ins));
    EXPECT_EQ(t, b.time(ins));
  }
}

TEST(ComputeModel, JobOptionsFollowTheTrainingSettings) {
  Job job;
  job.training.fp8_format = Fp8Format::Hybrid;
  job.training.attention_backend = AttentionBackend::Unfused;
  job.training.attention_dropout = 0.0;
  const ComputeOptions o = compute_options_for(job);
  EXPECT_TRUE(o.fp8);
  EXPECT_FALSE(o.flash_attention);
  EXPECT_EQ(o.attention_dropout, 0.0);
}

}  // namespace
}  // namespace tandem::sim
