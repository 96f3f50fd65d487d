#pragma once
// Building a Job from what the user wrote: a JSON config file, Megatron flags, --cluster, --gpus.
// Precedence, lowest first: Megatron defaults < model preset < JSON config < Megatron flags <
// tandem options (--cluster, --gpus, --straggler). Stragglers accumulate: those of the job file
// (its cluster's and its top-level "stragglers") stay when --cluster chooses another cluster,
// whose own are added, then every --straggler. The result is resolved (every derived field filled) and
// validated; any problem throws UserError naming the field and the value.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/job.h"

namespace tandem {

struct JobRequest {
  std::optional<std::string> config_file;     // JSON job file, or a model preset name
  // A model preset whose architecture alone is taken (its published "defaults" layout is not
  // applied): for callers that describe the whole run themselves, as `tandem reproduce` does.
  // Not together with config_file.
  std::optional<std::string> model_preset;
  std::vector<std::string> megatron_flags;    // everything after "--"
  std::optional<std::string> cluster;         // cluster name (clusters/NAME.json) or file
  std::optional<int64_t> gpus;                // world size
  std::optional<std::string> stack;           // software stack name (clusters/stacks/NAME.json) or file
  // Degraded parts in the text syntax of core/stragglers.h ("gpu:rank=5:0.5"), added to the
  // cluster's (--straggler, repeatable).
  std::vector<std::string> stragglers;
};

// The documented default cluster when --cluster is not given.
inline constexpr const char* kDefaultCluster = "dgx-a100";

Job load_job(const JobRequest& request);
// load_job without resolve_job: every source applied, derived fields not filled, nothing validated
// beyond what parsing checks (for callers that change the layout first, as `tandem plan` does).
Job assemble_job(const JobRequest& request);

// Pieces of load_job, usable on their own.
void apply_job_json(Job& job, const nlohmann::json& doc, const std::string& source);
void apply_megatron_flags(Job& job, const std::vector<std::string>& flags);
void resolve_job(Job& job);                    // Megatron's derivations + validation

// Presets and clusters are data files: models/presets/NAME.json, clusters/NAME.json.
std::string data_dir();                        // $TANDEM_DATA_DIR or the source tree
std::vector<std::string> list_model_presets();
std::vector<std::string> list_clusters();
ModelConfig load_model_preset(const std::string& name_or_file);
// Sets job.model from a preset and applies the preset's "defaults" (published layout/training).
void apply_model_preset(Job& job, const std::string& name_or_file);
bool is_model_preset(const std::string& name);
nlohmann::json read_json_file(const std::string& path);   // UserError on missing/malformed file
ClusterSpec load_cluster(const std::string& name_or_file);
ClusterSpec cluster_from_json(const nlohmann::json& doc, const std::string& source);
// A JSON array of stragglers (objects or strings, core/stragglers.h); UserError naming `field`.
std::vector<Straggler> stragglers_from_json(const nlohmann::json& value, const std::string& field);

// The resolved job as JSON (every field, derived ones included).
nlohmann::json job_to_json(const Job& job);

}  // namespace tandem
