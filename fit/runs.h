#pragma once
// Measured runs for `tandem fit`: a published set (experiments/reproduce/*.json; a row's family is
// its "family", else the set's "family", else the set's file name) or a user's run file in JSON or
// CSV. Every run is a job (cluster, GPUs, Megatron command line) and one measured
// figure.
//
// User run file, JSON:
//   {"stack": "mcore-0.8-h100",                       optional: the stack the runs' software is
//    "runs": [{"label": "llama3-8b 8 GPUs",            closest to (the base of a fit)
//              "family": "llama3",                     optional: model family (cross-validation
//              "cluster": "dgx-h100", "gpus": 8,       groups; default: the label)
//              "megatron_args": "--num-layers 32 ...", a string (split at spaces) or an array
//              "step_time_s": 1.23}]}                 or "tokens_per_s" (whole job), exactly one
//   A bare array of runs is accepted too.
// User run file, CSV: a header line naming the columns, then one run per line:
//   label,family,cluster,gpus,megatron_args,step_time_s,tokens_per_s
//   cluster, gpus and megatron_args are required columns, and one of step_time_s / tokens_per_s per
//   row (the other cell empty). Fields with commas or quotes are quoted ("..", "" for a quote).
// Errors (UserError, one line) name the file, the row and the field.
#include <optional>
#include <string>
#include <vector>

#include "core/job_loader.h"

namespace tandem::fit {

// What a run's measured figure is. Rates are inversely proportional to the iteration time.
enum class Metric { IterationTime, TokensPerSecond, TokensPerSecondPerGpu, ModelTflopsPerGpu, HardwareTflopsPerGpu };
const char* to_string(Metric m);
bool is_rate(Metric m);

struct Run {
  std::string label;
  std::string family;            // leave-one-family-out groups
  std::string where;             // "FILE: rows[3]" or "FILE: row 4", for messages
  JobRequest request;            // cluster, gpus, Megatron flags (the stack is the fit's, not the run's)
  Metric metric = Metric::IterationTime;
  double measured = 0;           // in the metric's unit (s, tokens/s, TFLOP/s per GPU)
};

struct RunFile {
  std::string path;
  std::optional<std::string> stack;   // the stack the file names
  std::vector<Run> runs;
};

// Reads a run file of any of the three formats; UserError naming row and field on bad input.
// Jobs are not resolved here (see check_runs).
RunFile load_run_file(const std::string& path);
// Resolves every run's job (load_job), so a bad command line fails before any simulation.
std::vector<Job> resolve_runs(const std::vector<Run>& runs);

}  // namespace tandem::fit
