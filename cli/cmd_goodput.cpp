// `tandem goodput`: effective training time of a long run under failures, with checkpoints
// (models/goodput.h), and the goodput-adjusted throughput of the job.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/table.h"
#include "core/check.h"
#include "models/accounting.h"
#include "models/goodput.h"

namespace tandem::cli {
namespace {

void print_goodput_help() {
  std::printf(
      "usage: tandem goodput [CONFIG.json|PRESET] [--cluster C] [--gpus N] [--stack S] --gpu-mtbf-hours H\n"
      "                      [--node-mtbf-hours H] [--checkpoint-gbyte-s B] [--restart-minutes R]\n"
      "                      [--interval-minutes T] [--days D] [--trials N] [--seed S] [--iteration-s S]\n"
      "                      [--json FILE] [-- MEGATRON_FLAGS...]\n\n"
      "Expected effective training time of a D-day run whose GPUs and nodes fail at the stated MTBFs\n"
      "(exponential, independent), with checkpoints every T minutes (default: Daly's optimum) written\n"
      "at B GB/s (the job's checkpoint: weights and optimizer state of every parameter), a restart of\n"
      "R minutes after each interrupt; Daly's expected wall time beside a Monte-Carlo distribution, and\n"
      "the job's simulated tokens/s (or 1 / --iteration-s) scaled to goodput.\n"
      "  defaults: --node-mtbf-hours none, --checkpoint-gbyte-s 100, --restart-minutes 10, --days 30,\n"
      "            --trials 1000, --seed 1\n");
}

double positive(const JobOptions& o, const std::string& name, double fallback, bool required = false) {
  const auto it = o.extra.find(name);
  if (it == o.extra.end()) {
    if (required) throw UserError(name + ": required (see tandem goodput --help)");
    return fallback;
  }
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(it->second, &used);
    if (used != it->second.size()) v = -1;
  } catch (const std::exception&) {
    v = -1;
  }
  if (!(v > 0) || !std::isfinite(v)) throw UserError(field_message(name, it->second, "must be a positive number"));
  return v;
}

std::string hours_text(double s) { return fixed(s / 3600.0, 2) + " h"; }

int run_goodput(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") return print_goodput_help(), 0;
  const JobOptions o = parse_job_options(args, {"--gpu-mtbf-hours", "--node-mtbf-hours", "--checkpoint-gbyte-s",
                                                "--restart-minutes", "--interval-minutes", "--days", "--trials",
                                                "--seed", "--iteration-s"});
  const double gpu_mtbf = positive(o, "--gpu-mtbf-hours", 0, true);
  const double node_mtbf = o.extra.count("--node-mtbf-hours") ? positive(o, "--node-mtbf-hours", 0) : 0;
  const double bandwidth = positive(o, "--checkpoint-gbyte-s", 100) * 1e9;
  const double restart = positive(o, "--restart-minutes", 10) * 60;
  const double days = positive(o, "--days", 30);
  const int trials = static_cast<int>(positive(o, "--trials", 1000));
  const auto seed = static_cast<uint64_t>(positive(o, "--seed", 1));
  const Job job = load_job(o.request);

  const auto gpus = static_cast<double>(job.world_size);
  const double nodes = std::ceil(gpus / static_cast<double>(job.cluster.gpus_per_node));
  const BytesPerParameter bpp = bytes_per_parameter(job.training);
  const double checkpoint_bytes = static_cast<double>(parameter_count(job.model).total) * (bpp.weights + bpp.optimizer);
  const double delta = checkpoint_bytes / bandwidth;
  const double mtbf = system_mtbf_s({{gpus, gpu_mtbf}, {nodes, node_mtbf}});
  const double tau = o.extra.count("--interval-minutes") ? positive(o, "--interval-minutes", 0) * 60 : daly_interval(delta, mtbf);
  const double wall_s = days * 86400;
  // The effective fraction T_s / T_w does not depend on T_s: the run's solve time is its share.
  const double fraction = 1e6 / daly_wall_time(1e6, tau, delta, restart, mtbf);
  const GoodputTrials mc = simulate_goodput(fraction * wall_s, tau, delta, restart, mtbf, trials, seed);
  double iteration_s = o.extra.count("--iteration-s") ? positive(o, "--iteration-s", 0) : 0;
  if (iteration_s == 0) iteration_s = sim::simulate_in_subprocess(job).iteration_time_s;
  const double tokens_per_s = static_cast<double>(job.training.global_batch_size * job.model.seq_length) / iteration_s;

  std::printf("%s", render_pairs({
      {"job", job.model.name + " on " + with_commas(job.world_size) + " x " + job.cluster.gpu.name + " (" + job.cluster.name + ")"},
      {"system MTBF", hours_text(mtbf) + " (" + with_commas(job.world_size) + " GPUs at " + fixed(gpu_mtbf, 0) + " h" +
                          (node_mtbf > 0 ? ", " + fixed(nodes, 0) + " nodes at " + fixed(node_mtbf, 0) + " h" : "") + ")"},
      {"checkpoint", fixed(checkpoint_bytes / 1e12, 2) + " TB, written in " + fixed(delta / 60, 2) + " min at " +
                         fixed(bandwidth / 1e9, 0) + " GB/s"},
      {"checkpoint interval", fixed(tau / 60, 1) + " min" + (o.extra.count("--interval-minutes") ? "" : " (Daly's optimum; Young's " +
                                                              fixed(young_interval(delta, mtbf) / 60, 1) + " min)")},
      {"restart", fixed(restart / 60, 1) + " min"},
      {"run", fixed(days, 1) + " days of wall time"},
      {"expected interruptions", fixed(wall_s / mtbf, 1)},
      {"effective training time", fixed(100 * fraction, 1) + "% (Daly's model); Monte Carlo " + std::to_string(trials) +
                                      " runs: " + fixed(100 * fraction * wall_s / mc.mean_wall_s, 1) + "% mean"},
      {"Monte-Carlo wall time", "p10 " + fixed(mc.p10_wall_s / 86400, 2) + ", p50 " + fixed(mc.p50_wall_s / 86400, 2) +
                                    ", p90 " + fixed(mc.p90_wall_s / 86400, 2) + " days for " +
                                    fixed(fraction * days, 2) + " days of training"},
      {"throughput", fixed(tokens_per_s, 0) + " tokens/s raw, " + fixed(tokens_per_s * fraction, 0) + " tokens/s goodput"},
  }).c_str());
  if (o.json_out) {
    const nlohmann::json j = {{"system_mtbf_s", mtbf},           {"checkpoint_bytes", checkpoint_bytes},
                              {"checkpoint_write_s", delta},     {"checkpoint_interval_s", tau},
                              {"restart_s", restart},            {"wall_s", wall_s},
                              {"expected_interruptions", wall_s / mtbf}, {"effective_fraction", fraction},
                              {"monte_carlo", {{"trials", trials}, {"mean_wall_s", mc.mean_wall_s}, {"p10_wall_s", mc.p10_wall_s},
                                               {"p50_wall_s", mc.p50_wall_s}, {"p90_wall_s", mc.p90_wall_s},
                                               {"mean_failures", mc.mean_failures}}},
                              {"tokens_per_s", tokens_per_s},    {"goodput_tokens_per_s", tokens_per_s * fraction}};
    write_file_atomically("--json", *o.json_out, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(goodput, "goodput", "effective training time under failures and checkpoints (Young/Daly, Monte Carlo)",
                        tandem::cli::run_goodput)
