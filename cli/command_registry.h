#pragma once
// Subcommands register themselves: a new `tandem NAME` is one file in cli/ with a
// TANDEM_REGISTER_COMMAND line, no edit elsewhere.
#include <functional>
#include <string>
#include <vector>

namespace tandem::cli {

// args: the words after the subcommand name (argv[2..]). Returns the process exit code.
using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;
  std::string summary;
  CommandFn run;
};

std::vector<Command>& command_registry();
bool register_command(Command c);

// Splits args at the first "--": tandem's own options before it, Megatron flags after.
struct SplitArgs {
  std::vector<std::string> own;
  std::vector<std::string> megatron;
  bool has_separator = false;
};
SplitArgs split_at_double_dash(const std::vector<std::string>& args);

}  // namespace tandem::cli

#define TANDEM_REGISTER_COMMAND(ident, name, summary, fn)                                   \
  namespace {                                                                               \
  [[maybe_unused]] const bool tandem_cmd_registered_##ident =                               \
      ::tandem::cli::register_command({name, summary, fn});                                 \
  }
