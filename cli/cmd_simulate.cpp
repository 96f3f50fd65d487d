// `tandem simulate [--cluster NAME|FILE] [--stack NAME|FILE] [--gpus N] [--straggler SPEC]... [--json FILE]
//                  [--trace FILE] [--trace-ops FILE] [--all-ranks] [--profile FILE] [--no-wan-baseline] [CONFIG]
//                  [-- MEGATRON_FLAGS]`
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/job_report.h"
#include "cli/sim_report.h"

namespace tandem::cli {
namespace {

void print_simulate_help() {
  std::printf(
      "usage: tandem simulate [CONFIG.json|PRESET] [--cluster NAME|FILE] [--stack NAME|FILE] [--gpus N]\n"
      "                       [--straggler KIND:WHERE:SPEED[:seed=N]]... [--json FILE]\n"
      "                       [--trace FILE] [--trace-ops FILE] [--all-ranks] [--profile FILE]\n"
      "                       [--no-wan-baseline]\n"
      "                       [-- MEGATRON_FLAGS...]\n\n"
      "Plays one training iteration on a SimGrid model of the cluster and reports iteration time,\n"
      "throughput, MFU/HFU, peak memory per rank and where the time goes.\n"
      "  --stack NAME|FILE software stack (clusters/stacks/; default: the cluster's): kernel efficiencies\n"
      "  --trace FILE      Chrome-trace timeline of the played ranks (open in Perfetto)\n"
      "  --trace-ops FILE  per-rank op trace (kind, shapes, group, bytes)\n"
      "  --all-ranks       play every rank (default: one representative per symmetry class)\n"
      "  --profile FILE    measured per-op profile instead of the analytical compute model\n"
      "  --straggler SPEC  a degraded part, repeatable: KIND:WHERE:SPEED[:seed=N]\n"
      "                    KIND  gpu (compute kernels take 1/SPEED as long; kernel launches do not),\n"
      "                          nvlink (the GPU's NVLink), nic (a NIC link), uplink (a leaf's rail uplink)\n"
      "                    WHERE rank=LIST (GPU indices; a NIC or uplink: the one that GPU uses),\n"
      "                          node=LIST, leaf=LIST, or fraction=F of the kind's units drawn with seed=N\n"
      "                    LIST  5 | 1,5,9 | 4-7;  SPEED in (0, 1], the share of nominal speed or bandwidth\n"
      "                    e.g. --straggler gpu:rank=5:0.5  --straggler nic:fraction=0.01:0.5:seed=1\n"
      "                    Every rank is then played; a table shows who waits for whom.\n"
      "  --no-wan-baseline several datacenters: skip the second run on an ideal WAN (no WAN cost line)\n"
      "  --dc-placement rank-order|pp|dp|ep (a job flag, after --): which dimension crosses datacenters\n");
}

int run_simulate(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(args, {"--trace", "--trace-ops", "--profile"}, {"--all-ranks", "--no-wan-baseline", "--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) return print_simulate_help(), 0;
  const Job job = load_job(opts.request);
  sim::SimOptions so;
  so.all_ranks = opts.extra.count("--all-ranks") > 0;
  so.wan_baseline = opts.extra.count("--no-wan-baseline") == 0;
  if (opts.extra.count("--profile")) so.profile = opts.extra.at("--profile");
  if (opts.extra.count("--trace")) so.trace_path = opts.extra.at("--trace");
  if (opts.extra.count("--trace-ops")) so.op_trace_path = opts.extra.at("--trace-ops");
  so.progress = stderr_progress();
  const sim::SimResult result = sim::simulate(job, so);
  finish_progress();
  if (opts.json_out) {
    nlohmann::json doc = sim::result_to_json(result);
    doc["job"] = info_json(job)["job"];
    write_file_atomically("--json", *opts.json_out, doc.dump(2) + "\n");
  }
  std::printf("%s\n\n%s", layout_summary(job).c_str(), simulation_text(job, result).c_str());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(simulate, "simulate", "play one iteration on a SimGrid model of the cluster",
                        tandem::cli::run_simulate)
