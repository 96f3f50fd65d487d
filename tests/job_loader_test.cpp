// Job description: Megatron flags, JSON files, presets, clusters and Megatron's derivations.
#include <algorithm>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job_loader.h"

namespace tandem {
namespace {

Job from_flags(std::vector<std::string> flags, std::optional<int64_t> gpus = std::nullopt,
               std::optional<std::string> config = std::nullopt) {
  JobRequest r;
  r.megatron_flags = std::move(flags);
  r.gpus = gpus;
  r.config_file = std::move(config);
  return load_job(r);
}

const std::vector<std::string> kGpt = {"--num-layers", "24", "--hidden-size", "2048", "--num-attention-heads", "16",
                                       "--seq-length", "2048", "--max-position-embeddings", "2048"};

std::vector<std::string> gpt_plus(std::vector<std::string> extra) {
  auto f = kGpt;
  f.insert(f.end(), extra.begin(), extra.end());
  return f;
}

TEST(JobLoader, MegatronDefaultsAndDerivations) {
  const Job j = from_flags(gpt_plus({"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                                     "--micro-batch-size", "2", "--global-batch-size", "64", "--vocab-size", "50257"}),
                           16);
  EXPECT_EQ(j.model.ffn_hidden_size, 4 * 2048);
  EXPECT_EQ(j.model.kv_channels, 128);
  EXPECT_EQ(j.model.num_query_groups, 16);
  // Padded to a multiple of 128 x TP = 256.
  EXPECT_EQ(j.model.padded_vocab_size, 50432);
  EXPECT_EQ(j.parallel.data_parallel_size, 4);
  EXPECT_EQ(j.training.num_microbatches, 64 / (2 * 4));
  EXPECT_EQ(j.parallel.expert_tensor_parallel_size, 2);
  EXPECT_EQ(j.parallel.pipeline_schedule, "1f1b");
}

TEST(JobLoader, WorldDefaultsToModelParallelSize) {
  const Job j = from_flags(gpt_plus({"--tensor-model-parallel-size", "4", "--pipeline-model-parallel-size", "2",
                                     "--context-parallel-size", "2"}));
  EXPECT_EQ(j.world_size, 16);
  EXPECT_EQ(j.parallel.data_parallel_size, 1);
  EXPECT_EQ(j.training.global_batch_size, 1);  // micro x DP
}

TEST(JobLoader, SwigluFfnDefaultFollowsMegatron) {
  const Job j = from_flags(gpt_plus({"--swiglu"}));
  EXPECT_EQ(j.model.ffn_hidden_size, ((4 * 2048 * 2 / 3) / 64) * 64);
}

TEST(JobLoader, VirtualPipelineFromLayersPerStage) {
  const Job j = from_flags(gpt_plus({"--pipeline-model-parallel-size", "4", "--num-layers-per-virtual-pipeline-stage",
                                     "3", "--global-batch-size", "8"}));
  EXPECT_EQ(j.parallel.virtual_pipeline_model_parallel_size, 2);
  EXPECT_EQ(j.parallel.pipeline_schedule, "interleaved");
}

TEST(JobLoader, UnevenFirstLastStages) {
  const Job j = from_flags(gpt_plus({"--pipeline-model-parallel-size", "4", "--decoder-first-pipeline-num-layers",
                                     "3", "--decoder-last-pipeline-num-layers", "5"}));
  EXPECT_EQ(j.parallel.decoder_first_pipeline_num_layers, 3);
  // 24 - 3 = 21 layers over the 3 other stages: 7 each.
  EXPECT_NO_THROW(from_flags(gpt_plus({"--pipeline-model-parallel-size", "4", "--decoder-first-pipeline-num-layers", "3"})));
  // 24 - 2 = 22 layers do not split over 3 stages.
  EXPECT_THROW(from_flags(gpt_plus({"--pipeline-model-parallel-size", "4", "--decoder-first-pipeline-num-layers", "2"})),
               UserError);
}

TEST(JobLoader, FlagsWithEqualsAndNegativeNumbers) {
  const Job j = from_flags(gpt_plus({"--lr=3e-4", "--min-lr", "3e-5", "--bf16", "--disable-bias-linear"}));
  EXPECT_DOUBLE_EQ(j.training.lr, 3e-4);
  EXPECT_DOUBLE_EQ(j.training.min_lr, 3e-5);
  EXPECT_EQ(j.training.params_dtype, DType::BF16);
  EXPECT_FALSE(j.model.add_bias_linear);
}

TEST(JobLoader, IgnoredFlagsAreListed) {
  const Job j = from_flags(gpt_plus({"--log-interval", "10", "--wandb-project", "x", "--no-masked-softmax-fusion",
                                     "--tokenizer-type", "GPT2BPETokenizer"}));
  EXPECT_EQ(j.training.log_interval, 10);  // used by real training
  ASSERT_EQ(j.ignored_flags.size(), 3u);
  EXPECT_EQ(j.ignored_flags[0], "--wandb-project");
}

TEST(JobLoader, UnknownFlagNamesIt) {
  try {
    from_flags(gpt_plus({"--no-such-flag"}));
    FAIL() << "expected UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--no-such-flag"), std::string::npos);
  }
}

TEST(JobLoader, MoeLayerFreqExpression) {
  const Job j = from_flags({"--num-layers", "8", "--hidden-size", "512", "--num-attention-heads", "8", "--seq-length",
                            "256", "--num-experts", "4", "--moe-layer-freq", "([0]*3+[1]*5)"});
  ASSERT_EQ(j.model.moe_layer_pattern.size(), 8u);
  EXPECT_FALSE(j.model.layer_is_moe(2));
  EXPECT_TRUE(j.model.layer_is_moe(3));
  const Job k = from_flags({"--num-layers", "8", "--hidden-size", "512", "--num-attention-heads", "8", "--seq-length",
                            "256", "--num-experts", "4", "--moe-layer-freq", "2"});
  EXPECT_TRUE(k.model.layer_is_moe(0));
  EXPECT_FALSE(k.model.layer_is_moe(1));
}

TEST(JobLoader, PresetWithFlagOverride) {
  const Job j = from_flags({"--tensor-model-parallel-size", "4"}, 8, "llama3-8b");
  EXPECT_EQ(j.model.num_layers, 32);
  EXPECT_EQ(j.model.num_query_groups, 8);
  EXPECT_EQ(j.parallel.tensor_model_parallel_size, 4);
  EXPECT_EQ(j.parallel.data_parallel_size, 2);
}

TEST(JobLoader, JsonFileSectionsAndPrecedence) {
  const auto dir = std::filesystem::temp_directory_path() / "tandem_job_loader_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "job.json";
  {
    std::ofstream out(path);
    out << R"({"model": {"preset": "llama3-8b", "num_layers": 16},
               "parallel": {"tensor_model_parallel_size": 2, "sequence_parallel": true},
               "training": {"micro_batch_size": 2, "global_batch_size": 32},
               "cluster": "dgx-h100", "gpus": 16})";
  }
  const Job j = from_flags({"--pipeline-model-parallel-size", "2"}, std::nullopt, path.string());
  EXPECT_EQ(j.model.num_layers, 16);
  EXPECT_EQ(j.cluster.name, "dgx-h100");
  EXPECT_EQ(j.world_size, 16);
  EXPECT_EQ(j.parallel.data_parallel_size, 4);
  EXPECT_TRUE(j.parallel.sequence_parallel);
  EXPECT_EQ(j.training.num_microbatches, 4);
  // The resolved job round-trips through JSON.
  const auto doc = job_to_json(j);
  EXPECT_EQ(doc["model"]["num_layers"], 16);
  EXPECT_EQ(doc["derived"]["data_parallel_size"], 4);
  // ...and reads back into the same job.
  Job again;
  apply_job_json(again, doc, "round trip");
  resolve_job(again);
  EXPECT_EQ(job_to_json(again), doc);
  std::filesystem::remove_all(dir);
}

TEST(JobLoader, ClustersCarryUnits) {
  const ClusterSpec a100 = load_cluster("dgx-a100");
  EXPECT_DOUBLE_EQ(a100.gpu.peak_flops_bf16, 312e12);
  EXPECT_DOUBLE_EQ(a100.nic_bandwidth, 200e9 / 8);
  EXPECT_EQ(a100.gpus_per_node, 8);
  const ClusterSpec h100 = load_cluster("dgx-h100");
  EXPECT_DOUBLE_EQ(h100.gpu.peak_flops_bf16, 989.5e12);
  EXPECT_DOUBLE_EQ(h100.gpu.hbm_bytes, 80.0 * 1024 * 1024 * 1024);
  for (const auto& name : list_clusters()) EXPECT_NO_THROW(load_cluster(name)) << name;
}

TEST(JobLoader, EveryPresetResolves) {
  const auto presets = list_model_presets();
  EXPECT_GE(presets.size(), 10u);
  for (const auto& name : presets) {
    JobRequest r;
    r.config_file = name;
    EXPECT_NO_THROW(load_job(r)) << name;
  }
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// Megatron's 2021 GPT-3 example script (examples/pretrain_gpt3_175B.sh) loads as it reads: the
// old spellings are aliases of today's fields, its data and logging flags are listed as ignored.
TEST(MegatronFlags, The2021Gpt3ExampleScriptLoads) {
  const Job j = from_flags({"--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
                            "--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96",
                            "--seq-length", "2048", "--max-position-embeddings", "2048", "--micro-batch-size", "1",
                            "--global-batch-size", "1536", "--rampup-batch-size", "16", "16", "5859375",
                            "--train-samples", "146484375", "--lr-decay-samples", "126953125",
                            "--lr-warmup-samples", "183105", "--lr", "6.0e-5", "--min-lr", "6.0e-6",
                            "--lr-decay-style", "cosine", "--log-interval", "10", "--eval-iters", "40",
                            "--eval-interval", "1000", "--data-path", "0.2", "a", "0.3", "b", "0.5", "c",
                            "--vocab-file", "v.json", "--merge-file", "m.txt", "--save-interval", "1000",
                            "--save", "ckpt", "--load", "ckpt", "--split", "98,2,0", "--clip-grad", "1.0",
                            "--weight-decay", "0.1", "--adam-beta1", "0.9", "--adam-beta2", "0.95",
                            "--init-method-std", "0.006", "--tensorboard-dir", "tb", "--fp16",
                            "--checkpoint-activations"},
                           1024);
  EXPECT_EQ(j.training.recompute_granularity, RecomputeGranularity::Full);
  EXPECT_EQ(j.parallel.tensor_model_parallel_size, 8);
  EXPECT_EQ(j.parallel.data_parallel_size, 8);
  EXPECT_NE(std::find(j.ignored_flags.begin(), j.ignored_flags.end(), "--vocab-file"), j.ignored_flags.end());
  EXPECT_EQ(j.training.tensorboard_dir, "tb");   // `tandem train` writes TensorBoard events there
}

// Today's Megatron-Core flags that tandem does not model load and are reported; a flag that
// Megatron does not have is still an error naming it.
TEST(MegatronFlags, ModernFlagsAreAcceptedAndReportedUnknownOnesRefused) {
  const Job j = from_flags(gpt_plus({"--recompute-granularity", "selective", "--recompute-modules", "core_attn", "mlp",
                                     "--cp-comm-type", "p2p", "--moe-shared-expert-overlap", "--use-sharp", "--bf16"}));
  const std::vector<std::string> expect = {"--cp-comm-type", "--moe-shared-expert-overlap", "--use-sharp"};
  EXPECT_EQ(j.ignored_flags, expect);
  const std::vector<RecomputeModule> modules = {RecomputeModule::CoreAttn, RecomputeModule::Mlp};
  EXPECT_EQ(j.training.recompute_modules, modules);
  EXPECT_EQ(j.training.params_dtype, DType::BF16);
  try {
    from_flags(gpt_plus({"--made-up-megatron-flag", "3"}));
    FAIL() << "an unknown flag was accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--made-up-megatron-flag"), std::string::npos);
  }
}

}  // namespace
}  // namespace tandem
