#include "cli/sim_report.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/table.h"

namespace tandem::cli {
namespace {

bool g_progress_drawn = false;

std::string pct(double part, double whole) { return whole > 0 ? fixed(100.0 * part / whole, 1) + "%" : "-"; }

// The MoE routing model's imbalance: the most imbalanced layers (at most 8), for skewed models.
std::string routing_text(const sim::RoutingSummary& s) {
  if (s.model == "balanced" && s.dropped_copies == 0) return "";
  std::vector<sim::LayerImbalance> layers = s.layers;
  std::stable_sort(layers.begin(), layers.end(),
                   [](const auto& a, const auto& b) { return a.max_over_mean > b.max_over_mean; });
  if (layers.size() > 8) layers.resize(8);
  Table t({"MoE layer (" + s.model + " routing)", "max/mean expert load", "max load", "copies dropped"});
  for (const auto& l : layers)
    t.add_row({std::to_string(l.layer), fixed(l.max_over_mean, 2), with_commas(static_cast<int64_t>(std::llround(l.max_load))),
               with_commas(static_cast<int64_t>(std::llround(l.dropped)))});
  return "\n" + t.render();
}

// Who waits for whom (SimResult::waits), shown when the cluster has stragglers.
std::string waits_text(const sim::SimResult& r) {
  if (r.waits.empty()) return "";
  Table t({"who waits (s per rank)", "rank", "compute", "pipeline", "TP/CP/EP", "DP", "optimizer",
           "late peers", "idle at end"});
  for (const sim::WaitRow& w : r.waits)
    t.add_row({w.who, w.rank >= 0 ? std::to_string(w.rank) : "mean of " + with_commas(w.count), fixed(w.compute_s, 3),
               fixed(w.pipeline_s, 3), fixed(w.collectives_s, 3), fixed(w.data_parallel_s, 3), fixed(w.optimizer_s, 3),
               fixed(w.peer_wait_s, 3), fixed(w.idle_at_end_s, 3)});
  std::string out = "\n";
  out += t.render();
  out += "(pipeline: bubble and pipeline transfers; late peers: the part of TP/CP/EP, DP and optimizer collectives\n"
         " spent waiting for the group's last member to start; slowest: the rank with the most compute seconds)\n";
  return out;
}

// Traffic between datacenters (jobs on more than one): per direction, the total, the exposure.
std::string wan_text(const sim::WanReport& w, double iteration_s) {
  Table t({"WAN (placement " + w.placement + ")", "GB per iteration", "share of iteration"});
  for (size_t a = 0; a < w.bytes_by_direction.size(); ++a)
    for (size_t b = 0; b < w.bytes_by_direction[a].size(); ++b)
      if (a != b) t.add_row({"dc" + std::to_string(a) + " -> dc" + std::to_string(b), fixed(w.bytes_by_direction[a][b] / 1e9, 3), ""});
  t.add_row({"total", fixed(w.bytes / 1e9, 3), ""});
  t.add_row({"exposed WAN communication", fixed(w.exposed_s, 3) + " s", pct(w.exposed_s, iteration_s)});
  if (w.ideal_iteration_s > 0)
    t.add_row({"WAN cost (vs an ideal WAN)", fixed(w.cost_s, 3) + " s", pct(w.cost_s, iteration_s)});
  return "\n" + t.render();
}

}  // namespace

std::string simulation_text(const Job& job, const sim::SimResult& r) {
  const double hbm_gib = job.cluster.gpu.hbm_bytes / (1024.0 * 1024.0 * 1024.0);
  std::string out = render_pairs({
      {"iteration time", fixed(r.iteration_time_s, 3) + " s"},
      {"throughput", with_commas(static_cast<int64_t>(std::llround(r.tokens_per_s))) + " tokens/s"},
      {"model TFLOP/s per GPU", fixed(r.model_tflops_per_gpu, 1) + " (MFU " + fixed(100 * r.mfu, 1) + "%)"},
      {"hardware TFLOP/s per GPU", fixed(r.hardware_tflops_per_gpu, 1) + " (HFU " + fixed(100 * r.hfu, 1) + "%)"},
      {"peak memory", fixed(r.peak_memory_gib, 2) + " GiB of " + fixed(hbm_gib, 0) + " GiB" +
                          (r.oom ? "  OUT OF MEMORY" : "")},
      {"software stack", r.stack},
      {"ranks played", with_commas(r.ranks_played) + " of " + with_commas(job.world_size) +
                           (r.symmetry_reduced ? " (the others are symmetric copies, played as link traffic)" : "")},
  });
  const auto& b = r.breakdown;
  Table t({"where the time goes", "seconds", "share"});
  const std::pair<const char*, double> parts[] = {
      {"compute", b.compute},          {"exposed TP communication", b.tp_comm}, {"exposed CP communication", b.cp_comm},
      {"exposed EP communication", b.ep_comm}, {"exposed PP communication", b.pp_comm},
      {"exposed DP communication", b.dp_comm}, {"pipeline bubble", b.pipeline_bubble}, {"optimizer", b.optimizer}};
  for (const auto& [name, s] : parts) t.add_row({name, fixed(s, 3), pct(s, r.iteration_time_s)});
  out += "\n" + t.render();
  if (r.moe_routing) out += routing_text(*r.moe_routing);
  if (has_effective_stragglers(job.cluster)) out += waits_text(r);
  if (r.wan) out += wan_text(*r.wan, r.iteration_time_s);
  for (const auto& n : r.notes) out += "note: " + n + "\n";
  return out;
}

std::function<void(double, const std::string&)> stderr_progress() {
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(fileno(stderr)) != 0;
  auto last_decile = std::make_shared<int>(-1);
  return [start, tty, last_decile](double fraction, const std::string& message) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed < 2.0) return;
    const int width = 30, filled = static_cast<int>(std::lround(fraction * width));
    if (tty) {
      std::fprintf(stderr, "\r[%s%s] %3.0f%% %.1fs %s\033[K", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), 100 * fraction, elapsed, message.c_str());
    } else {
      const int decile = static_cast<int>(fraction * 10);
      if (decile == *last_decile) return;
      *last_decile = decile;
      std::fprintf(stderr, "progress %3.0f%% %.1fs %s\n", 100 * fraction, elapsed, message.c_str());
    }
    std::fflush(stderr);
    g_progress_drawn = tty;
  };
}

void finish_progress() {
  if (g_progress_drawn) std::fprintf(stderr, "\n");
  g_progress_drawn = false;
}

}  // namespace tandem::cli
