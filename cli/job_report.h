#pragma once
// Human-readable and JSON reports of a resolved job: the layout, the derived values, parameter
// count, FLOPs per iteration and memory per rank. Shared by `tandem info` and `tandem default`.
#include <string>

#include <nlohmann/json.hpp>

#include "core/job.h"

namespace tandem::cli {

// One line: "GPT-3 175B · 1,024 x A100-SXM4-80GB (dgx-a100) · TP8 PP16 CP1 DP8 · ..."
std::string layout_summary(const Job& job);

// The resolved job, every derived value, as key/value lines.
std::string resolved_job_text(const Job& job);

// Accounting: parameters, FLOPs and per-stage memory table.
std::string accounting_text(const Job& job);

// The JSON `tandem info --json` writes (fields documented in README).
nlohmann::json info_json(const Job& job);

}  // namespace tandem::cli
