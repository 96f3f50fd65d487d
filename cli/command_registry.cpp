#include "cli/command_registry.h"

namespace tandem::cli {

std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}

bool register_command(Command c) {
  command_registry().push_back(std::move(c));
  return true;
}

SplitArgs split_at_double_dash(const std::vector<std::string>& args) {
  SplitArgs out;
  for (const auto& a : args) {
    if (!out.has_separator && a == "--") {
      out.has_separator = true;
      continue;
    }
    (out.has_separator ? out.megatron : out.own).push_back(a);
  }
  return out;
}

}  // namespace tandem::cli
