// simulate(): lowering, platform, executor, and the figures of merit (simulator.h).
#include "backends/sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "backends/sim/stack.h"
#include "backends/sim/compute_model.h"
#include "backends/sim/dc_placement.h"
#include "backends/sim/fused_pairs.h"
#include "backends/sim/executor.h"
#include "backends/sim/tp_overlap.h"
#include "backends/sim/trace_writer.h"
#include "core/check.h"
#include "models/accounting.h"
#include "schedules/message_order.h"

namespace tandem::sim {
namespace {

using Clock = std::chrono::steady_clock;

// Compute times memoised by what the compute model reads (kind, site, shape, dtype, HBM bytes):
// programs repeat the same shapes for every layer and microbatch.
class ComputeTimes {
 public:
  explicit ComputeTimes(const ComputeModel& model) : model_(model) {}

  // Kernel and launch seconds (ComputeModel::op_time).
  OpTime operator()(const Instruction& x) {
    Key key{x.m, x.n, x.k, x.batch, 0, static_cast<uint8_t>(x.site), static_cast<uint8_t>(x.kind),
            static_cast<uint8_t>(x.dtype)};
    std::memcpy(&key.bytes_bits, &x.bytes, sizeof(double));
    auto [it, fresh] = times_.try_emplace(key, OpTime{});
    if (fresh) it->second = model_.op_time(x);
    return it->second;
  }

 private:
  struct Key {
    int64_t m, n, k, batch;
    uint64_t bytes_bits;
    uint8_t site;
    uint8_t kind, dtype;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      uint64_t h = 1469598103934665603ull;
      for (uint64_t v : {static_cast<uint64_t>(k.m), static_cast<uint64_t>(k.n), static_cast<uint64_t>(k.k),
                         static_cast<uint64_t>(k.batch), k.bytes_bits,
                         uint64_t{k.site} << 16 | uint64_t{k.kind} << 8 | k.dtype})
        h = (h ^ v) * 1099511628211ull;
      return static_cast<size_t>(h);
    }
  };
  const ComputeModel& model_;
  std::unordered_map<Key, OpTime, KeyHash> times_;
};

std::string fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, value);
  return text;
}

// One program per symmetry class that has a played rank (class_representatives order).
struct Lowered {
  std::vector<RankProgram> programs;
  std::vector<PlayedRank> played;  // layout.played order
};

Lowered lower_played(const Job& job, const ParallelGrid& grid, const Schedule& schedule, const ReplicaLayout& layout,
                     const SimOptions& options) {
  const std::vector<int64_t> representatives = class_representatives(job, grid);
  std::vector<int64_t> class_of;  // [played index]
  std::vector<char> needed(representatives.size(), 0);
  for (int64_t rank : layout.played) {
    const int64_t c = symmetry_class(job, grid, rank);
    TANDEM_CHECK_MSG(c >= 0 && static_cast<size_t>(c) < representatives.size(), "symmetry class " << c);
    class_of.push_back(c);
    needed[static_cast<size_t>(c)] = 1;
  }
  Lowered out;
  out.programs.resize(representatives.size());
  auto last = Clock::now();
  for (size_t c = 0; c < representatives.size(); ++c) {
    if (!needed[c]) continue;
    out.programs[c] = lower_rank(job, grid, schedule, representatives[c]);
    if (options.progress && Clock::now() - last > std::chrono::milliseconds(500)) {
      last = Clock::now();
      options.progress(0.0, "lowering: " + std::to_string(c + 1) + " of " + std::to_string(representatives.size()) +
                                " rank programs");
    }
  }
  for (size_t i = 0; i < layout.played.size(); ++i)
    out.played.push_back({layout.played[i], &out.programs[static_cast<size_t>(class_of[i])]});
  return out;
}

// MoE routing model that changes sizes: one program per (symmetry class, EP coordinate), the
// class program with its routed sizes redrawn (moe_routing.h). Ranks that differ in the EP
// coordinate are different classes; every other coordinate still only renames peers.
struct Routed {
  std::map<int64_t, std::unique_ptr<RankProgram>> programs;    // class * EP + ep coordinate
};

int64_t played_class(const Job& job, const ParallelGrid& grid, int64_t rank, bool routed) {
  const int64_t c = symmetry_class(job, grid, rank);
  return routed ? c * grid.ep_size() + grid.expert_coord(rank).ep : c;
}

void route_played(const Job& job, const ParallelGrid& grid, const MoeRoutingModel& routing, Lowered& lowered,
                  Routed& routed) {
  for (PlayedRank& p : lowered.played) {
    auto& slot = routed.programs[played_class(job, grid, p.rank, true)];
    if (!slot)
      slot = std::make_unique<RankProgram>(apply_routing(*p.program, job, grid, routing, grid.expert_coord(p.rank).ep));
    p.program = slot.get();
  }
}

// --tp-comm-overlap: the simulator's copies of the programs pipeline each TP collective with its
// GEMM (tp_overlap.h); every piece carries its cost note. Runs after the op trace recorded the
// programs as lowered, and after the routing model redrew them.
// DualPipe's F&B pairs merged piece by piece in every played program (fused_pairs.h); the first
// played rank's counts.
// Runs a rewriting pass on every program the simulation plays; returns its result on the first
// played rank's program.
template <typename Result, typename Pass>
Result rewrite_played(Lowered& lowered, Routed& routed, Pass pass) {
  Result out{};
  const RankProgram* first_played = lowered.played.empty() ? nullptr : lowered.played.front().program;
  const auto run = [&](RankProgram& program) {
    const Result r = pass(program);
    if (&program == first_played) out = r;
  };
  for (RankProgram& program : lowered.programs)
    if (!program.instructions.empty()) run(program);
  for (auto& entry : routed.programs) run(*entry.second);
  return out;
}

FusedPairsResult overlap_fused_pairs(const Schedule& schedule, const SimOptions& options, Lowered& lowered,
                                     Routed& routed) {
  if (!options.overlap_fused_pairs) return {};
  return rewrite_played<FusedPairsResult>(
      lowered, routed, [&](RankProgram& program) { return interleave_fused_pairs(program, schedule); });
}

TpOverlapResult overlap_tp_comm(const Job& job, Lowered& lowered, Routed& routed) {
  if (!job.parallel.tp_comm_overlap) return {};
  const int64_t t = job.parallel.tensor_model_parallel_size;
  return rewrite_played<TpOverlapResult>(lowered, routed,
                                         [&](RankProgram& program) { return pipeline_tp_overlap(program, t); });
}

// Compute time of x from its cost note: a piece of a split GEMM costs its share of the whole; a
// grouped expert GEMM with unequal experts the factor over the even split.
// A piece of a split operation costs its share of the whole's kernels and launches its own.
OpTime noted_time(ComputeTimes& times, const ComputeModel& model, const Instruction& x) {
  const CostNote& note = *x.cost;
  if (note.whole_m > 0) {
    Instruction whole = x;
    whole.m = note.whole_m;
    whole.flops = note.whole_flops;
    whole.bytes = note.whole_bytes;
    const OpTime t = times(whole);
    return {t.kernels * note.share, t.launches};
  }
  OpTime t = times(x);
  if (!note.expert_rows.empty()) t.kernels *= grouped_gemm_factor(model, x, note.expert_rows);
  return t;
}

OpTime timed(ComputeTimes& times, const ComputeModel& model, const Instruction& x) {
  return x.cost ? noted_time(times, model, x) : times(x);
}

// A reduced run plays the data-parallel groups one-sided, assuming every unplayed member arrives
// with the rank that plays its part. With a routing model that makes EP ranks differ, the dense
// data-parallel groups mix EP coordinates, so that assumption holds only where those collectives
// are costed analytically (members inside one node do not wait for each other). Otherwise the
// reduction would not be exact: the reason to play every rank, or "" when it stays exact.
std::string routed_reduction_blocker(const Job& job, const ParallelGrid& grid, const ReplicaLayout& layout,
                                     const std::vector<int64_t>& gpu_of) {
  if (!layout.reduced() || grid.ep_size() == 1) return "";
  const std::vector<GpuPlace> places = place_gpus(job.cluster, grid.world_size());
  const auto node = [&](int64_t rank) { return places[static_cast<size_t>(gpu_of[static_cast<size_t>(rank)])].node; };
  for (int64_t rank : layout.played)
    for (ParallelGroup kind : {ParallelGroup::Dp, ParallelGroup::DpCp, ParallelGroup::TpDp, ParallelGroup::TpDpCp}) {
      const auto group = grid.find_group(rank, kind);
      if (!group) continue;
      for (int64_t member : group->ranks)
        if (node(member) != node(rank))
          return "the MoE routing model makes expert-parallel ranks differ and their data-parallel groups cross "
                 "nodes, where a reduced run cannot wait for the slowest member";
    }
  return "";
}

// One NIC per GPU, no oversubscribed uplink, one datacenter: a flow shares no link with the flows
// of GPUs it does not run on or talk to (the switches are non-blocking), so ranks that no played
// rank talks to can be left out without ghosts.
bool flows_meet_only_on_own_links(const ClusterSpec& c) {
  return c.nics_per_node >= c.gpus_per_node && c.oversubscription <= 1 && c.datacenters == 1;
}

// Whether the other tensor-parallel ranks of a reduced run can be copies of tp = 0 exactly (see
// narrow_to_tensor_rank_zero): a dense job whose TP groups sit inside one node, one NIC per GPU
// (so no NIC, rail switch or rail uplink carries two tp coordinates), no oversubscribed uplink and
// no WAN (where the unplayed ranks' flows would be ghosts), and no trace asked for (traces show
// the played ranks).
bool tp_copies_exact(const Job& job, const ParallelGrid& grid, const ReplicaLayout& layout, const SimOptions& options) {
  const ClusterSpec& c = job.cluster;
  if (!options.tensor_parallel_copies || !layout.reduced() || grid.tp_size() == 1 || job.model.is_moe() ||
      options.trace_path || options.op_trace_path)
    return false;
  if (!flows_meet_only_on_own_links(c)) return false;
  const std::vector<GpuPlace> places = place_gpus(c, grid.world_size());
  for (int64_t rank : layout.played) {
    const auto group = grid.find_group(rank, ParallelGroup::Tp);
    if (!group) return false;
    for (int64_t member : group->ranks)
      if (places[static_cast<size_t>(member)].node != places[static_cast<size_t>(rank)].node) return false;
  }
  return true;
}

// Why a reduced run would not be exact, or "": a routing model that makes EP ranks differ across
// nodes (routed_reduction_blocker), or stragglers, which make ranks differ.
std::string reduction_blocker(const Job& job, const ParallelGrid& grid, const ReplicaLayout& layout, bool redraw,
                              const std::vector<int64_t>& gpu_of) {
  if (redraw)
    if (std::string blocker = routed_reduction_blocker(job, grid, layout, gpu_of); !blocker.empty()) return blocker;
  if (layout.reduced() && has_effective_stragglers(job.cluster))
    return "stragglers make ranks differ, so every data-parallel replica is played";
  return "";
}

// Slow GPUs: per-rank compute speeds, and a node's collectives played as flows whose members wait
// for each other (analytic costing would let a fast member run ahead of a slow one).
void slow_gpus(const Degradation& degradation, ExecutorOptions& exec) {
  if (!degradation.any_gpu()) return;
  exec.compute_speed = degradation.gpu;
  exec.analytic_intra_node = false;
}

void straggler_notes(SimResult& r, const Degradation& degradation) {
  const std::string compute = "; their kernels take 1/speed as long, their kernel launches do not";
  for (const std::string& d : degradation.describe())
    r.notes.push_back("stragglers: " + d + (d.rfind("GPU compute", 0) == 0 ? compute : ""));
}

std::string routing_note(const Job& job, const RoutingSummary& s, bool redraw) {
  const TrainingConfig& t = job.training;
  std::string what = "MoE routing: " + s.model;
  if (t.moe_routing == MoeRouting::Zipf)
    what += " (s = " + fixed(t.moe_routing_zipf_s, 2) + ", seed " + std::to_string(t.moe_routing_seed) + ")";
  if (t.moe_routing == MoeRouting::Trace) what += " (" + t.moe_routing_trace + ")";
  what += ": max/mean expert load " + fixed(s.max_over_mean, 2);
  if (job.model.moe_expert_capacity_factor > 0)
    what += ", capacity factor " + fixed(job.model.moe_expert_capacity_factor, 2) + " drops " +
            fixed(100.0 * s.dropped_fraction, 2) + "% of the token copies";
  else
    what += ", dropless";
  if (!redraw) what += " (the expected token counts per expert)";
  else what += "; EP all-to-alls played as flows with per-peer sizes (members wait for each other), ranks split by EP coordinate";
  return what;
}

void add_notes(SimResult& r, const Job& job, const ReplicaLayout& layout, const std::string& why_not,
               const ComputeModel& model, const std::string& peak_name, int64_t world, const SimCounts& counts,
               bool exec_analytic) {
  if (layout.reduced()) {
    const int64_t dp_copies = layout.copies / layout.tp_copies;
    const std::string copies_text =
        layout.tp_copies > 1 ? "tensor-parallel rank 0 of one data-parallel replica of " + std::to_string(dp_copies) +
                                   ", the other " + std::to_string(layout.tp_copies - 1) + " tensor-parallel ranks as copies"
                             : "one data-parallel replica of " + std::to_string(dp_copies);
    r.notes.push_back("symmetry: played " + std::to_string(layout.played.size()) + " of " + std::to_string(world) +
                      " ranks (" + std::to_string(layout.copies) + " copies: " + copies_text +
                      "); the others are represented by their flows on shared links (oversubscribed uplinks, WAN): "
                      "exact when the copies are symmetric");
    r.notes.push_back(
        "data-parallel collectives are played one-sided by the played members of each group, assuming the unplayed "
        "members start them at the same time");
    r.notes.push_back(std::to_string(counts.ghost_flows) +
                      " ghost flows stood for the unplayed ranks' traffic on links shared with played flows");
  } else if (!why_not.empty()) {
    r.notes.push_back("every rank played (" + why_not + ")");
  }
  if (exec_analytic)
    r.notes.push_back(
        "collectives inside one node are costed analytically (non-blocking NVSwitch): members do not wait for each "
        "other and they do not share NVLink with concurrent flows");
  else
    r.notes.push_back("collectives inside one node are played as flows, whose members wait for each other (a slow "
                      "GPU holds up its node's collectives)");
  r.notes.push_back("compute: " + model.describe());
  r.notes.push_back("MFU and HFU relative to the " + peak_name + " peak of " + job.cluster.gpu.name);
}

// Iteration time, tokens/s, TFLOP/s per GPU, MFU and HFU of an iteration that took `makespan_s`;
// `peak_name` says which dense peak MFU refers to.
void set_throughput(SimResult& r, const Job& job, const ParallelGrid& grid, double makespan_s, std::string* peak_name) {
  r.iteration_time_s = makespan_s;
  TANDEM_CHECK_MSG(r.iteration_time_s > 0, "the iteration took no time");
  const auto world = static_cast<double>(grid.world_size());
  const IterationFlops flops = flops_per_iteration(job);
  const double peak = peak_flops(job, peak_name);
  r.tokens_per_s = static_cast<double>(job.training.global_batch_size * job.model.seq_length) / r.iteration_time_s;
  r.model_tflops_per_gpu = flops.model / r.iteration_time_s / world / 1e12;
  r.hardware_tflops_per_gpu = flops.hardware / r.iteration_time_s / world / 1e12;
  r.mfu = peak > 0 ? r.model_tflops_per_gpu * 1e12 / peak : 0;
  r.hfu = peak > 0 ? r.hardware_tflops_per_gpu * 1e12 / peak : 0;
}

// Per played rank: busy time, symmetry class and peak memory (bytes, per class program; classes
// split by EP coordinate when the routing redraws sizes); the maximum and the OOM verdict.
void set_memory(SimResult& r, const Job& job, const ParallelGrid& grid, const Lowered& lowered,
                const ExecutionResult& run, bool redraw) {
  double peak_bytes = 0;
  std::vector<double> class_peak(lowered.programs.size() * static_cast<size_t>(redraw ? grid.ep_size() : 1), -1.0);
  for (size_t i = 0; i < lowered.played.size(); ++i) {
    RankResult rank;
    rank.rank = lowered.played[i].rank;
    rank.busy_s = run.ranks[i].compute_s;
    rank.finish_s = run.ranks[i].finish_s;
    rank.breakdown = run.ranks[i].breakdown;
    rank.peer_wait_s = run.ranks[i].peer_wait_s;
    rank.symmetry_class = played_class(job, grid, rank.rank, redraw);
    double& peak_of_class = class_peak[static_cast<size_t>(rank.symmetry_class)];
    if (peak_of_class < 0) peak_of_class = lowered.played[i].program->peak_bytes();
    rank.peak_memory_bytes = peak_of_class;
    peak_bytes = std::max(peak_bytes, rank.peak_memory_bytes);
    r.ranks.push_back(rank);
  }
  r.peak_memory_gib = peak_bytes / kBytesPerGiB;
  r.oom = job.cluster.gpu.hbm_bytes > 0 && peak_bytes > job.cluster.gpu.hbm_bytes;
}

// One row of WaitRow: the mean over `members` (indices into r.ranks).
WaitRow wait_row(const SimResult& r, const std::string& who, const std::vector<size_t>& members) {
  WaitRow row;
  row.who = who;
  row.count = static_cast<int64_t>(members.size());
  row.rank = members.size() == 1 ? r.ranks[members[0]].rank : -1;
  for (size_t m : members) {
    const RankResult& x = r.ranks[m];
    const Breakdown& b = x.breakdown;
    row.busy_s += x.busy_s;
    row.compute_s += b.compute;
    row.pipeline_s += b.pipeline_bubble + b.pp_comm;
    row.collectives_s += b.tp_comm + b.cp_comm + b.ep_comm;
    row.data_parallel_s += b.dp_comm;
    row.optimizer_s += b.optimizer;
    row.peer_wait_s += x.peer_wait_s;
    row.idle_at_end_s += r.iteration_time_s - x.finish_s;
  }
  const auto n = static_cast<double>(std::max<size_t>(1, members.size()));
  for (double* v : {&row.busy_s, &row.compute_s, &row.pipeline_s, &row.collectives_s, &row.data_parallel_s,
                    &row.optimizer_s, &row.peer_wait_s, &row.idle_at_end_s})
    *v /= n;
  return row;
}

// Who waits for whom: the slowest played rank (most compute seconds; of ranks within 1e-6 of each
// other, the first played, i.e. the smallest), the critical rank, then means over the slowest
// rank's pipeline peers (same tp, cp, dp), its data-parallel peers (same tp, cp, pp), its
// tensor/context-parallel peers (same dp, pp) and the other played ranks. Rows without ranks are
// left out.
std::vector<WaitRow> who_waits(const SimResult& r, const ParallelGrid& grid) {
  if (r.ranks.empty()) return {};
  size_t slowest = 0, critical = 0;
  for (size_t i = 0; i < r.ranks.size(); ++i) {
    if (r.ranks[i].busy_s > r.ranks[slowest].busy_s * (1 + 1e-6)) slowest = i;   // near-ties: the smaller rank
    if (r.ranks[i].rank == r.critical_rank) critical = i;
  }
  std::vector<WaitRow> rows = {wait_row(r, "slowest", {slowest})};
  if (critical != slowest) rows.push_back(wait_row(r, "critical", {critical}));
  const DenseCoord s = grid.dense_coord(r.ranks[slowest].rank);
  std::vector<size_t> pipeline, data_parallel, tensor, others;
  for (size_t i = 0; i < r.ranks.size(); ++i) {
    if (i == slowest || i == critical) continue;
    const DenseCoord c = grid.dense_coord(r.ranks[i].rank);
    if (c.tp == s.tp && c.cp == s.cp && c.dp == s.dp) pipeline.push_back(i);
    else if (c.tp == s.tp && c.cp == s.cp && c.pp == s.pp) data_parallel.push_back(i);
    else if (c.dp == s.dp && c.pp == s.pp) tensor.push_back(i);
    else others.push_back(i);
  }
  const std::pair<const char*, const std::vector<size_t>*> groups[] = {
      {"pipeline peers", &pipeline}, {"data-parallel peers", &data_parallel},
      {"tensor/context-parallel peers", &tensor}, {"others", &others}};
  for (const auto& [who, members] : groups)
    if (!members->empty()) rows.push_back(wait_row(r, who, *members));
  return rows;
}

// The critical rank's busy time under each sensitivity stack: its compute instructions timed with
// that stack's model, relative to the same sum under the job's model (durations on the played
// timeline also carry SM-sharing slowdowns; the ratio keeps them).
std::vector<double> sensitivity_busy(const Job& job, const RankProgram& program, const ComputeModel& model,
                                     double busy_s, const SimOptions& options) {
  const auto total = [&](const ComputeModel& m) {
    ComputeTimes times(m);
    double sum = 0;
    for (const Instruction& x : program.instructions)
      if (is_compute(x.kind)) sum += timed(times, m, x).kernels;
    return sum;
  };
  const double base = total(model);
  std::vector<double> out;
  for (const auto& stack : options.sensitivity_stacks) {
    ComputeModel alternative(job.cluster.gpu, stack->efficiency, compute_options_for(job));
    if (options.profile) alternative.load_profile(*options.profile);
    out.push_back(base > 0 ? busy_s * total(alternative) / base : busy_s);
  }
  return out;
}

// The datacenter of each rank under the job's placement (dc_placement.h).
std::vector<int64_t> datacenter_of_rank(const Job& job, const std::vector<int64_t>& gpu_of) {
  const std::vector<GpuPlace> places = place_gpus(job.cluster, static_cast<int64_t>(gpu_of.size()));
  std::vector<int64_t> dc(gpu_of.size());
  for (size_t r = 0; r < gpu_of.size(); ++r) dc[r] = places[static_cast<size_t>(gpu_of[r])].dc;
  return dc;
}

// The ranks to play: one data-parallel replica, narrowed to tp = 0 where that stays exact; every
// rank when the datacenter placement makes the replicas differ.
ReplicaLayout choose_layout(const Job& job, const ParallelGrid& grid, const SimOptions& options,
                            const std::vector<int64_t>& gpu_of, bool symmetric_experts, std::string* why_not) {
  ReplicaLayout layout = replica_layout(grid, options.all_ranks, why_not, symmetric_experts && options.expert_parallel_copies);
  if (job.cluster.datacenters > 1 && layout.reduced() &&
      !replicas_respect_datacenters(layout, datacenter_of_rank(job, gpu_of), why_not))
    return replica_layout(grid, true);
  if (tp_copies_exact(job, grid, layout, options)) return narrow_to_tensor_rank_zero(grid, layout);
  return layout;
}

// Notes on what the simulator's passes did: buffered messages, TP communication overlap.
void add_pass_notes(SimResult& r, const Job& job, bool buffered_p2p, const TpOverlapResult& tp_overlap) {
  if (buffered_p2p)
    r.notes.push_back("point-to-point messages are buffered at the receiver: the " +
                      job.parallel.pipeline_schedule +
                      " schedule receives some messages in another order than they are sent, which an in-order "
                      "(NCCL) backend can only do by buffering them");
  if (job.parallel.tp_comm_overlap)
    r.notes.push_back("TP communication overlap (--tp-comm-overlap): " + std::to_string(tp_overlap.gathers) +
                      " all-gather/GEMM and " + std::to_string(tp_overlap.scatters) +
                      " GEMM/reduce-scatter pairs per iteration pipelined in " +
                      std::to_string(job.parallel.tensor_model_parallel_size) +
                      " chunks, as Transformer Engine's userbuffers do (approximate: the GEMM chunks are not slowed "
                      "by the SMs or copy engines the exchange uses)");
}

WanReport wan_report(const Job& job, const ExecutionResult& run, double ideal_iteration_s) {
  WanReport w;
  w.placement = to_string(job.parallel.dc_placement);
  w.bytes = run.wan.total();
  w.bytes_by_direction = run.wan.bytes;
  w.exposed_s = run.ranks[run.critical].wan_exposed_s;
  if (ideal_iteration_s > 0) {
    w.ideal_iteration_s = ideal_iteration_s;
    w.cost_s = run.makespan_s - ideal_iteration_s;
  }
  return w;
}

// The iteration time of the job on an ideal WAN (zero latency, 1e15 bytes/s), simulated in a
// forked child before this process builds its platform (one SimGrid engine per process).
double ideal_wan_iteration(const Job& job, const SimOptions& options) {
  Job ideal = job;
  ideal.cluster.wan_latency = 0;
  ideal.cluster.wan_bandwidth = 1e15;
  SimOptions child;
  child.stack = options.stack;
  child.all_ranks = options.all_ranks;
  child.profile = options.profile;
  child.wan_baseline = false;
  if (options.progress) options.progress(0.0, "simulating the same job on an ideal WAN");
  return simulate_in_subprocess(ideal, child).iteration_time_s;
}

std::string wan_note(const Job& job, const WanReport& w) {
  const ClusterSpec& c = job.cluster;
  return std::to_string(c.datacenters) + " datacenters (WAN " + fixed(c.wan_bandwidth * 8 / 1e9, 1) + " Gb/s, " +
         fixed(c.wan_latency * 1e3, 2) + " ms), placement " + w.placement + ": " + fixed(w.bytes / 1e9, 3) +
         " GB crossed the WAN per iteration; data-parallel groups spanning datacenters reduce hierarchically "
         "(inside each datacenter, then the shards across); exposed WAN communication = the critical rank's exposed "
         "communication on operations crossing the WAN" +
         (w.cost_s >= -0.5 ? "; WAN cost = iteration time - " + fixed(w.ideal_iteration_s, 3) +
                                 " s of the same job on an ideal WAN (no latency, unlimited bandwidth)"
                           : "");
}

// A token's copies that cross the network, as a share of the all-to-all's cross-node bytes.
//
// Node-limited routing (DeepSeek-V3 section 3.2.2): with expert groups that are whole nodes of an
// expert-parallel group, a token goes to at most group_topk nodes and crosses the network once per
// node, its copies fanned out over NVLink there. Under balanced routing a token's copies to other
// nodes are topk (N - 1) / N and the nodes it crosses to group_topk (N - 1) / N, so the
// all-to-alls carry group_topk / topk of their cross-node bytes.
//
// The flex dispatcher (Megatron-Core's --moe-token-dispatcher-type flex: DeepEP or HybridEP) sends
// a token once to each remote node that holds at least one of its experts, whatever the routing.
// With k experts drawn uniformly from E, E/N on each of the N nodes, a given remote node holds none
// of them with probability C(E - E/N, k) / C(E, k): the token reaches (N - 1)(1 - that) remote
// nodes where the plain all-to-all sends k (N - 1) / N copies.
struct CrossNodeShare {
  double share = 1.0;
  std::string why;   // "" when 1
};

double expected_remote_nodes(int64_t experts, int64_t topk, int64_t nodes) {
  const int64_t per_node = experts / nodes;
  double none = 1.0;   // a given remote node holds none of the token's experts
  for (int64_t i = 0; i < topk && none > 0.0; ++i)
    none = experts - per_node - i <= 0 ? 0.0 : none * double(experts - per_node - i) / double(experts - i);
  return double(nodes - 1) * (1.0 - none);
}

CrossNodeShare cross_node_ep_share(const Job& job, const ParallelGrid& grid, const std::vector<int64_t>& gpu_of) {
  const ModelConfig& m = job.model;
  if (!m.is_moe() || grid.ep_size() < 2) return {};
  const std::vector<GpuPlace> places = place_gpus(job.cluster, grid.world_size());
  const auto group = grid.find_group(0, ParallelGroup::Ep);
  if (!group) return {};
  std::map<int64_t, int64_t> members_per_node;
  for (int64_t r : group->ranks) ++members_per_node[places[static_cast<size_t>(gpu_of[static_cast<size_t>(r)])].node];
  const int64_t per_node = members_per_node.begin()->second;
  for (const auto& [node, count] : members_per_node)
    if (count != per_node) return {};
  const int64_t nodes = static_cast<int64_t>(members_per_node.size());
  const int64_t experts_per_node = m.num_experts / grid.ep_size() * per_node;
  if (nodes < 2) return {};
  if (m.moe_router_num_groups > 0 && m.moe_router_group_topk > 0 && m.num_experts / m.moe_router_num_groups == experts_per_node) {
    const double share = std::min(1.0, double(m.moe_router_group_topk) / double(m.moe_router_topk));
    return {share, "node-limited routing: a token crosses the network once per node it reaches, so the expert-parallel "
                   "all-to-alls carry " + fixed(share, 3) + " (group top-k / top-k) of their cross-node bytes"};
  }
  if (m.moe_token_dispatcher_type != TokenDispatcher::Flex) return {};
  const double copies = double(m.moe_router_topk) * double(nodes - 1) / double(nodes);
  const double share = std::min(1.0, expected_remote_nodes(m.num_experts, m.moe_router_topk, nodes) / copies);
  return {share, "flex dispatcher (DeepEP/HybridEP): a token crosses the network once per node holding one of its "
                 "experts, so the expert-parallel all-to-alls carry " + fixed(share, 3) + " of their cross-node bytes (" +
                 std::to_string(nodes) + " nodes, top-" + std::to_string(m.moe_router_topk) + " of " +
                 std::to_string(m.num_experts) + " experts drawn uniformly)"};
}

// How the executor times instructions: the compute model's kernel and launch times, NCCL's SM share,
// buffered point-to-point for out-of-order schedules, and slow GPUs.
ExecutorOptions executor_options(ComputeTimes& times, const ComputeModel& model, const Schedule& schedule,
                                 const SimOptions& options, const Degradation& degradation, double ep_remote_share) {
  ExecutorOptions exec;
  exec.ep_remote_share = ep_remote_share;
  exec.compute_time = [&times, &model](const RankProgram&, const Instruction& x) {
    return timed(times, model, x).kernels;
  };
  exec.host_time = [&times, &model](const RankProgram&, const Instruction& x) {
    return timed(times, model, x).launches;
  };
  exec.comm_compute_slowdown = 1.0 / (1.0 - model.efficiency().nccl_sm_fraction);
  exec.buffered_p2p = !out_of_order_channels(schedule).empty();   // schedules/message_order.h
  exec.record_timeline = options.trace_path.has_value();
  slow_gpus(degradation, exec);
  exec.progress = options.progress;
  return exec;
}

void add_routing_and_memory_notes(SimResult& r, const Job& job, const MoeRoutingModel* routing, bool redraw) {
  if (routing) {
    r.moe_routing = routing->summary();
    r.notes.push_back(routing_note(job, *r.moe_routing, redraw));
  }
  if (r.oom)
    r.notes.push_back("out of memory: a rank needs " + fixed(r.peak_memory_gib, 2) + " GiB of the GPU's " +
                      fixed(job.cluster.gpu.hbm_bytes / kBytesPerGiB, 2) + " GiB");
}

}  // namespace

double peak_flops(const Job& job, std::string* which) {
  const GpuSpec& gpu = job.cluster.gpu;
  if (job.training.fp8_format != Fp8Format::None && gpu.peak_flops_fp8 > 0) {
    if (which) *which = "dense FP8";
    return gpu.peak_flops_fp8;
  }
  if (job.training.params_dtype == DType::FP32 && gpu.peak_flops_fp32 > 0) {
    if (which) *which = "dense FP32";
    return gpu.peak_flops_fp32;
  }
  if (which) *which = "dense BF16/FP16";
  return gpu.peak_flops_bf16;
}

SimResult simulate(const Job& job, const SimOptions& options) {
  const auto wall_start = Clock::now();
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  const std::vector<int64_t> gpu_of = gpu_of_rank(job, grid);   // validates the placement
  const bool several_dcs = job.cluster.datacenters > 1;
  const double ideal_iteration_s = several_dcs && options.wan_baseline ? ideal_wan_iteration(job, options) : -1;
  std::optional<MoeRoutingModel> routing;
  if (job.model.is_moe()) routing.emplace(job, grid);   // checks a trace file before lowering
  const bool redraw = routing && !routing->is_expected();
  std::string why_not;
  // Balanced routing makes expert-parallel ranks symmetric; expert groups without a played member
  // are then left out, which needs a fabric where their flows meet no played flow.
  const bool symmetric_experts = routing && !redraw && flows_meet_only_on_own_links(job.cluster);
  ReplicaLayout layout = choose_layout(job, grid, options, gpu_of, symmetric_experts, &why_not);
  const Stack stack = options.stack ? *options.stack : stack_for_job(job);
  ComputeModel model(job.cluster.gpu, stack.efficiency, compute_options_for(job));
  if (options.profile) model.load_profile(*options.profile);
  if (const std::string blocker = reduction_blocker(job, grid, layout, redraw, gpu_of); !blocker.empty()) {
    why_not = blocker;
    layout = replica_layout(grid, true);
  }
  Lowered lowered = lower_played(job, grid, schedule, layout, options);
  Routed routed;
  if (redraw) route_played(job, grid, *routing, lowered, routed);
  if (options.op_trace_path) write_op_trace(*options.op_trace_path, grid, lowered.played);
  const FusedPairsResult fused = overlap_fused_pairs(schedule, options, lowered, routed);
  const TpOverlapResult tp_overlap = overlap_tp_comm(job, lowered, routed);
  if (options.progress) options.progress(0.0, "building the platform of " + std::to_string(grid.world_size()) + " GPUs");
  PlatformOptions platform_options;
  platform_options.efficiency = &model.efficiency();
  if (!is_identity(gpu_of)) platform_options.gpu_of_rank = gpu_of;
  Platform platform(job.cluster, grid.world_size(), platform_options);
  Collectives collectives(platform);

  ComputeTimes times(model);
  const CrossNodeShare ep_share = cross_node_ep_share(job, grid, gpu_of);
  const ExecutorOptions exec = executor_options(times, model, schedule, options, platform.degradation(), ep_share.share);
  const ExecutionResult run = execute(platform, collectives, grid, lowered.played, layout, exec);
  if (options.trace_path) write_chrome_trace(*options.trace_path, grid, lowered.played, run.ranks);

  SimResult r;
  std::string peak_name;
  set_throughput(r, job, grid, run.makespan_s, &peak_name);
  set_memory(r, job, grid, lowered, run, redraw);
  r.breakdown = run.ranks[run.critical].breakdown;
  r.critical_rank = run.ranks[run.critical].rank;
  r.waits = who_waits(r, grid);
  if (!options.sensitivity_stacks.empty())
    r.sensitivity_busy_s = sensitivity_busy(job, *lowered.played[run.critical].program, model,
                                            run.ranks[run.critical].compute_s, options);
  r.ranks_played = static_cast<int64_t>(lowered.played.size());
  r.symmetry_classes = static_cast<int64_t>(class_representatives(job, grid).size()) * (redraw ? grid.ep_size() : 1);
  r.symmetry_reduced = layout.reduced();
  r.counts = run.stats;
  r.notes = job.notes;   // what resolving the job assumed or extended (e.g. beyond the cluster's size)
  add_notes(r, job, layout, why_not, model, peak_name, grid.world_size(), run.stats, exec.analytic_intra_node);
  straggler_notes(r, platform.degradation());
  r.stack = stack.name;
  r.notes.push_back(stack_note(stack, job));
  add_pass_notes(r, job, exec.buffered_p2p, tp_overlap);
  if (ep_share.share < 1.0)
    r.notes.push_back(ep_share.why + "; the NVLink fan-out inside the receiving node is not played (balanced routing, "
                      "approximate)");
  if (fused.pairs > 0)
    r.notes.push_back("overlapped F&B pairs: the first played rank's " + std::to_string(fused.pairs) + " pairs cut at their expert-parallel communication into " +
                      std::to_string(fused.pieces) + " pieces and merged, so one microbatch's all-to-all runs "
                      "beside the other's compute (approximate: pieces alternate strictly)");
  if (several_dcs) {
    r.wan = wan_report(job, run, ideal_iteration_s);
    r.notes.push_back(wan_note(job, *r.wan));
  }
  add_routing_and_memory_notes(r, job, routing ? &*routing : nullptr, redraw);
  r.wall_seconds = std::chrono::duration<double>(Clock::now() - wall_start).count();
  return r;
}

double critical_busy_s(const SimResult& r) {
  for (const RankResult& rank : r.ranks)
    if (rank.rank == r.critical_rank) return rank.busy_s;
  return r.breakdown.compute + r.breakdown.optimizer;
}

nlohmann::json breakdown_to_json(const Breakdown& b) {
  return {{"compute", b.compute},   {"tp_comm", b.tp_comm},         {"cp_comm", b.cp_comm},
          {"ep_comm", b.ep_comm},   {"pp_comm", b.pp_comm},         {"dp_comm", b.dp_comm},
          {"pipeline_bubble", b.pipeline_bubble}, {"optimizer", b.optimizer}};
}

nlohmann::json result_to_json(const SimResult& r) {
  nlohmann::json j;
  j["iteration_time_s"] = r.iteration_time_s;
  j["tokens_per_s"] = r.tokens_per_s;
  j["model_tflops_per_gpu"] = r.model_tflops_per_gpu;
  j["hardware_tflops_per_gpu"] = r.hardware_tflops_per_gpu;
  j["mfu"] = r.mfu;
  j["hfu"] = r.hfu;
  j["peak_memory_gib"] = r.peak_memory_gib;
  j["oom"] = r.oom;
  j["breakdown"] = breakdown_to_json(r.breakdown);
  j["critical_rank"] = r.critical_rank;
  j["ranks_played"] = r.ranks_played;
  j["symmetry_classes"] = r.symmetry_classes;
  j["symmetry_reduced"] = r.symmetry_reduced;
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankResult& rank : r.ranks)
    ranks.push_back({{"rank", rank.rank},
                     {"busy_s", rank.busy_s},
                     {"peak_memory_gib", rank.peak_memory_bytes / kBytesPerGiB},
                     {"symmetry_class", rank.symmetry_class},
                     {"finish_s", rank.finish_s},
                     {"breakdown", breakdown_to_json(rank.breakdown)},
                     {"peer_wait_s", rank.peer_wait_s}});
  j["ranks"] = std::move(ranks);
  nlohmann::json waits = nlohmann::json::array();
  for (const WaitRow& w : r.waits)
    waits.push_back({{"who", w.who}, {"rank", w.rank}, {"count", w.count}, {"busy_s", w.busy_s},
                     {"compute_s", w.compute_s}, {"pipeline_s", w.pipeline_s}, {"collectives_s", w.collectives_s},
                     {"data_parallel_s", w.data_parallel_s}, {"optimizer_s", w.optimizer_s},
                     {"peer_wait_s", w.peer_wait_s}, {"idle_at_end_s", w.idle_at_end_s}});
  j["waits"] = std::move(waits);
  if (!r.sensitivity_busy_s.empty()) j["sensitivity_busy_s"] = r.sensitivity_busy_s;
  j["stack"] = r.stack;
  j["notes"] = r.notes;
  if (r.moe_routing) j["moe_routing"] = summary_to_json(*r.moe_routing);
  if (r.wan) {
    j["dc_placement"] = r.wan->placement;
    j["wan_bytes"] = r.wan->bytes;
    nlohmann::json by_direction = nlohmann::json::object();
    for (size_t from = 0; from < r.wan->bytes_by_direction.size(); ++from)
      for (size_t to = 0; to < r.wan->bytes_by_direction[from].size(); ++to)
        if (from != to)
          by_direction[std::to_string(from) + "->" + std::to_string(to)] = r.wan->bytes_by_direction[from][to];
    j["wan_bytes_by_direction"] = std::move(by_direction);
    j["wan_exposed_s"] = r.wan->exposed_s;
    if (r.wan->ideal_iteration_s > 0) {
      j["wan_ideal_iteration_time_s"] = r.wan->ideal_iteration_s;
      j["wan_cost_s"] = r.wan->cost_s;
    }
  }
  return j;
}

}  // namespace tandem::sim
