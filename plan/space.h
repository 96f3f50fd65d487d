#pragma once
// The planner's search space: every parallel layout of a job on N GPUs that Megatron could run.
//
// A candidate fixes TP, PP, virtual stages, CP, EP, expert TP, micro-batch size, recompute,
// distributed optimizer and pipeline schedule (DP follows from N); sequence parallelism is on
// whenever TP > 1 (Megatron's recommendation), unless the user pinned it. Fields the user pinned
// with a Megatron flag keep the user's value; layout fields a config file or preset carries are
// not pins (an uneven first/last stage among them is dropped). Everything else about the job
// (model, sequence, global batch, precision, overlap switches) is the base job's.
//
// Enumerated values, each a divisor where Megatron needs one:
//   TP   divisors of N up to --max-tp (default: GPUs per node)
//   CP   divisors of N / TP up to --max-cp (default 8)
//   PP   divisors of N / (TP x CP) up to the number of layers
//   VP   1, and with PP > 1 every divisor >= 2 of the layers per stage (interleaved schedule)
//   EP   MoE only: divisors of the expert count;  ETP: 1 and TP
//   MBS  powers of two up to --max-micro-batch (default 16)
//   recompute none | selective | full;  distributed optimizer on | off
//   schedule  1f1b for VP = 1, interleaved for VP > 1, plus --schedules (any registered name)
// A candidate that cannot run is rejected with the first reason that applies (reason keys are
// stable: scripts count them): divisibility, Megatron's rules (resolve_job), the schedule's own
// check, and memory (models/accounting's per-rank peak, the figure `simulate` reports, above the
// GPU's memory: the same OOM verdict).
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/job.h"

namespace tandem::plan {

struct Candidate {
  int64_t tp = 1, pp = 1, vp = 1, cp = 1, ep = 1, etp = 1, dp = 1, mbs = 1;
  RecomputeGranularity recompute = RecomputeGranularity::None;
  bool distributed_optimizer = false;
  bool sequence_parallel = false;
  std::string schedule = "1f1b";

  std::string key() const;   // compact text, unique per candidate ("tp8-pp4-vp2-cp1-...")
};

// What the user fixed: the base job (model and training, not resolved) and pinned layout fields.
struct SearchSpace {
  Job base;                             // flags applied, not resolved
  int64_t gpus = 0;
  std::set<std::string> pinned;         // Megatron flag names the user gave ("--micro-batch-size", ...)
  int64_t max_tp = 0;                   // 0: GPUs per node
  int64_t max_cp = 8;
  int64_t max_micro_batch = 16;
  std::vector<std::string> extra_schedules;   // beyond 1f1b / interleaved
};

// The layout flags a user can pin (Megatron spellings, aliases included).
const std::vector<std::string>& layout_flags();
// The layout flags among `megatron_flags` ("--name" or "--name=value").
std::set<std::string> pinned_flags(const std::vector<std::string>& megatron_flags);

// Every combination of the enumerated values that the pins allow, in a fixed order.
std::vector<Candidate> enumerate_candidates(const SearchSpace& space);

// The base job with the candidate's layout, resolved; UserError from resolve_job passes through.
Job job_for(const SearchSpace& space, const Candidate& c);

// Checks the candidate; returns the rejection reason key (and fills `detail`), or nullopt if it
// can run. On success `job` holds its resolved job.
std::optional<std::string> check_candidate(const SearchSpace& space, const Candidate& c, Job& job, std::string& detail);

// A rejection message as a reason key: every number replaced by N, at most 120 characters.
std::string numbers_as_n(const std::string& text);

// Megatron flags that set the candidate's layout, ready to paste.
std::vector<std::string> megatron_args(const Candidate& c, const Job& job);

}  // namespace tandem::plan
