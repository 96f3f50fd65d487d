// Parameter, FLOP and memory accounting against the published closed forms
// (shared/calibration/published-throughput.md; Narayanan et al. 2021; Korthikanti et al. 2022).
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/job_loader.h"
#include "models/accounting.h"

namespace tandem {
namespace {

Job job_from_flags(std::vector<std::string> flags, std::optional<int64_t> gpus = std::nullopt) {
  JobRequest request;
  request.megatron_flags = std::move(flags);
  request.gpus = gpus;
  return load_job(request);
}

Job job_from_preset(const std::string& preset, std::vector<std::string> flags = {}) {
  JobRequest request;
  request.config_file = preset;
  request.megatron_flags = std::move(flags);
  return load_job(request);
}

double rel(double got, double want) { return std::abs(got - want) / std::abs(want); }

// GPT-3 175B shape with Megatron flags; `extra` appends layout/training flags.
Job gpt3(std::vector<std::string> extra, std::optional<int64_t> gpus = std::nullopt) {
  std::vector<std::string> flags = {"--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96",
                                    "--seq-length", "2048", "--max-position-embeddings", "2048",
                                    "--vocab-size", "51200", "--bf16"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return job_from_flags(flags, gpus);
}

// ---------------------------------------------------------------------------------------------
// Parameters

TEST(ParameterCount, Gpt3MatchesNarayananEquation2) {
  const Job job = job_from_preset("gpt3-175b");
  const double l = 96, h = 12288, s = 2048, V = 51200;
  ASSERT_EQ(job.model.padded_vocab_size, 51200);   // 50257 padded to a multiple of 128 x TP 8
  const double eq2 = 12 * l * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * l * h));
  const ParameterCount pc = parameter_count(job.model);
  EXPECT_LT(rel(double(pc.total), eq2), 1e-3);
  // Exact up to the final LayerNorm (2h), which eq. (2) leaves out.
  EXPECT_LT(rel(double(pc.total - pc.final_norm), eq2), 1e-12);
  EXPECT_EQ(pc.dense_layer.total(), 12 * 12288LL * 12288 + 13 * 12288LL);
  EXPECT_EQ(pc.active_per_token, pc.total);
}

struct Published {
  const char* name;
  std::vector<std::string> flags;
  double total;        // published parameter count
  double tolerance;    // relative
};

std::vector<std::string> llama_flags(int layers, int hidden, int ffn, int heads) {
  return {"--num-layers", std::to_string(layers), "--hidden-size", std::to_string(hidden), "--ffn-hidden-size",
          std::to_string(ffn), "--num-attention-heads", std::to_string(heads), "--group-query-attention",
          "--num-query-groups", "8", "--seq-length", "8192", "--vocab-size", "128256", "--swiglu",
          "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights",
          "--disable-bias-linear", "--bf16"};
}

TEST(ParameterCount, LlamaFromMegatronFlags) {
  const std::vector<Published> models = {
      {"llama3-8b", llama_flags(32, 4096, 14336, 32), 8.03e9, 0.005},
      {"llama3-70b", llama_flags(80, 8192, 28672, 64), 70.6e9, 0.005},
      {"llama3-405b", llama_flags(126, 16384, 53248, 128), 405.8e9, 0.005},
  };
  for (const auto& m : models) {
    const ParameterCount pc = parameter_count(job_from_flags(m.flags).model);
    EXPECT_LT(rel(double(pc.total), m.total), m.tolerance) << m.name << ": " << pc.total;
  }
}

std::vector<std::string> mixtral_flags(int layers, int hidden, int ffn, int heads, int vocab) {
  auto f = llama_flags(layers, hidden, ffn, heads);
  for (size_t i = 0; i < f.size(); ++i)
    if (f[i] == "--vocab-size") f[i + 1] = std::to_string(vocab);
  f.insert(f.end(), {"--num-experts", "8", "--moe-router-topk", "2", "--seq-length", "4096"});
  return f;
}

TEST(ParameterCount, MixtralTotalAndActive) {
  const ParameterCount x7 = parameter_count(job_from_flags(mixtral_flags(32, 4096, 14336, 32, 32000)).model);
  EXPECT_LT(rel(double(x7.total), 46.7e9), 0.01) << x7.total;
  EXPECT_LT(rel(double(x7.active_per_token), 12.9e9), 0.01) << x7.active_per_token;
  const ParameterCount x22 = parameter_count(job_from_flags(mixtral_flags(56, 6144, 16384, 48, 32768)).model);
  EXPECT_LT(rel(double(x22.total), 140.6e9), 0.01) << x22.total;
  EXPECT_LT(rel(double(x22.active_per_token), 39e9), 0.015) << x22.active_per_token;
  EXPECT_EQ(x22.moe_layer.router, 8 * 6144);
  EXPECT_EQ(x22.moe_layer.active_experts * 4, x22.moe_layer.experts);
}

TEST(ParameterCount, DeepSeekV3MlaMoeAndMtp) {
  const ParameterCount pc = parameter_count(job_from_preset("deepseek-v3").model);
  EXPECT_EQ(pc.num_dense_layers, 3);
  EXPECT_EQ(pc.num_moe_layers, 58);
  // Report §4.2: 671B total, 37B activated; the MTP module adds 11.5B unique parameters
  // (Hugging Face README_WEIGHTS: "11.5B unique parameters", "activation parameters 36.6B"
  // excluding the input embedding, which is counted here).
  EXPECT_LT(rel(double(pc.without_mtp()), 671e9), 0.005) << pc.without_mtp();
  EXPECT_LT(rel(double(pc.active_without_mtp), 37e9), 0.02) << pc.active_without_mtp;
  EXPECT_LT(rel(double(pc.mtp), 11.5e9), 0.02) << pc.mtp;
  EXPECT_LT(rel(double(pc.total), 671e9 + 11.5e9), 0.01) << pc.total;
  // One MLA block: q [7168,1536] + [1536,128·192] + kv [7168,576] + [512,128·256] + out [16384,7168].
  const int64_t mla = 7168LL * 1536 + 1536LL * 128 * 192 + 7168LL * 576 + 512LL * 128 * 256 + 128LL * 128 * 7168;
  EXPECT_EQ(pc.dense_layer.attention, mla);
}

// ---------------------------------------------------------------------------------------------
// FLOPs

// Narayanan Table 1 rows (presets narayanan-*) with the published TFLOP/s per GPU and the
// iteration times implied by eq. (3).
struct Row {
  const char* preset;
  double tflops_per_gpu;
  double iteration_s;
};
const std::vector<Row> kNarayanan = {
    {"narayanan-1.7b", 137, 3.53},   {"narayanan-3.6b", 138, 3.70},   {"narayanan-7.5b", 142, 3.70},
    {"narayanan-18.4b", 135, 9.40},  {"narayanan-39.1b", 138, 14.45}, {"narayanan-76.1b", 140, 16.06},
    {"narayanan-145.6b", 148, 24.82}, {"narayanan-310.1b", 155, 37.61}, {"narayanan-529.6b", 163, 54.08},
    {"narayanan-1t", 163, 102.63}};

struct Shape {
  double B, s, l, h, V;
};
Shape shape(const Job& j) {
  return {double(j.training.global_batch_size), double(j.model.seq_length), double(j.model.num_layers),
          double(j.model.hidden_size), double(j.model.padded_vocab_size)};
}
double korthikanti_eq7(const Shape& x) {
  return 72 * x.B * x.l * x.s * x.h * x.h * (1 + x.s / (6 * x.h) + x.V / (12 * x.h * x.l));
}
double korthikanti_eq8(const Shape& x) {
  return 72 * x.B * x.l * x.s * x.h * x.h * (1 + x.s / (3 * x.h) + x.V / (12 * x.h * x.l));
}
double narayanan_eq3(const Shape& x) {
  return 96 * x.B * x.s * x.l * x.h * x.h * (1 + x.s / (6 * x.h) + x.V / (16 * x.l * x.h));
}

TEST(Flops, NarayananRowsMatchEquations3And7) {
  for (const Row& row : kNarayanan) {
    const Job job = job_from_preset(row.preset);
    ASSERT_EQ(job.training.recompute_granularity, RecomputeGranularity::Full) << row.preset;
    const IterationFlops f = flops_per_iteration(job);
    const Shape x = shape(job);
    EXPECT_LT(rel(f.model, korthikanti_eq7(x)), 1e-9) << row.preset;
    EXPECT_LT(rel(f.hardware, narayanan_eq3(x)), 1e-9) << row.preset;
    // The published TFLOP/s per GPU and the calibration file's implied iteration time agree.
    const double implied = f.hardware / (double(job.world_size) * row.tflops_per_gpu * 1e12);
    EXPECT_LT(rel(implied, row.iteration_s), 0.005) << row.preset << ": " << implied;
  }
}

TEST(Flops, SelectiveRecomputeMatchesKorthikantiEquation8) {
  for (const Row& row : kNarayanan) {
    const Job job = job_from_preset(row.preset, {"--recompute-granularity", "selective"});
    const IterationFlops f = flops_per_iteration(job);
    EXPECT_LT(rel(f.model, korthikanti_eq7(shape(job))), 1e-9) << row.preset;
    EXPECT_LT(rel(f.hardware, korthikanti_eq8(shape(job))), 1e-9) << row.preset;
  }
}

TEST(Flops, Gpt3NoRecomputeHardwareEqualsModel) {
  const Job job = gpt3({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                        "--global-batch-size", "1536"}, 1024);
  const IterationFlops f = flops_per_iteration(job);
  EXPECT_EQ(f.hardware, f.model);
  EXPECT_LT(rel(f.model, korthikanti_eq7(shape(job))), 1e-12);
  // About 32 s per iteration at 138 TFLOP/s on 1024 GPUs with full recompute (Megatron-LM README).
  const Job full = gpt3({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                         "--global-batch-size", "1536", "--recompute-granularity", "full"}, 1024);
  const double seconds = flops_per_iteration(full).hardware / (1024 * 138e12);
  EXPECT_NEAR(seconds, 32.0, 1.5);
}

// Without biases, every matrix product of a token is 2 FLOPs per weight it touches, so the
// non-attention-core forward FLOPs per token are 2 x (active matrix parameters + output layer).
TEST(Flops, MoeForwardIsTwicePerTokenActiveWeights) {
  for (const char* preset : {"mixtral-8x7b", "mixtral-8x22b", "llama3-70b"}) {
    const Job job = job_from_preset(preset);
    const ParameterCount pc = parameter_count(job.model);
    const ForwardFlops f = forward_flops_per_sequence(job.model);
    const double s = double(job.model.seq_length);
    const int64_t norms = (pc.num_dense_layers * pc.dense_layer.norms + pc.num_moe_layers * pc.moe_layer.norms) +
                          pc.final_norm;
    const double matrices = double(pc.active_without_mtp - pc.embedding - norms);
    const double per_token = (f.total() - f.attention_core) / s;
    EXPECT_LT(rel(per_token, 2 * matrices), 1e-12) << preset;
  }
}

TEST(Flops, BlockRecomputeReplaysOnlyTheFirstLayersOfEachChunk) {
  const std::vector<std::string> base = {"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                                         "--global-batch-size", "1536", "--recompute-granularity", "full",
                                         "--recompute-method"};
  auto with = [&](const char* method, const char* n) {
    auto f = base;
    f.insert(f.end(), {method, "--recompute-num-layers", n});
    return flops_per_iteration(gpt3(f, 1024));
  };
  const IterationFlops uniform = with("uniform", "1"), block2 = with("block", "2"), block6 = with("block", "6");
  EXPECT_DOUBLE_EQ(block6.recompute, uniform.recompute);             // 6 layers per stage: all of them
  EXPECT_LT(rel(block2.recompute, uniform.recompute / 3), 1e-12);   // 2 of 6
}

// ---------------------------------------------------------------------------------------------
// Activations (Korthikanti §4)

TEST(Activations, KorthikantiPerLayerFormulas) {
  const double s = 2048, b = 1, h = 12288, a = 96, t = 8;
  const Job none = gpt3({});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(none, false), 34 * s * b * h + 5 * a * s * s * b);
  const Job tp = gpt3({"--tensor-model-parallel-size", "8"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(tp, false), s * b * h * (10 + 24 / t + 5 * a * s / (h * t)));
  const Job sp = gpt3({"--tensor-model-parallel-size", "8", "--sequence-parallel"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(sp, false), s * b * h * (34 / t + 5 * a * s / (h * t)));
  const Job sel = gpt3({"--tensor-model-parallel-size", "8", "--sequence-parallel", "--recompute-granularity",
                        "selective"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(sel, false), 34 * s * b * h / t);
  const Job tp_sel = gpt3({"--tensor-model-parallel-size", "8", "--recompute-granularity", "selective"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(tp_sel, false), s * b * h * (10 + 24 / t));
  const Job full = gpt3({"--tensor-model-parallel-size", "8", "--sequence-parallel", "--recompute-granularity", "full"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(full, false), 2 * s * b * h / t);
  // Micro-batch and CP scale the tokens: b = 4 with CP 2 is twice b = 1 without.
  const Job cp = gpt3({"--micro-batch-size", "4", "--context-parallel-size", "2", "--recompute-granularity", "selective"});
  const Job one = gpt3({"--micro-batch-size", "2", "--recompute-granularity", "selective"});
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(cp, false), activation_bytes_per_layer(one, false));
  // Flash attention: no s x s tensors, an fp32 row statistic per head and token instead.
  MemoryOptions flash;
  flash.flash_attention = true;
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(none, false, flash), 34 * s * b * h + 4 * a * s * b);
}

TEST(Activations, GqaAndSwigluAdjustTheTerms) {
  // Llama-3-70B shape, TP 8 + SP + selective: Q [n, h] + K, V [n, 8·128] and a SwiGLU MLP of f.
  const Job job = job_from_preset("llama3-70b", {"--bf16", "--tensor-model-parallel-size", "8",
                                                 "--sequence-parallel", "--recompute-granularity", "selective"});
  const double n = 8192, h = 8192, f = 28672, kv = 8 * 128, t = 8, e = 2;
  const double attention = 2 * e * n * h + e * n * (h + 2 * kv) + e * n * h + n * h;
  const double mlp = 2 * e * n * h + n * h + e * n * (2 * f + f);
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(job, false), (attention + mlp) / t);
}

// FP8 with Transformer Engine: the QKV, fc1 and fc2 inputs are saved as 1-byte FP8 casts; the
// output-projection input keeps its 16-bit copy (flash attention's backward reads it) plus an FP8 one.
TEST(Activations, Fp8KeepsLinearInputsInOneByte) {
  const Job job = job_from_preset("llama3-70b", {"--bf16", "--tensor-model-parallel-size", "8",
                                                 "--sequence-parallel", "--attention-dropout", "0", "--hidden-dropout", "0"});
  MemoryOptions bf16 = memory_options_for(job);
  MemoryOptions fp8 = bf16;
  fp8.fp8_linear_inputs = true;
  const double n = 8192, h = 8192, f = 28672, t = 8;
  const double saved = n * h / t + n * h / t + n * f / t - n * h / t;   // QKV in, fc1 in, fc2 in, minus the FP8 copy
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(job, false, bf16) - activation_bytes_per_layer(job, false, fp8), saved);
  const Job fp8_job = job_from_preset("llama3-70b", {"--bf16", "--fp8-format", "hybrid"});
  EXPECT_TRUE(memory_options_for(fp8_job).fp8_linear_inputs);
}

TEST(Activations, MoeRoutedTokensFollowExpertTensorParallelism) {
  const std::vector<std::string> base = {"--bf16", "--tensor-model-parallel-size", "4", "--sequence-parallel",
                                         "--recompute-granularity", "selective", "--expert-model-parallel-size", "8"};
  auto with_etp = [&](const char* etp) {
    auto f = base;
    f.insert(f.end(), {"--expert-tensor-parallel-size", etp});
    JobRequest request;
    request.config_file = "mixtral-8x7b";
    request.megatron_flags = f;
    request.gpus = 32;   // TP 4 x DP 8; EP 8 spans the data-parallel ranks
    return activation_bytes_per_layer(load_job(request), true);
  };
  const double n = 4096, h = 4096, f = 14336, e = 2, k = 2, E = 8, t = 4;
  const double common = (2 * e * n * h + e * n * (h + 2 * 1024) + e * n * h + n * h) / t  // attention
                        + (2 * e * n * h + n * h + 8 * n * E) / t;                                // norm, router, mask
  // ETP = TP: the TP group's tokens are gathered, f split 4 ways. ETP = 1: each rank keeps its shard.
  EXPECT_DOUBLE_EQ(with_etp("4"), common + n * k * (2 * e * h) + e * n * k * 3 * f / t);
  EXPECT_DOUBLE_EQ(with_etp("1"), common + n * k / t * (2 * e * h) + e * n * k / t * 3 * f);
}

// ---------------------------------------------------------------------------------------------
// Memory per rank

TEST(Memory, Gpt3StagesWithTpSpSelective) {
  const Job job = gpt3({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                        "--sequence-parallel", "--recompute-granularity", "selective", "--global-batch-size", "1536"},
                       1024);
  const MemoryEstimate mem = memory_per_rank(job);
  ASSERT_EQ(mem.stages.size(), 16u);
  const double s = 2048, h = 12288, t = 8, p = 16, L = 96, V = 51200;
  // Stage 0 holds p microbatches of L/p layers: L·34sbh/t, plus p embedding dropout masks sbh/t.
  EXPECT_DOUBLE_EQ(mem.stages[0].activations_bytes, L * 34 * s * h / t + p * s * h / t);
  EXPECT_DOUBLE_EQ(mem.stages[0].in_flight_microbatches, 16);
  EXPECT_DOUBLE_EQ(mem.stages[15].in_flight_microbatches, 1);
  // Middle stages: 6 layers, each 12h² + 13h with the TP-replicated part (norms 4h, row biases 2h) whole.
  const double layer_rank = (12 * h * h + 7 * h) / t + 6 * h;
  EXPECT_DOUBLE_EQ(mem.stages[7].dense_parameters, 6 * layer_rank);
  EXPECT_DOUBLE_EQ(mem.stages[7].weights_bytes, 2 * 6 * layer_rank);
  EXPECT_DOUBLE_EQ(mem.stages[7].gradients_bytes, 4 * 6 * layer_rank);
  EXPECT_DOUBLE_EQ(mem.stages[7].optimizer_bytes, 12 * 6 * layer_rank);
  EXPECT_DOUBLE_EQ(mem.stages[3].weights_bytes, mem.stages[12].weights_bytes);
  EXPECT_GT(mem.stages[3].activations_bytes, mem.stages[12].activations_bytes);   // 13 vs 4 in flight
  // First: embedding [V, h]/t + positions [s, h]; last: final norm + the tied embedding's copy.
  EXPECT_DOUBLE_EQ(mem.stages[0].dense_parameters, 6 * layer_rank + V * h / t + s * h);
  EXPECT_DOUBLE_EQ(mem.stages[15].dense_parameters, 6 * layer_rank + V * h / t + 2 * h);
  // Last stage keeps one microbatch plus the output layer: norm and matmul inputs, fp32 logits.
  EXPECT_DOUBLE_EQ(mem.stages[15].activations_bytes, 6 * 34 * s * h / t + 4 * s * h / t + 4 * s * V / t);
  EXPECT_NEAR(mem.stages[0].total_gib, mem.stages[0].total_bytes / double(1 << 30), 1e-9);
  EXPECT_EQ(&mem.peak(), &mem.stages[0]);
}

TEST(Memory, InterleavingMultipliesFirstStageActivations) {
  const double s = 2048, h = 12288, t = 8, p = 16, v = 3, L = 96;
  const Job job = gpt3({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                        "--num-layers-per-virtual-pipeline-stage", "2", "--sequence-parallel",
                        "--recompute-granularity", "selective", "--global-batch-size", "1536"},
                       1024);
  ASSERT_EQ(job.parallel.virtual_pipeline_model_parallel_size, 3);
  const MemoryEstimate mem = memory_per_rank(job);
  // Korthikanti §4.2.3: L·(1 + (p-1)/(p·v)) layers' worth (63 chunk-microbatches of 2 layers).
  // The embedding mask sbh/t is kept by the chunk-0 forwards among them: microbatch groups 0 and 3
  // of Megatron's order (16 + 15 of the 63).
  const double layer = 34 * s * h / t;
  EXPECT_DOUBLE_EQ(mem.stages[0].activations_bytes, L * (1 + (p - 1) / (p * v)) * layer + 31 * s * h / t);
  EXPECT_DOUBLE_EQ(mem.stages[0].in_flight_microbatches, 63 / v);
}

TEST(Memory, DistributedOptimizerAndPrecision) {
  const std::vector<std::string> base = {"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                                         "--global-batch-size", "1536"};
  auto stage = [&](std::vector<std::string> more) {
    auto f = base;
    f.insert(f.end(), more.begin(), more.end());
    return memory_per_rank(gpt3(f, 1024)).stages[5];
  };
  const StageMemory bf16 = stage({}), dist = stage({"--use-distributed-optimizer"});
  const StageMemory fp16 = stage({"--fp16"}), fp32 = stage({"--fp32"});
  const double params = bf16.dense_parameters;
  EXPECT_DOUBLE_EQ(bf16.weights_bytes + bf16.gradients_bytes + bf16.optimizer_bytes, 18 * params);
  EXPECT_DOUBLE_EQ(dist.optimizer_bytes, 12 * params / 8);   // DP = 1024 / (8·16) = 8
  EXPECT_DOUBLE_EQ(fp16.weights_bytes + fp16.gradients_bytes + fp16.optimizer_bytes, 20 * params);
  EXPECT_DOUBLE_EQ(fp32.weights_bytes + fp32.gradients_bytes + fp32.optimizer_bytes, 16 * params);
  // fp32 doubles every saved tensor but the 1-byte dropout masks: per layer 2sbh + a·s²·b/t, for
  // 11 microbatches in flight on stage 5 of 16, 6 layers each.
  const double masks = 11 * 6 * (2 * 2048.0 * 12288 + 96 * 2048.0 * 2048 / 8);
  EXPECT_DOUBLE_EQ(fp32.activations_bytes, 2 * bf16.activations_bytes - masks);
}

// --grad-reduce-in-bf16: the gradient buffer is bf16 (2 bytes per parameter instead of 4).
TEST(Memory, Bf16GradientBuffer) {
  const std::vector<std::string> base = {"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                                         "--global-batch-size", "1536", "--bf16", "--use-distributed-optimizer"};
  auto more = base;
  more.push_back("--grad-reduce-in-bf16");
  const StageMemory fp32 = memory_per_rank(gpt3(base, 1024)).stages[5];
  const StageMemory bf16 = memory_per_rank(gpt3(more, 1024)).stages[5];
  EXPECT_DOUBLE_EQ(fp32.gradients_bytes, 4 * fp32.dense_parameters);
  EXPECT_DOUBLE_EQ(bf16.gradients_bytes, 2 * bf16.dense_parameters);
  EXPECT_DOUBLE_EQ(bf16.optimizer_bytes, fp32.optimizer_bytes);
}

// Megatron's account_for_embedding/loss_in_pipeline_split: Llama 3.1 405B on PP 8 x VP 8 holds
// 128 "layers" of 2 per virtual stage, the first and last virtual stage one decoder layer each.
TEST(Memory, EmbeddingAndLossCountAsLayers) {
  JobRequest request;   // the architecture only: the preset's published layout has uneven first/last stages
  request.model_preset = "llama3-405b";
  request.megatron_flags = {"--pipeline-model-parallel-size", "8", "--num-virtual-stages-per-pipeline-rank", "8",
                            "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split",
                            "--global-batch-size", "16"};
  const Job job = load_job(request);
  const std::vector<RankLayers> layout = pipeline_layout(job);
  ASSERT_EQ(layout.size(), 8u);
  EXPECT_EQ(layout[0].chunks[0].size(), 1u);
  EXPECT_EQ(layout[1].chunks[0].front(), 1);
  EXPECT_EQ(layout[7].chunks[7].size(), 1u);
  EXPECT_EQ(layout[7].chunks[7].back(), 125);
  EXPECT_EQ(layout[0].num_layers(), 15);
  EXPECT_EQ(layout[3].num_layers(), 16);
}

TEST(Memory, ExpertOptimizerShardsOverExpertDataParallel) {
  const Job job = job_from_preset("deepseek-v3");
  const MemoryEstimate mem = memory_per_rank(job);
  ASSERT_EQ(mem.stages.size(), 16u);
  // 61 layers over 16 stages: the 3 dense layers first, 14 x 4 MoE layers, 2 + MTP last.
  EXPECT_EQ(mem.stages[0].num_layers, 3);
  EXPECT_EQ(mem.stages[15].num_layers, 2);
  const ParameterCount pc = parameter_count(job.model);
  // Stage 1 holds 4 MoE layers; each rank 256/64 = 4 experts per layer; expert DP = 2048/(16·64) = 2.
  EXPECT_DOUBLE_EQ(mem.stages[1].expert_parameters, 4.0 * double(pc.moe_layer.experts) / 64);
  const double dense_dp = 2048.0 / 16;
  EXPECT_DOUBLE_EQ(mem.stages[1].optimizer_bytes,
                   12 * (mem.stages[1].dense_parameters / dense_dp + mem.stages[1].expert_parameters / 2));
  // The last stage carries the MTP module and a copy of the word embedding for it.
  EXPECT_GT(mem.stages[15].dense_parameters, mem.stages[14].dense_parameters);
}

TEST(Memory, UnevenFirstAndLastStages) {
  const Job job = job_from_preset("llama3-405b");
  const std::vector<RankLayers> layout = pipeline_layout(job);
  ASSERT_EQ(layout.size(), 16u);
  EXPECT_EQ(layout[0].num_layers(), 7);
  EXPECT_EQ(layout[1].num_layers(), 8);
  EXPECT_EQ(layout[15].num_layers(), 7);
  EXPECT_EQ(layout[15].chunks[0].back(), 125);
  EXPECT_EQ(layout[1].chunks[0].front(), 7);
}

TEST(Memory, FullRecomputeKeepsLayerInputsAndOneWorkingSet) {
  const double s = 2048, h = 12288, t = 8, a = 96;
  const Job job = gpt3({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                        "--sequence-parallel", "--recompute-granularity", "full", "--global-batch-size", "1536"},
                       1024);
  const StageMemory st = memory_per_rank(job).stages[4];   // 12 in flight, 6 layers, no embedding
  const double inputs = 12 * 6 * 2 * s * h / t;
  const double replay = s * h * (34 / t + 5 * a * s / (h * t));
  EXPECT_DOUBLE_EQ(st.activations_bytes, inputs + replay);
}

}  // namespace
}  // namespace tandem
