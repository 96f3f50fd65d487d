// Model presets (models/presets/*.json): every file loads and resolves, names a source, and its
// parameter count matches the published figure.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/job_fields.h"
#include "core/job_loader.h"
#include "models/accounting.h"

namespace tandem {
namespace {

double rel(double got, double want) { return std::abs(got - want) / std::abs(want); }

const std::vector<std::string> kExpected = {
    "gpt3-175b",        "llama3-8b",        "llama3-70b",       "llama3-405b",      "mixtral-8x7b",
    "mixtral-8x22b",    "deepseek-v3",      "nemotron-4-340b",  "bloom-176b",       "mt-nlg-530b",
    "narayanan-1.7b",   "narayanan-3.6b",   "narayanan-7.5b",   "narayanan-18.4b",  "narayanan-39.1b",
    "narayanan-76.1b",  "narayanan-145.6b", "narayanan-310.1b", "narayanan-529.6b", "narayanan-1t",
    "llama2-7b",        "llama2-13b",       "llama2-70b",       "nemo-gpt3-5b",     "nemo-gpt3-20b",
    "nemotron-8b",      "nemotron-22b"};

Job preset_job(const std::string& name) {
  JobRequest request;
  request.config_file = name;
  return load_job(request);
}

nlohmann::json preset_json(const std::string& name) {
  const auto path = std::filesystem::path(data_dir()) / "models" / "presets" / (name + ".json");
  return read_json_file(path.string());
}

TEST(Presets, AllExpectedPresetsExist) {
  const std::vector<std::string> listed = list_model_presets();
  const std::set<std::string> have(listed.begin(), listed.end());
  for (const auto& name : kExpected) EXPECT_TRUE(have.count(name)) << name;
}

TEST(Presets, EveryPresetLoadsResolvesAndNamesItsSource) {
  for (const auto& name : list_model_presets()) {
    const nlohmann::json doc = preset_json(name);
    ASSERT_TRUE(doc.contains("source")) << name;
    EXPECT_GT(doc["source"].get<std::string>().size(), 40u) << name;
    for (const auto& [key, value] : doc.items()) {
      if (key == "source" || key == "defaults") continue;
      EXPECT_NE(find_field_in(JobSection::Model, key), nullptr) << name << ": " << key;
    }
    Job job;
    ASSERT_NO_THROW(job = preset_job(name)) << name;
    EXPECT_EQ(job.model.name, name);
    EXPECT_GT(parameter_count(job.model).total, 0) << name;
    EXPECT_GT(flops_per_iteration(job).model, 0) << name;
    EXPECT_FALSE(memory_per_rank(job).stages.empty()) << name;
  }
}

struct PublishedCount {
  const char* preset;
  double total;        // published parameter count
  double tolerance;    // relative
};

// Published sizes: papers and model cards cited in each preset's "source".
const std::vector<PublishedCount> kPublished = {
    {"gpt3-175b", 175.0e9, 0.005},       {"llama3-8b", 8.03e9, 0.005},       {"llama3-70b", 70.6e9, 0.005},
    {"llama3-405b", 405.8e9, 0.005},     {"mixtral-8x7b", 46.7e9, 0.01},     {"mixtral-8x22b", 140.6e9, 0.01},
    {"nemotron-4-340b", 341.0e9, 0.005}, {"bloom-176b", 176.247e9, 0.001},   {"mt-nlg-530b", 530e9, 0.005},
    {"narayanan-1.7b", 1.7e9, 0.03},     {"narayanan-3.6b", 3.6e9, 0.03},    {"narayanan-7.5b", 7.5e9, 0.03},
    {"narayanan-18.4b", 18.4e9, 0.005},  {"narayanan-39.1b", 39.1e9, 0.001}, {"narayanan-76.1b", 76.1e9, 0.001},
    {"narayanan-145.6b", 145.6e9, 0.001}, {"narayanan-310.1b", 310.1e9, 0.001},
    {"narayanan-529.6b", 529.6e9, 0.001}, {"narayanan-1t", 1008.0e9, 0.001},
    // Hugging Face model cards of meta-llama/Llama-2-{7b,13b,70b}-hf (safetensors parameter counts).
    {"llama2-7b", 6.738e9, 0.001},       {"llama2-13b", 13.016e9, 0.001},    {"llama2-70b", 68.977e9, 0.001}};

TEST(Presets, ParameterCountsMatchPublishedSizes) {
  for (const auto& p : kPublished) {
    const Job job = preset_job(p.preset);
    const ParameterCount pc = parameter_count(job.model);
    EXPECT_LT(rel(double(pc.total), p.total), p.tolerance) << p.preset << ": " << pc.total;
  }
}

TEST(Presets, MoePresetsActiveParameters) {
  const ParameterCount x7 = parameter_count(load_model_preset("mixtral-8x7b"));
  EXPECT_LT(rel(double(x7.active_per_token), 12.9e9), 0.01);
  const ParameterCount x22 = parameter_count(load_model_preset("mixtral-8x22b"));
  EXPECT_LT(rel(double(x22.active_per_token), 39e9), 0.015);
  const ParameterCount ds = parameter_count(preset_job("deepseek-v3").model);
  EXPECT_LT(rel(double(ds.without_mtp()), 671e9), 0.005);
  EXPECT_LT(rel(double(ds.active_without_mtp), 37e9), 0.02);
}

TEST(Presets, NemotronSplitsIntoEmbeddingAndNonEmbedding) {
  // Technical report Table 1: 9.4B embedding parameters (input + output), 331.6B non-embedding.
  const ParameterCount pc = parameter_count(preset_job("nemotron-4-340b").model);
  EXPECT_LT(rel(double(pc.embedding + pc.output_layer), 9.4e9), 0.005);
  EXPECT_LT(rel(double(pc.decoder + pc.final_norm), 331.6e9), 0.001);
}

TEST(Presets, PublishedLayoutsResolve) {
  struct Layout {
    const char* preset;
    int64_t gpus, tp, pp, dp, microbatches;
  };
  const std::vector<Layout> layouts = {
      {"gpt3-175b", 1024, 8, 16, 8, 192},     {"llama3-405b", 8192, 8, 16, 64, 32},
      {"deepseek-v3", 2048, 1, 16, 128, 120}, {"nemotron-4-340b", 6144, 8, 12, 64, 36},
      {"bloom-176b", 384, 4, 12, 8, 128},     {"mt-nlg-530b", 4480, 8, 35, 16, 120},
      {"narayanan-1t", 3072, 8, 64, 6, 512}};
  for (const auto& l : layouts) {
    const Job job = preset_job(l.preset);
    EXPECT_EQ(job.world_size, l.gpus) << l.preset;
    EXPECT_EQ(job.parallel.tensor_model_parallel_size, l.tp) << l.preset;
    EXPECT_EQ(job.parallel.pipeline_model_parallel_size, l.pp) << l.preset;
    EXPECT_EQ(job.parallel.data_parallel_size, l.dp) << l.preset;
    EXPECT_EQ(job.training.num_microbatches, l.microbatches) << l.preset;
  }
}

TEST(Presets, BloomPadsItsVocabularyAsPublished) {
  const Job job = preset_job("bloom-176b");
  EXPECT_EQ(job.model.vocab_size, 250680);
  EXPECT_EQ(job.model.padded_vocab_size, 250880);   // Hugging Face config vocab_size
}

}  // namespace
}  // namespace tandem
