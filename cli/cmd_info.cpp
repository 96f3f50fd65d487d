// `tandem info [CONFIG] [--cluster NAME|FILE] [--gpus N] [--json FILE] [-- MEGATRON_FLAGS]`
// Prints the resolved job (every derived value), parameter count, FLOPs per iteration and memory
// per rank. `--list` shows presets and clusters; `--flags` the accepted Megatron flags.
#include <cstdio>

#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/job_report.h"
#include "core/job_fields.h"

namespace tandem::cli {
namespace {

void print_info_help() {
  std::printf(
      "usage: tandem info [CONFIG.json|PRESET] [--cluster NAME|FILE] [--gpus N] [--json FILE] [-- MEGATRON_FLAGS...]\n"
      "       tandem info --list     model presets and clusters\n"
      "       tandem info --flags    Megatron flags tandem understands or accepts\n\n"
      "Without --gpus the world is TP x PP x CP (data-parallel size 1); without --cluster, %s.\n",
      kDefaultCluster);
}

void print_lists() {
  std::printf("model presets (models/presets):\n");
  for (const auto& n : list_model_presets()) std::printf("  %s\n", n.c_str());
  std::printf("clusters (clusters/):\n");
  for (const auto& n : list_clusters()) std::printf("  %s\n", n.c_str());
}

void print_flags() {
  std::printf("Megatron flags that set job fields:\n");
  for (const auto& f : job_fields())
    std::printf("  %-46s %s\n", (key_to_flag(f.key) + (f.kind == FieldKind::Bool ? "" : " VALUE")).c_str(), f.help);
  std::printf("\nother spellings:\n");
  for (const auto& a : flag_aliases())
    if (a.key) std::printf("  %-46s sets %s%s%s\n", a.flag, a.key, a.fixed_value ? " = " : "", a.fixed_value ? a.fixed_value : "");
  std::printf("\naccepted and ignored (not modelled: logging, checkpoints, data, fusions, and features tandem does not simulate yet):\n");
  for (const auto& a : flag_aliases())
    if (!a.key) std::printf("  %s\n", a.flag);
}

int run_info(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(args, {}, {"--list", "--flags", "--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) return print_info_help(), 0;
  if (opts.extra.count("--list")) return print_lists(), 0;
  if (opts.extra.count("--flags")) return print_flags(), 0;
  const Job job = load_job(opts.request);
  const auto report = info_json(job);   // computes everything first: no output on error
  if (opts.json_out) write_file_atomically("--json", *opts.json_out, report.dump(2) + "\n");
  std::printf("%s\n\n%s\n%s", layout_summary(job).c_str(), resolved_job_text(job).c_str(), accounting_text(job).c_str());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(info, "info", "resolved job, parameters, FLOPs and memory per rank", tandem::cli::run_info)
