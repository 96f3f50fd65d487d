#pragma once
// The options every job-taking subcommand shares:
//   [--cluster NAME|FILE] [--stack NAME|FILE] [--gpus N] [--straggler SPEC]... [--json FILE]
//   [CONFIG.json|PRESET] [-- MEGATRON_FLAGS...]
// --straggler KIND:WHERE:SPEED[:seed=N] (core/stragglers.h) is repeatable.
// Subcommand-specific options are declared by the caller and returned in `extra`.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/job_loader.h"

namespace tandem::cli {

struct JobOptions {
  JobRequest request;
  std::optional<std::string> json_out;
  std::map<std::string, std::string> extra;   // option -> value ("" for switches)
};

// `valued` and `switches`: the caller's own options (e.g. {"--trace"}, {"--all-ranks"}).
// Throws UserError naming the option on anything unexpected.
JobOptions parse_job_options(const std::vector<std::string>& args, const std::set<std::string>& valued = {},
                             const std::set<std::string>& switches = {});

// Writes text to a file atomically (temporary name + rename): never a half-written output.
// `option` names the flag the path came from, for error messages.
void write_file_atomically(const std::string& option, const std::string& path, const std::string& text);

}  // namespace tandem::cli
