// The `tandem` program: `tandem SUBCOMMAND ...`; with no arguments, the default job.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/command_registry.h"
#include "core/check.h"

namespace {

void print_usage() {
  std::printf("tandem — simulation-first testbed for Megatron-style LLM training\n\n"
              "usage: tandem [SUBCOMMAND] [OPTIONS] [CONFIG] [-- MEGATRON_FLAGS...]\n\n"
              "subcommands:\n");
  auto commands = tandem::cli::command_registry();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& c : commands) std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
  std::printf("\nWithout a subcommand, tandem runs its default job (`tandem default`).\n"
              "`tandem SUBCOMMAND --help` describes one subcommand.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string name = args.empty() ? "default" : args.front();
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage();
    return 0;
  }
  if (name == "--version") {
    std::printf("tandem 0.1.0\n");
    return 0;
  }
  if (!args.empty()) args.erase(args.begin());
  for (const auto& c : tandem::cli::command_registry()) {
    if (c.name != name) continue;
    try {
      return c.run(args);
    } catch (const tandem::UserError& e) {
      std::fprintf(stderr, "tandem %s: error: %s\n", name.c_str(), e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tandem %s: error: %s\n", name.c_str(), e.what());
      return 3;
    }
  }
  std::fprintf(stderr, "tandem: unknown subcommand '%s' (see `tandem --help`)\n", name.c_str());
  return 2;
}
