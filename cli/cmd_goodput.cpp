// `tandem goodput`: effective training time of a long run under failures, with checkpoints
// (models/goodput.h) and planned maintenance, and the goodput-adjusted throughput of the job.
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/table.h"
#include "core/check.h"
#include "models/accounting.h"
#include "models/failure_rates.h"
#include "models/goodput.h"

namespace tandem::cli {
namespace {

void print_goodput_help() {
  std::printf(
      "usage: tandem goodput [CONFIG.json|PRESET] [--cluster C] [--gpus N] [--stack S]\n"
      "                      (--gpu-mtbf-hours H [--node-mtbf-hours H] | --failure-rates FILE)\n"
      "                      [--planned-per-day P --planned-minutes M] [--checkpoint-gbyte-s B]\n"
      "                      [--restart-minutes R] [--interval-minutes T] [--days D] [--trials N] [--seed S]\n"
      "                      [--iteration-s S] [--json FILE] [-- MEGATRON_FLAGS...]\n\n"
      "Expected effective training time of a D-day run whose GPUs and nodes fail at the stated MTBFs\n"
      "(exponential, independent), with checkpoints every T minutes (default: Daly's optimum) written\n"
      "at B GB/s (the job's checkpoint: weights and optimizer state of every parameter), a restart of\n"
      "R minutes after each interrupt; Daly's expected wall time beside a Monte-Carlo distribution, and\n"
      "the job's simulated tokens/s (or 1 / --iteration-s) scaled to goodput.\n"
      "  --failure-rates FILE   per-component MTBFs with their sources and ranges (format in\n"
      "                         models/failure_rates.h; example: experiments/goodput/)\n"
      "  --planned-per-day P, --planned-minutes M   planned maintenance: P interrupts a day, each M\n"
      "                         minutes down, restart included, no work lost (overrides the file's)\n"
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

// The failure model of the run: rates from the command line or a file.
FailureRates rates_from(const JobOptions& o) {
  FailureRates rates;
  if (o.extra.count("--failure-rates")) {
    if (o.extra.count("--gpu-mtbf-hours") || o.extra.count("--node-mtbf-hours"))
      throw UserError("--failure-rates: replaces --gpu-mtbf-hours and --node-mtbf-hours; give one or the other");
    rates = load_failure_rates(o.extra.at("--failure-rates"));
  } else {
    const double gpu = positive(o, "--gpu-mtbf-hours", 0, true);
    rates.components.push_back({"GPU", "gpu", gpu, gpu, gpu, "--gpu-mtbf-hours"});
    if (o.extra.count("--node-mtbf-hours")) {
      const double node = positive(o, "--node-mtbf-hours", 0);
      rates.components.push_back({"node", "node", node, node, node, "--node-mtbf-hours"});
    }
  }
  if (o.extra.count("--planned-per-day") != o.extra.count("--planned-minutes"))
    throw UserError("--planned-per-day: give it together with --planned-minutes");
  if (o.extra.count("--planned-per-day"))
    rates.planned = {positive(o, "--planned-per-day", 0), positive(o, "--planned-minutes", 0), "command line"};
  return rates;
}

// Everything the command reports, in seconds unless named otherwise.
struct GoodputStudy {
  double gpus = 0, nodes = 0;
  double checkpoint_bytes = 0, bandwidth = 0, delta = 0, restart = 0, tau = 0, wall = 0, days = 0;
  bool tau_given = false;
  double mtbf = 0, mtbf_low = 0, mtbf_high = 0;     // system; low MTBF = more failures
  double planned_count = 0, planned_downtime = 0;   // over the run
  double fraction = 0, fraction_low = 0, fraction_high = 0;   // effective training time / wall
  GoodputTrials mc;
  int trials = 0;
  double tokens_per_s = 0;
};

// T_s / T_w: Daly's model on the wall time left by planned maintenance.
double effective_fraction(const GoodputStudy& s, double mtbf, double tau) {
  const double daly = 1e6 / daly_wall_time(1e6, tau, s.delta, s.restart, mtbf);  // independent of T_s
  return daly * (s.wall - s.planned_downtime) / s.wall;
}

GoodputStudy study(const JobOptions& o, const Job& job, const FailureRates& rates) {
  GoodputStudy s;
  s.gpus = static_cast<double>(job.world_size);
  s.nodes = std::ceil(s.gpus / static_cast<double>(job.cluster.gpus_per_node));
  const BytesPerParameter bpp = bytes_per_parameter(job.training);
  s.checkpoint_bytes = static_cast<double>(parameter_count(job.model).total) * (bpp.weights + bpp.optimizer);
  s.bandwidth = positive(o, "--checkpoint-gbyte-s", 100) * 1e9;
  s.delta = s.checkpoint_bytes / s.bandwidth;
  s.restart = positive(o, "--restart-minutes", 10) * 60;
  s.days = positive(o, "--days", 30);
  s.wall = s.days * 86400;
  s.mtbf = system_mtbf_s(system_components(rates, s.gpus, s.nodes));
  s.mtbf_low = system_mtbf_s(system_components(rates, s.gpus, s.nodes, -1));
  s.mtbf_high = system_mtbf_s(system_components(rates, s.gpus, s.nodes, +1));
  s.tau_given = o.extra.count("--interval-minutes") > 0;
  s.tau = s.tau_given ? positive(o, "--interval-minutes", 0) * 60 : daly_interval(s.delta, s.mtbf);
  s.planned_count = rates.planned.per_day * s.days;
  s.planned_downtime = std::min(s.wall, s.planned_count * rates.planned.minutes * 60);
  s.fraction = effective_fraction(s, s.mtbf, s.tau);
  // At each end of the range, the interval a run would choose for it (Daly's, unless fixed).
  const auto at = [&](double m) { return effective_fraction(s, m, s.tau_given ? s.tau : daly_interval(s.delta, m)); };
  s.fraction_low = at(s.mtbf_low);
  s.fraction_high = at(s.mtbf_high);
  s.trials = static_cast<int>(positive(o, "--trials", 1000));
  s.mc = simulate_goodput(s.fraction * s.wall, s.tau, s.delta, s.restart, s.mtbf, s.trials,
                          static_cast<uint64_t>(positive(o, "--seed", 1)));
  double iteration_s = o.extra.count("--iteration-s") ? positive(o, "--iteration-s", 0) : 0;
  if (iteration_s == 0) iteration_s = sim::simulate_in_subprocess(job).iteration_time_s;
  s.tokens_per_s = static_cast<double>(job.training.global_batch_size * job.model.seq_length) / iteration_s;
  return s;
}

// Expected unplanned interrupts over the run: failures strike while the job is not in planned
// maintenance (also during restarts, as in Daly's model).
double unplanned(const GoodputStudy& s, double mtbf) { return (s.wall - s.planned_downtime) / mtbf; }

std::string range_text(double value, double low, double high, int decimals, const std::string& unit = "") {
  if (low == high) return fixed(value, decimals) + unit;
  return fixed(value, decimals) + unit + " (" + fixed(low, decimals) + "-" + fixed(high, decimals) + unit + ")";
}

// Expected interrupts of one component over the run's time outside planned maintenance, at its
// stated MTBF and at the two ends of its range (low MTBF: more interrupts).
struct ComponentInterrupts {
  double units = 0, expected = 0, low = 0, high = 0;
};
ComponentInterrupts interrupts_of(const RatedComponent& c, const GoodputStudy& s) {
  const double units = units_of(c, s.gpus, s.nodes);
  const double hours = (s.wall - s.planned_downtime) / 3600;
  return {units, units * hours / c.mtbf_hours, units * hours / c.mtbf_high_hours, units * hours / c.mtbf_low_hours};
}

std::string components_table(const GoodputStudy& s, const FailureRates& rates) {
  Table t({"component", "units", "MTBF of one (h)", "expected interrupts", "source"});
  for (const RatedComponent& c : rates.components) {
    const ComponentInterrupts n = interrupts_of(c, s);
    t.add_row({c.name, fixed(n.units, 0) + " " + c.per + (n.units == 1 ? "" : "s"),
               range_text(c.mtbf_hours, c.mtbf_low_hours, c.mtbf_high_hours, 0), range_text(n.expected, n.low, n.high, 1),
               c.source});
  }
  return t.render();
}

void print_study(const GoodputStudy& s, const Job& job, const FailureRates& rates) {
  std::printf("%s\n", components_table(s, rates).c_str());
  const double planned_min = rates.planned.minutes;
  std::printf("%s", render_pairs({
      {"job", job.model.name + " on " + with_commas(job.world_size) + " x " + job.cluster.gpu.name + " (" + job.cluster.name + ")"},
      {"system MTBF", range_text(s.mtbf / 3600, s.mtbf_low / 3600, s.mtbf_high / 3600, 2, " h") + ", " +
                          fixed(s.nodes, 0) + " nodes"},
      {"checkpoint", fixed(s.checkpoint_bytes / 1e12, 2) + " TB, written in " + fixed(s.delta / 60, 2) + " min at " +
                         fixed(s.bandwidth / 1e9, 0) + " GB/s"},
      {"checkpoint interval", fixed(s.tau / 60, 1) + " min" + (s.tau_given ? "" : " (Daly's optimum; Young's " +
                                                              fixed(young_interval(s.delta, s.mtbf) / 60, 1) + " min)")},
      {"restart", fixed(s.restart / 60, 1) + " min"},
      {"run", fixed(s.days, 1) + " days of wall time"},
      {"planned maintenance", s.planned_count > 0 ? fixed(s.planned_count, 1) + " interrupts x " + fixed(planned_min, 0) +
                                                        " min (" + rates.planned.source + ")" : "none"},
      {"expected interruptions", range_text(unplanned(s, s.mtbf) + s.planned_count, unplanned(s, s.mtbf_high) + s.planned_count,
                                            unplanned(s, s.mtbf_low) + s.planned_count, 1) +
                                     ": " + fixed(unplanned(s, s.mtbf), 1) + " unplanned + " + fixed(s.planned_count, 1) + " planned"},
      {"effective training time", range_text(100 * s.fraction, 100 * s.fraction_low, 100 * s.fraction_high, 1, "%") +
                                      " (Daly's model); Monte Carlo " + std::to_string(s.trials) + " runs: " +
                                      fixed(100 * s.fraction * s.wall / (s.mc.mean_wall_s + s.planned_downtime), 1) + "% mean"},
      {"Monte-Carlo wall time", "p10 " + fixed((s.mc.p10_wall_s + s.planned_downtime) / 86400, 2) + ", p50 " +
                                    fixed((s.mc.p50_wall_s + s.planned_downtime) / 86400, 2) + ", p90 " +
                                    fixed((s.mc.p90_wall_s + s.planned_downtime) / 86400, 2) + " days for " +
                                    fixed(s.fraction * s.days, 2) + " days of training"},
      {"throughput", fixed(s.tokens_per_s, 0) + " tokens/s raw, " + fixed(s.tokens_per_s * s.fraction, 0) + " tokens/s goodput"},
  }).c_str());
}

nlohmann::json study_json(const GoodputStudy& s, const FailureRates& rates) {
  nlohmann::json components = nlohmann::json::array();
  for (const RatedComponent& c : rates.components) {
    const ComponentInterrupts n = interrupts_of(c, s);
    components.push_back({{"name", c.name}, {"per", c.per}, {"units", n.units}, {"mtbf_hours", c.mtbf_hours},
                          {"mtbf_hours_range", {c.mtbf_low_hours, c.mtbf_high_hours}},
                          {"expected_interruptions", n.expected}, {"expected_interruptions_range", {n.low, n.high}},
                          {"source", c.source}});
  }
  const double mc_wall = s.mc.mean_wall_s + s.planned_downtime;
  return {{"system_mtbf_s", s.mtbf}, {"system_mtbf_s_range", {s.mtbf_low, s.mtbf_high}},
          {"components", components},
          {"checkpoint_bytes", s.checkpoint_bytes}, {"checkpoint_write_s", s.delta}, {"checkpoint_interval_s", s.tau},
          {"restart_s", s.restart}, {"wall_s", s.wall},
          {"planned_interruptions", s.planned_count}, {"planned_downtime_s", s.planned_downtime},
          {"unplanned_interruptions", unplanned(s, s.mtbf)},
          {"unplanned_interruptions_range", {unplanned(s, s.mtbf_high), unplanned(s, s.mtbf_low)}},
          {"expected_interruptions", unplanned(s, s.mtbf) + s.planned_count},
          {"effective_fraction", s.fraction}, {"effective_fraction_range", {s.fraction_low, s.fraction_high}},
          {"monte_carlo", {{"trials", s.trials}, {"mean_wall_s", mc_wall},
                           {"p10_wall_s", s.mc.p10_wall_s + s.planned_downtime},
                           {"p50_wall_s", s.mc.p50_wall_s + s.planned_downtime},
                           {"p90_wall_s", s.mc.p90_wall_s + s.planned_downtime},
                           {"mean_failures", s.mc.mean_failures},
                           {"effective_fraction", s.fraction * s.wall / mc_wall}}},
          {"tokens_per_s", s.tokens_per_s}, {"goodput_tokens_per_s", s.tokens_per_s * s.fraction}};
}

int run_goodput(const std::vector<std::string>& args) {
  for (const std::string& a : args)
    if (a == "--help" || a == "-h") return print_goodput_help(), 0;
  const JobOptions o = parse_job_options(args, {"--gpu-mtbf-hours", "--node-mtbf-hours", "--failure-rates",
                                                "--planned-per-day", "--planned-minutes", "--checkpoint-gbyte-s",
                                                "--restart-minutes", "--interval-minutes", "--days", "--trials",
                                                "--seed", "--iteration-s"});
  const FailureRates rates = rates_from(o);
  const Job job = load_job(o.request);
  const GoodputStudy s = study(o, job, rates);
  print_study(s, job, rates);
  if (o.json_out) write_file_atomically("--json", *o.json_out, study_json(s, rates).dump(2) + "\n");
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(goodput, "goodput", "effective training time under failures and checkpoints (Young/Daly, Monte Carlo)",
                        tandem::cli::run_goodput)
