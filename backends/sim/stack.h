#pragma once
// A software stack: how well one software generation uses one GPU kind. The hardware (peaks,
// bandwidths, SMs, topology) is in clusters/*.json; a stack (clusters/stacks/NAME.json) holds the
// kernel efficiencies and overheads the compute model and the NCCL-like links apply to it.
//
// File format (the compute model's sections, compute_model.h):
// {
//   "stack": "mcore-0.8-h100", "gpu": "H100-SXM5-80GB", "description": "...", "source": "...",
//   "gemm": {...}, "attention": {...}, "memory": {...}, "launch_overhead_us": {...},
//   "communication": {...},
//   "fit": {...}            optional: written by `tandem fit` (command, runs, errors; see fit/)
// }
// Two kinds of entries:
//   parameter   a number with a physical meaning that a fit may move:
//               {"value": V, "meaning": "...", "bounds": [lo, hi], "prior": {"value": P, "source": "..."},
//                "fitted_by": {"command": "tandem fit ...", "summary": "..."}}   (fitted_by: if fitted)
//               V and P lie inside the bounds. Dotted names: "gemm.fraction_bf16", "launch_overhead_us".
//   structure   kernel structure that is not fitted (tile shapes, block sizes, launches per op):
//               {"value": V, "derivation": "where it comes from"}
//
// Which stack a job uses: the job's `stack` (--stack NAME|FILE or the JSON job field), else its
// cluster's "stack", else the default_stack of clusters/gpu_models/<gpu>.json, else "generic".
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "core/job.h"

namespace tandem::sim {

struct StackParameter {
  std::string name;              // dotted path in the file: "gemm.fraction_bf16"
  double value = 0;
  double lower = 0, upper = 0;   // bounds a fit stays inside
  double prior = 0;              // value from public sources before any fit
  std::string meaning;           // what the number is, physically
  std::string prior_source;      // where the prior comes from
  std::string fitted_command;    // `tandem fit ...` that set the value; empty: not fitted
};

// What `tandem fit` recorded about the stack as a whole (absent in stacks never fitted).
struct StackFitRecord {
  std::string command;
  int rows = 0;
  double training_mape = 0;      // by full simulation at the fitted values
  double cv_mape = 0;            // leave-one-family-out (or leave-one-out with one family)
  std::string cv_kind;           // "leave-one-family-out" | "leave-one-out"
  std::string runs;              // the run files, comma-separated
};

struct Stack {
  std::string name;              // "mcore-0.8-h100"
  std::string file;              // the file it was read from
  std::string gpu;               // GPU kind it was made for
  GpuEfficiency efficiency;      // the values, as the compute model and the platform use them
  std::vector<StackParameter> parameters;   // every parameter, in file order
  std::optional<StackFitRecord> fit;
  nlohmann::json doc;            // the file's content (set_parameter edits it; write it to save)
};

// Parses a stack document; UserError naming `file`, the dotted field and the value on bad input.
Stack parse_stack(const nlohmann::json& doc, const std::string& file);
// clusters/stacks/NAME.json, or a file path (anything with a '/' or ending in .json).
Stack load_stack(const std::string& name_or_file);
// The stack name a job uses when it names none (see the header comment).
std::string default_stack_name(const ClusterSpec& cluster);
// The job's stack (job.stack or the default); `generic` set when the GPU kind has none.
Stack stack_for_job(const Job& job);
// The stack a GPU kind uses by default (for tests and tools without a job).
Stack stack_for_gpu(const std::string& gpu_name);
// The cluster's default stack (its "stack", else its GPU kind's).
Stack stack_for_cluster(const ClusterSpec& cluster);

const StackParameter* find_parameter(const Stack& stack, const std::string& name);
// Sets a parameter's value (document and efficiency). UserError if unknown or outside its bounds.
void set_parameter(Stack& stack, const std::string& name, double value);
// The parameter names, comma-separated (for error messages).
std::string parameter_names(const Stack& stack);

// Parameters whose figures a job depends on and that a fit set (for the one-line note).
std::vector<std::string> fitted_parameters_used(const Stack& stack, const Job& job);
// One line for reports: which stack, which fitted parameters the figures depend on, its CV error.
std::string stack_note(const Stack& stack, const Job& job);

}  // namespace tandem::sim
