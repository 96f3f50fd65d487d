// `tandem` with no arguments: a default job that shows what the tool is for on one screen —
// GPT-3 175B on 1,024 A100 (the Megatron-LM README example) with its published throughput.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/job_report.h"
#include "cli/sim_report.h"
#include "backends/sim/simulator.h"
#include "core/check.h"
#include "core/job_loader.h"

namespace tandem::cli {
namespace {

constexpr const char* kDefaultJob = "experiments/jobs/gpt3-175b-a100.json";

int run_default(const std::vector<std::string>& args) {
  if (!args.empty()) throw UserError("`tandem default` takes no arguments (got '" + args.front() + "')");
  const std::string path = (std::filesystem::path(data_dir()) / kDefaultJob).string();
  const nlohmann::json doc = read_json_file(path);
  JobRequest request;
  request.config_file = path;
  const Job job = load_job(request);
  std::printf("tandem — plan Megatron-style training runs in simulation, then run them for real\n\n");
  std::printf("default job: %s\n\n%s\n", layout_summary(job).c_str(), resolved_job_text(job).c_str());
  sim::SimOptions options;
  options.progress = stderr_progress();
  const sim::SimResult result = sim::simulate(job, options);
  finish_progress();
  std::printf("simulated (one iteration on a SimGrid model of %s):\n%s", job.cluster.name.c_str(),
              simulation_text(job, result).c_str());
  if (doc.contains("published")) {
    const auto& pub = doc["published"];
    const double published = pub.value("tflops_per_gpu", 0.0);
    const bool hardware = pub.value("metric", std::string("model_tflops_per_gpu")) == "hardware_tflops_per_gpu";
    const double simulated = hardware ? result.hardware_tflops_per_gpu : result.model_tflops_per_gpu;
    std::printf("\npublished vs simulated: %.0f vs %.1f %s TFLOP/s per GPU (%+.1f%%); source: %s\n", published,
                simulated, hardware ? "hardware" : "model", 100.0 * (simulated - published) / published,
                pub.value("source", std::string("")).c_str());
  }
  std::printf("\nnext:\n"
              "  tandem info llama3-70b --gpus 64 -- --tensor-model-parallel-size 8 --pipeline-model-parallel-size 4\n"
              "  tandem simulate llama3-70b --cluster dgx-h100 --gpus 64 -- --tensor-model-parallel-size 8 --bf16\n"
              "  tandem reproduce                published MFU tables vs simulated, row by row\n"
              "  tandem schedule zb-h1 --pp 4 --microbatches 8\n"
              "  tandem info --list              model presets and clusters\n"
              "  tandem info --flags             Megatron flags tandem understands\n"
              "  tandem --help                   every subcommand\n");
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(default_job, "default", "the default job: GPT-3 175B on 1,024 A100", tandem::cli::run_default)
