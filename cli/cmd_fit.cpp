// `tandem fit RUNS... [--stack BASE] [--free p1,p2] [--out FILE] [--name NAME] [--folds K] [--jobs N]`
// Fits a software stack's free parameters to measured runs (fit/fit.h) and writes the fitted stack.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/sim/stack.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "core/check.h"
#include "core/job_fields.h"
#include "fit/fit.h"

namespace tandem::cli {
namespace {

void print_fit_help() {
  std::printf(
      "usage: tandem fit RUNS... [--stack BASE] [--free P1,P2,...] [--out FILE] [--name NAME] [--folds K]\n"
      "                  [--jobs N]\n\n"
      "Fits a software stack's free parameters to measured runs, minimising the mean absolute log error of\n"
      "the runs' figures (about their mean relative error), and prints fitted values against priors and bounds, the error per run, and\n"
      "cross-validated errors (leave one model family out, and k-fold) per family.\n"
      "  RUNS         a published set (experiments/reproduce/*.json) or a run file (JSON or CSV: cluster,\n"
      "               gpus, megatron_args, step_time_s or tokens_per_s; see README)\n"
      "  --stack BASE stack to start from (default: the one the runs name, else their cluster's)\n"
      "  --free LIST  parameters to fit (default: GEMM and attention fractions the runs use, launch overhead)\n"
      "  --out FILE   write the fitted stack (loadable with `tandem simulate --stack FILE`)\n"
      "  --name NAME  the fitted stack's name (default: the base stack's)\n"
      "  --folds K    k of the k-fold cross-validation (default 5)\n"
      "  --jobs N     simulations run at once (default 2)\n");
}

std::vector<std::string> comma_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct FitArgs {
  std::vector<std::string> run_files;
  std::optional<std::string> stack, out;
  fit::FitOptions options;
};

FitArgs parse_fit_args(const std::vector<std::string>& args) {
  FitArgs a;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string opt = args[i], value;
    const bool inline_value = opt.rfind("--", 0) == 0 && opt.find('=') != std::string::npos;
    if (inline_value) {
      value = opt.substr(opt.find('=') + 1);
      opt = opt.substr(0, opt.find('='));
    }
    auto take = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= args.size()) throw UserError(opt + ": missing value");
      return args[++i];
    };
    if (opt == "--stack") a.stack = take();
    else if (opt == "--free") a.options.free = comma_list(take());
    else if (opt == "--out") a.out = take();
    else if (opt == "--name") a.options.name = take();
    else if (opt == "--folds") a.options.folds = static_cast<int>(parse_int("--folds", take(), 2, 1000));
    else if (opt == "--jobs") a.options.parallel = static_cast<int>(parse_int("--jobs", take(), 1, 64));
    else if (opt.rfind("-", 0) == 0) throw UserError("unknown option " + opt + " (see tandem fit --help)");
    else a.run_files.push_back(opt);
  }
  if (a.run_files.empty()) throw UserError("RUNS: missing (a published set or a run file; see tandem fit --help)");
  if (a.out) {
    const std::filesystem::path dir = std::filesystem::path(*a.out).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
      throw UserError(field_message("--out", *a.out, "its directory does not exist"));
  }
  return a;
}

std::string command_line(const std::vector<std::string>& args) {
  std::string s = "tandem fit";
  for (const auto& a : args) s += " " + a;
  return s;
}

int run_fit(const std::vector<std::string>& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return print_fit_help(), 0;
  FitArgs a = parse_fit_args(args);
  std::vector<fit::Run> runs;
  std::optional<std::string> named_stack;
  for (const auto& f : a.run_files) {
    fit::RunFile file = fit::load_run_file(f);
    if (!named_stack) named_stack = file.stack;
    for (auto& r : file.runs) runs.push_back(std::move(r));
  }
  const std::vector<Job> jobs = fit::resolve_runs(runs);
  const sim::Stack base = a.stack ? sim::load_stack(*a.stack)
                        : named_stack ? sim::load_stack(*named_stack)
                                      : sim::stack_for_job(jobs.front());
  for (size_t j = 0; j < jobs.size(); ++j)
    if (base.gpu != jobs[j].cluster.gpu.name && base.gpu != "generic")
      throw UserError(runs[j].where + " (" + runs[j].label + "): " +
                      field_message("cluster", jobs[j].cluster.name, "its GPU " + jobs[j].cluster.gpu.name +
                                                                      " is not the stack's (" + base.gpu + ")"));
  if (a.options.free.empty()) a.options.free = fit::default_free_parameters(base, jobs);
  for (size_t i = 0; i < a.options.free.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (a.options.free[i] == a.options.free[k]) throw UserError(field_message("--free", a.options.free[i], "named twice"));
  a.options.command = command_line(args);
  a.options.run_files = a.run_files;
  a.options.progress = [](const std::string& s) { std::fprintf(stderr, "tandem fit: %s\n", s.c_str()); };
  const auto start = std::chrono::steady_clock::now();
  const fit::FitResult result = fit::fit_stack(base, runs, jobs, a.options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string report = fit::fit_report(result, a.options);
  std::printf("%s", report.c_str());
  std::printf("fit took %.1f s of wall time\n", seconds);
  if (a.out) {
    nlohmann::json doc = fit::fitted_stack_document(result, a.options);
    std::vector<std::string> lines;
    std::stringstream in(report);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    doc["fit"]["output"] = lines;
    sim::parse_stack(doc, *a.out);   // what is written must load
    write_file_atomically("--out", *a.out, doc.dump(2) + "\n");
    std::printf("wrote %s (stack %s)\n", a.out->c_str(), result.stack.name.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(fit, "fit", "fit a software stack's parameters to measured runs",
                        tandem::cli::run_fit)
