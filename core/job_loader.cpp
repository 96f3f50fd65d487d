#include "core/job_loader.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/parallel_grid.h"

namespace tandem {

Job assemble_job(const JobRequest& request) {
  Job job;
  job.cluster = load_cluster(kDefaultCluster);
  if (request.model_preset) {
    if (request.config_file) throw UserError("model preset '" + *request.model_preset + "' given together with CONFIG '" +
                                             *request.config_file + "': give one of them");
    if (!is_model_preset(*request.model_preset)) throw_field_error("model", *request.model_preset, "is not a model preset");
    job.model = load_model_preset(*request.model_preset);
  }
  if (request.config_file) {
    const std::string& cfg = *request.config_file;
    if (!std::filesystem::exists(cfg) && is_model_preset(cfg)) {
      apply_model_preset(job, cfg);
    } else if (!std::filesystem::exists(cfg)) {
      std::string known;
      for (const auto& n : list_model_presets()) known += (known.empty() ? "" : ", ") + n;
      throw UserError("CONFIG '" + cfg + "' is neither a file nor a model preset (presets: " + known + ")");
    } else {
      apply_job_json(job, read_json_file(cfg), cfg);
    }
  }
  apply_megatron_flags(job, request.megatron_flags);
  if (request.cluster) {
    std::vector<Straggler> kept = std::move(job.cluster.stragglers);
    try {
      job.cluster = load_cluster(*request.cluster);
    } catch (const UserError& e) {
      throw UserError("--cluster = " + *request.cluster + ": " + e.what());
    }
    kept.insert(kept.end(), job.cluster.stragglers.begin(), job.cluster.stragglers.end());
    job.cluster.stragglers = std::move(kept);
  }
  for (const std::string& text : request.stragglers)
    job.cluster.stragglers.push_back(parse_straggler(text, "--straggler"));
  if (request.stack) {
    if (request.stack->empty()) throw_field_error("--stack", "\"\"", "expected a stack name or file");
    job.stack = *request.stack;
  }
  if (request.gpus) {
    if (*request.gpus <= 0) throw_field_error("--gpus", *request.gpus, "must be a positive integer");
    job.world_size = *request.gpus;
  }
  return job;
}

Job load_job(const JobRequest& request) {
  Job job = assemble_job(request);
  resolve_job(job);
  validate_stragglers(job.cluster, job.world_size);
  ParallelGrid::from_job(job);  // validates the rank order and the expert-side layout
  return job;
}

}  // namespace tandem
