#pragma once
// Published-run sets for `tandem reproduce` and `tandem fit` (experiments/reproduce/*.json).
//
// A set names a cluster, a metric, the Megatron flags common to its rows, its assumptions, and
// optionally model families; each row gives its GPU count, its own flags, the published figure
// and optionally the family it belongs to:
//   { "name", "source", "cluster", "stack", "family", "metric", "assumptions", "common_flags": [...],
//     "families": { "llama3-8b": {"model": PRESET, "flags": [...], "assumptions": "..."} },
//     "rows": [ {"label", "family", "precision", "gpus", "flags": [...], "published": {KEY: value},
//                "expected_oom": "why"} ],
//     "skipped": [ {"id", "reason"} ] }
// "expected_oom": the simulator predicts this published run out of memory and the set says why
// (memory savings of the source that tandem does not model); the row is still simulated and
// compared, `--resolve` accepts its OOM and rejects the mark once the row fits.
// "stack": the software stack the set's runs used (clusters/stacks/); "family": the family of rows
// that name none (a set without families).
// A row's job: the family's model preset (architecture only, not the preset's published layout),
// then common flags, the family's flags and the row's flags, on the set's cluster.
// Metrics and the published key they read: model_tflops_per_gpu and hardware_tflops_per_gpu
// (tflops_per_gpu), tokens_per_s_per_gpu (tokens_per_s_per_gpu), iteration_time_s
// (iteration_time_s). Every comparison is a throughput error: simulated / published throughput
// - 1 (for a time metric, published / simulated time - 1): negative means the simulator is slower.
#include <map>
#include <string>
#include <vector>

#include "core/job_loader.h"

namespace tandem::fit {

struct ReproduceRow {
  std::string where;          // "FILE: rows[i]", for messages
  std::string label;
  std::string family;         // "" when the set has no families
  std::string precision;      // "bf16", "fp8", ... as the set states it ("" if not stated)
  std::string expected_oom;   // why the simulator's OOM verdict is expected ("" = it must fit)
  JobRequest request;
  double published = 0;       // in the set's metric
};

struct ReproduceSet {
  std::string path;
  std::string name;
  std::string source;
  std::string metric;
  std::string assumptions;
  std::string stack;          // "" = the cluster's default
  std::string family;         // family of rows without one ("" = none)
  std::map<std::string, std::string> family_assumptions;   // family -> its stated assumptions
  std::vector<ReproduceRow> rows;
  int skipped = 0;            // entries of "skipped" (rows of the source left out, with reasons)
};

// Reads and validates a set file: UserError naming the file, the field and the value.
ReproduceSet read_reproduce_set(const std::string& path);

// The set files of experiments/reproduce/, sorted.
std::vector<std::string> default_reproduce_sets();

// What a simulated row is judged by.
bool metric_is_time(const std::string& metric);
// Throughput error of `simulated` against `published`, both in `metric` (see the file comment).
double throughput_error(const std::string& metric, double simulated, double published);

// Mean absolute error, rows within 10%, signed mean, max: of one set or one family.
struct ErrorSummary {
  int rows = 0, within_10 = 0, oom = 0;
  int oom_expected = 0;       // rows predicted OOM as their "expected_oom" says (not counted in oom)
  int oom_mark_stale = 0;     // rows marked expected_oom that fit (--resolve)
  double sum_abs = 0, sum_signed = 0, max_abs = 0;
  void add(double error, bool oom_row);
  double mean_abs() const { return rows ? sum_abs / rows : 0; }
  double mean_signed() const { return rows ? sum_signed / rows : 0; }
};

}  // namespace tandem::fit
