// The executor's communication (executor.h): process groups, collective plans, point-to-point
// rendezvous, and the ghost flows that stand for unplayed ranks.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include <simgrid/s4u.hpp>

#include "backends/sim/executor_internal.h"
#include "core/check.h"

namespace tandem::sim::detail {
namespace sg4 = simgrid::s4u;

namespace {

int g_token = 0;  // payload of zero-byte eager sends (bytes are modelled, never carried)

uint64_t payload(double bytes) { return static_cast<uint64_t>(std::llround(std::max(0.0, bytes))); }

PlanKind plan_kind(OpKind kind) {
  switch (kind) {
    case OpKind::AllReduce: return PlanKind::AllReduce;
    case OpKind::ReduceScatter: return PlanKind::ReduceScatter;
    case OpKind::AllGather: return PlanKind::AllGather;
    case OpKind::AllToAllV: return PlanKind::AllToAll;
    default: break;
  }
  TANDEM_CHECK_MSG(false, "not a collective: " << to_string(kind));
  return PlanKind::AllReduce;
}

CollectiveKind collective_kind(PlanKind kind) {
  switch (kind) {
    case PlanKind::ReduceScatter: return CollectiveKind::ReduceScatter;
    case PlanKind::AllGather: return CollectiveKind::AllGather;
    default: return CollectiveKind::AllReduce;
  }
}

const char* plan_kind_name(PlanKind kind) {
  switch (kind) {
    case PlanKind::AllReduce: return "ar";
    case PlanKind::ReduceScatter: return "rs";
    case PlanKind::AllGather: return "ag";
    case PlanKind::AllToAll: return "a2a";
  }
  return "?";
}

// MoE routing model (its note's peer_bytes): a routed all-to-all(v) with real per-peer sizes,
// and the bytes of one (src, dst) pair from the EP x EP matrix.
bool routed_all_to_all(const Instruction& x) {
  return x.kind == OpKind::AllToAllV && x.cost && x.cost->peer_bytes;
}

// A later piece of one pipelined TP exchange (tp_overlap.h): bandwidth only.
bool continues_exchange(const Instruction& x) { return x.cost && x.cost->continues_exchange; }

double pair_bytes(const ParallelGrid& grid, const std::vector<double>& matrix, int64_t src, int64_t dst) {
  const auto p = static_cast<size_t>(grid.ep_size());
  TANDEM_CHECK_MSG(matrix.size() == p * p, matrix.size() << " all-to-all sizes for EP " << p);
  return matrix[static_cast<size_t>(grid.expert_coord(src).ep) * p + static_cast<size_t>(grid.expert_coord(dst).ep)];
}

// The data-parallel groups: their gradient reductions and parameter all-gathers run
// hierarchically when they span datacenters (Algorithm::DatacenterHierarchical).
bool reduces_gradients(ParallelGroup kind) {
  switch (kind) {
    case ParallelGroup::Dp:
    case ParallelGroup::DpCp:
    case ParallelGroup::TpDp:
    case ParallelGroup::TpDpCp:
    case ParallelGroup::ExpertDp: return true;
    default: return false;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Execution: shared state

Execution::Execution(Platform& platform_, Collectives& collectives_, const ParallelGrid& grid_,
                     const ReplicaLayout& layout_, const ExecutorOptions& options_, int64_t total_instructions)
    : platform(platform_),
      collectives(collectives_),
      grid(grid_),
      layout(layout_),
      options(options_),
      total_instructions_(total_instructions),
      last_report_(std::chrono::steady_clock::now()) {}

size_t Execution::MessageKeyHash::operator()(const MessageKey& k) const {
  uint64_t h = static_cast<uint64_t>(k.src) * 0x9E3779B97F4A7C15ull;
  h ^= static_cast<uint64_t>(k.dst) + 0x7F4A7C159E3779B9ull + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(k.seq) * 0xC2B2AE3D27D4EB4Full + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(k.channel) + (h << 6) + (h >> 2);
  return static_cast<size_t>(h);
}

const ProgramIndex& Execution::index(const RankProgram& program) {
  auto& slot = indexes_[&program];
  if (!slot) slot = std::make_unique<ProgramIndex>(index_program(program, options.compute_time, options.host_time));
  return *slot;
}

bool Execution::is_played(int64_t rank) const { return layout.copy[static_cast<size_t>(rank)] == 0; }

GroupInfo& Execution::group(int64_t rank, ParallelGroup kind) {
  const uint64_t rank_key = (static_cast<uint64_t>(rank) << 8) | static_cast<uint64_t>(kind);
  auto cached = rank_groups_.find(rank_key);
  if (cached != rank_groups_.end()) return *cached->second;
  const GroupMembership m = grid.group_of(rank, kind);
  const uint64_t key = (static_cast<uint64_t>(kind) << 48) | static_cast<uint64_t>(m.group_index);
  auto& slot = groups_[key];
  if (!slot) {
    slot = std::make_unique<GroupInfo>();
    GroupInfo& g = *slot;
    g.key = key;
    g.kind = kind;
    g.group.name = to_string(kind) + "#" + std::to_string(m.group_index);
    g.group.gpus = m.ranks;
    g.intra_node = true;
    const int64_t node = platform.place(m.ranks.front()).node;
    const int64_t dc = platform.place(m.ranks.front()).dc;
    for (size_t j = 0; j < m.ranks.size(); ++j) {
      g.intra_node = g.intra_node && platform.place(m.ranks[j]).node == node;
      g.spans_dcs = g.spans_dcs || platform.place(m.ranks[j]).dc != dc;
      g.played.push_back(is_played(m.ranks[j]) ? 1 : 0);
      g.all_played = g.all_played && g.played.back();
      g.member.emplace(m.ranks[j], static_cast<int>(j));
    }
    g.algorithm = g.spans_dcs && reduces_gradients(kind) ? Algorithm::DatacenterHierarchical : options.algorithm;
  }
  rank_groups_.emplace(rank_key, slot.get());
  return *slot;
}

bool Execution::ghost_wanted(int64_t a, int64_t b) const {
  switch (options.ghosts) {
    case GhostTraffic::All: return true;
    case GhostTraffic::None: return false;
    case GhostTraffic::Shared: break;
  }
  // With one NIC per GPU, NVLink, NICs and the non-blocking switches carry only their own ranks'
  // flows; other ranks' traffic meets ours on oversubscribed uplinks and WAN links only.
  switch (platform.tier(a, b)) {
    case Tier::Wan: return true;
    case Tier::Pod:
    case Tier::Datacenter: return platform.cluster().oversubscription > 1;
    default: return false;
  }
}

std::vector<const sg4::Link*> Execution::shared_links(int64_t a, int64_t b) const {
  std::vector<const sg4::Link*> links;
  for (const sg4::Link* link : platform.route(a, b))
    if (link->get_sharing_policy() != sg4::Link::SharingPolicy::FATPIPE) links.push_back(link);
  std::sort(links.begin(), links.end());
  return links;
}

// A ghost flow a -> b is started when it can slow a played flow: its route shares a link (not a
// fat pipe) with a flow of the played ranks. Ghosts that would meet only other ghosts are left out.
bool Execution::ghost_meets(int64_t a, int64_t b) const {
  if (!ghost_wanted(a, b)) return false;
  if (options.ghosts == GhostTraffic::All) return true;
  for (const sg4::Link* link : shared_links(a, b))
    if (std::binary_search(played_links_.begin(), played_links_.end(), link)) return true;
  return false;
}

// Unit flows of a collective kind on a group (per buffer byte), with its latency and
// uncontended bandwidth time per byte.
std::vector<Flow> Execution::unit_flows(const GroupInfo& g, PlanKind kind, double* latency, double* seconds_per_byte) {
  const auto& gpus = g.group.gpus;
  const size_t p = gpus.size();
  *latency = 0;
  *seconds_per_byte = 0;
  if (kind != PlanKind::AllToAll) {
    const FlowPlan unit = collectives.plan(collective_kind(kind), g.algorithm, g.group, 1.0);
    *latency = unit.latency;
    *seconds_per_byte = unit.bandwidth_time;
    return unit.flows;
  }
  // The played members' flows (collectives.h): rail-aligned across nodes, each carrying its share.
  const Collectives::AllToAllRoutes& routes = collectives.all_to_all_routes(g.group);
  std::vector<Flow> flows;
  double min_bandwidth = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < p; ++i) {
    for (const auto& [via, share] : routes.sends(i, all_to_all_shares(g, i))) {
      flows.push_back({static_cast<int>(i), static_cast<int>(via), share});
      *latency = std::max(*latency, collectives.latency(gpus[i], gpus[static_cast<size_t>(via)]));
    }
    for (size_t j = 0; j < p && i == 0; ++j)
      if (j != i) min_bandwidth = std::min(min_bandwidth, platform.route_bandwidth(gpus[i], gpus[j]));
  }
  *seconds_per_byte = p > 1 ? 1.0 / min_bandwidth : 0.0;  // a member sends its whole buffer
  return flows;
}

std::vector<double> Execution::all_to_all_shares(const GroupInfo& g, size_t i) const {
  const auto& gpus = g.group.gpus;
  const size_t p = gpus.size();
  std::vector<double> share(p, p > 1 ? 1.0 / static_cast<double>(p - 1) : 0.0);
  if (g.kind != ParallelGroup::Ep || options.ep_remote_share == 1.0) return share;
  const int64_t node = platform.place(gpus[i]).node;
  for (size_t j = 0; j < p; ++j)
    if (platform.place(gpus[j]).node != node) share[j] *= options.ep_remote_share;
  return share;
}

double Execution::busiest_link_seconds_per_byte(const GroupInfo& g, const std::vector<Flow>& flows) const {
  std::unordered_map<const sg4::Link*, double> bytes;   // per unit buffer byte
  for (const Flow& f : flows)
    for (sg4::Link* link : platform.route(g.group.gpus[static_cast<size_t>(f.src)], g.group.gpus[static_cast<size_t>(f.dst)]))
      bytes[link] += f.bytes;
  double worst = 0;
  for (const auto& [link, b] : bytes) worst = std::max(worst, b / link->get_bandwidth());
  return worst;
}

// Before playing a reduced run: the links (not fat pipes) that the played ranks' own flows cross.
void Execution::collect_played_links(const std::vector<PlayedRank>& played) {
  if (!layout.reduced() || options.ghosts != GhostTraffic::Shared) return;
  std::set<std::pair<int64_t, int64_t>> pairs;  // (src, dst) of played flows
  for (const PlayedRank& p : played) {
    std::set<std::pair<int, int>> collectives_seen;  // (group kind, plan kind)
    for (const Instruction& x : p.program->instructions) {
      if (x.kind == OpKind::Send || x.kind == OpKind::Recv) {
        const int64_t peer = p.program->rank == p.rank ? x.peer : rename_peer(grid, p.program->rank, p.rank, x.peer);
        pairs.insert(x.kind == OpKind::Send ? std::pair{p.rank, peer} : std::pair{peer, p.rank});
      } else if (is_collective(x.kind) && x.bytes > 0) {
        const PlanKind kind = plan_kind(x.kind);
        if (!collectives_seen.insert({static_cast<int>(x.group), static_cast<int>(kind)}).second) continue;
        const GroupInfo& g = group(p.rank, x.group);
        if (g.group.gpus.size() < 2 || (g.intra_node && options.analytic_intra_node)) continue;
        double latency = 0, seconds_per_byte = 0;
        const int me = g.member.at(p.rank);
        for (const Flow& f : unit_flows(g, kind, &latency, &seconds_per_byte))
          if (f.src == me || f.dst == me)
            pairs.insert({g.group.gpus[static_cast<size_t>(f.src)], g.group.gpus[static_cast<size_t>(f.dst)]});
      }
    }
  }
  for (const auto& [src, dst] : pairs)
    for (const sg4::Link* link : shared_links(src, dst)) played_links_.push_back(link);
  std::sort(played_links_.begin(), played_links_.end());
  played_links_.erase(std::unique(played_links_.begin(), played_links_.end()), played_links_.end());
}

PlanInfo& Execution::plan(GroupInfo& g, PlanKind kind) {
  PlanInfo*& cached = g.plans[static_cast<size_t>(kind)];
  if (cached) return *cached;
  auto& slot = plans_[g.group.name + "|" + plan_kind_name(kind)];
  slot = std::make_unique<PlanInfo>();
  cached = slot.get();
  PlanInfo& info = *slot;
  const std::vector<Flow> flows = unit_flows(g, kind, &info.latency, &info.seconds_per_byte);
  info.floor_seconds_per_byte = info.seconds_per_byte;
  if (kind == PlanKind::AllToAll && layout.reduced() && !g.all_played && !(g.intra_node && options.analytic_intra_node))
    info.floor_seconds_per_byte = busiest_link_seconds_per_byte(g, flows);
  if (!layout.reduced() || (g.intra_node && options.analytic_intra_node)) return info;
  if (g.all_played) {
    add_images(info, g.group.gpus, flows);
  } else {
    add_starts(info, g, flows);
  }
  return info;
}

// The group in every other copy sends the same flows.
void Execution::add_images(PlanInfo& info, const std::vector<int64_t>& gpus, const std::vector<Flow>& flows) {
  if (options.ghosts == GhostTraffic::None) return;
  for (const Flow& f : flows) {
    const int64_t src = gpus[static_cast<size_t>(f.src)];
    const int64_t dst = gpus[static_cast<size_t>(f.dst)];
    for (int64_t c = 1; c < layout.copies; ++c) {
      const int64_t s = layout.image_of(static_cast<size_t>(layout.preimage[static_cast<size_t>(src)]), c);
      const int64_t d = layout.image_of(static_cast<size_t>(layout.preimage[static_cast<size_t>(dst)]), c);
      if (ghost_meets(s, d)) info.images.push_back({s, d, f.bytes, false});
    }
  }
}

// A group with unplayed members: each played member starts its flows and its in-flows from
// unplayed members (and waits for them); the flows among unplayed members that meet those are
// ghosts, started by the played member whose part the sender plays in its copy.
void Execution::add_starts(PlanInfo& info, const GroupInfo& g, const std::vector<Flow>& flows) {
  const auto& gpus = g.group.gpus;
  int first_played = -1;
  for (size_t j = 0; j < gpus.size() && first_played < 0; ++j)
    if (g.played[j]) first_played = static_cast<int>(j);
  info.starts.resize(gpus.size());
  for (const Flow& f : flows) {
    const int64_t s = gpus[static_cast<size_t>(f.src)];
    const int64_t d = gpus[static_cast<size_t>(f.dst)];
    const bool src_played = g.played[static_cast<size_t>(f.src)] != 0;
    if (src_played || g.played[static_cast<size_t>(f.dst)]) {
      info.starts[static_cast<size_t>(src_played ? f.src : f.dst)].push_back({s, d, f.bytes, true});
      continue;
    }
    if (!ghost_meets(s, d)) continue;
    auto it = g.member.find(layout.played[static_cast<size_t>(layout.preimage[static_cast<size_t>(s)])]);
    const int owner = it != g.member.end() && g.played[static_cast<size_t>(it->second)] ? it->second : first_played;
    info.starts[static_cast<size_t>(owner)].push_back({s, d, f.bytes, false});
  }
}

const std::vector<std::pair<int64_t, int64_t>>& Execution::message_images(int64_t src, int64_t dst) {
  const uint64_t key = (static_cast<uint64_t>(src) << 32) | static_cast<uint64_t>(dst);
  auto [it, fresh] = message_images_.try_emplace(key);
  if (fresh && options.ghosts != GhostTraffic::None) {
    const auto s = static_cast<size_t>(layout.preimage[static_cast<size_t>(src)]);
    const auto d = static_cast<size_t>(layout.preimage[static_cast<size_t>(dst)]);
    for (int64_t c = 1; c < layout.copies; ++c) {
      const int64_t a = layout.image_of(s, c);
      const int64_t b = layout.image_of(d, c);
      if (ghost_meets(a, b)) it->second.emplace_back(a, b);
    }
  }
  return it->second;
}

Message& Execution::message(int64_t src, int64_t dst, int channel, int64_t seq) {
  return messages_[MessageKey{src, dst, seq, channel}];
}

void Execution::forget_message(int64_t src, int64_t dst, int channel, int64_t seq) {
  messages_.erase(MessageKey{src, dst, seq, channel});
}

bool Execution::arrive(uint64_t group_key, int64_t seq, size_t size) {
  auto& counts = arrivals_[group_key];
  if (++counts[seq] < size) return false;
  counts.erase(seq);
  return true;
}

void Execution::note_start(uint64_t group_key, int64_t seq, double time) {
  auto& of_group = starts_[group_key];
  Starts& s = of_group[seq];
  s.latest = s.started++ == 0 ? time : std::max(s.latest, time);
  if (s.started == s.size && s.asked == s.size) of_group.erase(seq);
}

double Execution::last_start(uint64_t group_key, int64_t seq, size_t size) {
  auto& of_group = starts_[group_key];
  auto it = of_group.find(seq);
  TANDEM_CHECK_MSG(it != of_group.end(), "collective " << seq << " of group " << group_key << " never started");
  Starts& s = it->second;
  s.size = size;
  const double latest = s.latest;
  if (++s.asked == size && s.started == size) of_group.erase(it);
  return latest;
}

void Execution::instructions_done(int64_t count) {
  done_instructions_ += count;
  if (!options.progress || done_instructions_ < next_check_) return;
  next_check_ = done_instructions_ + 4096;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_report_ < std::chrono::milliseconds(500)) return;
  last_report_ = now;
  char message[128];
  std::snprintf(message, sizeof(message), "playing: simulated %.3f s, %lld of %lld instructions",
                sg4::Engine::get_clock(), static_cast<long long>(done_instructions_),
                static_cast<long long>(total_instructions_));
  options.progress(static_cast<double>(done_instructions_) / static_cast<double>(std::max<int64_t>(1, total_instructions_)),
                   message);
}

WanTraffic Execution::wan_traffic(const std::vector<PlayedRank>& played) {
  WanTraffic out;
  const auto d = static_cast<size_t>(platform.cluster().datacenters);
  if (d < 2) return out;
  out.bytes.assign(d, std::vector<double>(d, 0.0));
  // Per program: bytes of its collectives per (group kind, plan kind), of its sends per peer (in
  // the program's own numbering), and its routed all-to-alls one by one.
  struct Totals {
    std::map<std::pair<ParallelGroup, PlanKind>, double> collectives;
    std::map<int64_t, double> sends;
    std::vector<const Instruction*> routed;
  };
  std::unordered_map<const RankProgram*, Totals> totals;
  std::unordered_map<int64_t, const RankProgram*> program_of;  // played rank -> program
  for (const PlayedRank& p : played) {
    program_of[p.rank] = p.program;
    auto [it, fresh] = totals.try_emplace(p.program);
    if (!fresh) continue;
    for (const Instruction& x : p.program->instructions) {
      if (x.kind == OpKind::Send) it->second.sends[x.peer] += x.bytes;
      if (!is_collective(x.kind)) continue;
      if (routed_all_to_all(x)) it->second.routed.push_back(&x);
      else if (x.bytes > 0) it->second.collectives[{x.group, plan_kind(x.kind)}] += x.bytes;
    }
  }
  // Per (group, plan kind): [member] -> its flows to other datacenters, per buffer byte.
  std::map<std::pair<uint64_t, PlanKind>, std::vector<std::vector<Flow>>> wan_flows;
  const auto flows_of = [&](GroupInfo& g, PlanKind kind) -> const std::vector<std::vector<Flow>>& {
    auto [it, fresh] = wan_flows.try_emplace({g.key, kind});
    if (!fresh) return it->second;
    it->second.resize(g.group.gpus.size());
    double latency = 0, seconds_per_byte = 0;
    for (const Flow& f : unit_flows(g, kind, &latency, &seconds_per_byte))
      if (platform.place(g.group.gpus[static_cast<size_t>(f.src)]).dc !=
          platform.place(g.group.gpus[static_cast<size_t>(f.dst)]).dc)
        it->second[static_cast<size_t>(f.src)].push_back(f);
    return it->second;
  };
  const auto add = [&](int64_t src, int64_t dst, double bytes) {
    const auto a = static_cast<size_t>(platform.place(src).dc);
    const auto b = static_cast<size_t>(platform.place(dst).dc);
    if (a != b) out.bytes[a][b] += bytes;
  };
  for (int64_t r = 0; r < grid.world_size(); ++r) {
    const RankProgram* program = program_of.at(layout.played[static_cast<size_t>(layout.preimage[static_cast<size_t>(r)])]);
    const Totals& t = totals.at(program);
    for (const auto& [peer, bytes] : t.sends)
      add(r, program->rank == r ? peer : rename_peer(grid, program->rank, r, peer), bytes);
    for (const auto& [key, bytes] : t.collectives) {
      GroupInfo& g = group(r, key.first);
      if (!g.spans_dcs || g.group.gpus.size() < 2) continue;
      for (const Flow& f : flows_of(g, key.second)[static_cast<size_t>(g.member.at(r))])
        add(r, g.group.gpus[static_cast<size_t>(f.dst)], f.bytes * bytes);
    }
    for (const Instruction* x : t.routed) {
      GroupInfo& g = group(r, x->group);
      if (!g.spans_dcs || g.group.gpus.size() < 2) continue;
      const auto& gpus = g.group.gpus;
      std::vector<double> send(gpus.size(), 0.0);
      for (size_t j = 0; j < gpus.size(); ++j) send[j] = pair_bytes(grid, *x->cost->peer_bytes, r, gpus[j]);
      const Collectives::AllToAllRoutes& routes = collectives.all_to_all_routes(g.group);
      for (const auto& [via, bytes] : routes.sends(static_cast<size_t>(g.member.at(r)), send))
        add(r, gpus[static_cast<size_t>(via)], bytes);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// RankPlayer: communication

double RankPlayer::wan_transfer_start(int32_t i) {
  const Instruction& x = ins_[static_cast<size_t>(i)];
  if (x.kind == OpKind::Recv) {
    auto it = transfer_start_.find(i);
    return it == transfer_start_.end() ? start_[static_cast<size_t>(i)] : it->second;
  }
  auto it = wan_collective_.find(i);
  if (it == wan_collective_.end()) return start_[static_cast<size_t>(i)];
  return std::max(start_[static_cast<size_t>(i)], ex_.last_start(it->second.first, it->second.second));
}

bool RankPlayer::crosses_wan(int32_t i) {
  if (ex_.platform.cluster().datacenters < 2) return false;
  const Instruction& x = ins_[static_cast<size_t>(i)];
  if (x.kind == OpKind::Send || x.kind == OpKind::Recv)
    return ex_.platform.place(rank_).dc != ex_.platform.place(peer(i)).dc;
  return is_collective(x.kind) && ex_.group(rank_, x.group).spans_dcs;
}

bool RankPlayer::analytic_seconds(const Instruction& x, double* seconds) {
  if (!is_collective(x.kind)) return false;
  *seconds = 0;
  if (ex_.options.free_communication) return true;
  if (routed_all_to_all(x)) return ex_.group(rank_, x.group).group.gpus.size() < 2;  // flows: members wait
  if (x.bytes <= 0) return true;
  GroupInfo& g = ex_.group(rank_, x.group);
  if (g.group.gpus.size() < 2) return true;
  if (!(g.intra_node && ex_.options.analytic_intra_node)) return false;
  const PlanInfo& plan = ex_.plan(g, plan_kind(x.kind));
  *seconds = (continues_exchange(x) ? 0.0 : plan.latency) + plan.seconds_per_byte * x.bytes;
  return true;
}

// Issues network operation i, the head of stream s. The sends and receives of the same step
// that follow it on the stream (same group kind, layer, microbatch, chunk and step: a CP ring
// step's send and receive) go with it as one NCCL group (ncclGroupStart/End, Megatron's
// batch_isend_irecv): issued together, so that a ring cannot deadlock; the stream goes on when
// all of them are done.
void RankPlayer::start_communication(int s, int32_t i) {
  const auto su = static_cast<size_t>(s);
  sync_clock();
  start_network(s, i);
  const Instruction& first = ins_[static_cast<size_t>(i)];
  const auto same_step = [&first](const Instruction& x) {
    return (x.kind == OpKind::Send || x.kind == OpKind::Recv) && x.group == first.group && x.layer == first.layer &&
           x.microbatch == first.microbatch && x.chunk == first.chunk && x.ring_step == first.ring_step &&
           x.phase == first.phase;
  };
  if (first.kind != OpKind::Send && first.kind != OpKind::Recv) return;
  while (head_[su] < streams_[su].size()) {
    const int32_t j = streams_[su][head_[su]];
    if (!same_step(ins_[static_cast<size_t>(j)]) || !deps_done(j)) break;
    start_network(s, j);
  }
}

void RankPlayer::start_network(int s, int32_t i) {
  const auto su = static_cast<size_t>(s);
  const auto iu = static_cast<size_t>(i);
  ++head_[su];
  busy_[su] = true;
  ++outstanding_[su];
  ++in_flight_[su];
  last_issued_[su] = i;
  state_[iu] = kInFlight;
  start_[iu] = now_;
  const int32_t op = new_op(false);
  ops_[static_cast<size_t>(op)].instruction = i;
  ++ex_.stats.network_operations;
  const Instruction& x = ins_[iu];
  if (x.kind == OpKind::Send || x.kind == OpKind::Recv) return start_p2p(s, i, op);
  start_collective(s, i, op);
}

void RankPlayer::wait_on(int32_t op, const sg4::CommPtr& comm, double delay) {
  waiting_.push_back(comm);
  waiting_for_.emplace_back(op, delay);
  ++ops_[static_cast<size_t>(op)].remaining;
  ++ex_.stats.flows;
}

void RankPlayer::ghost(int64_t src, int64_t dst, double bytes) {
  ghosts_.push_back(sg4::Comm::sendto_async(ex_.platform.host(src), ex_.platform.host(dst), payload(bytes)));
  ++ex_.stats.ghost_flows;
  if (ghosts_.size() >= 4096)
    ghosts_.erase(std::remove_if(ghosts_.begin(), ghosts_.end(), [](const sg4::CommPtr& c) { return c->test(); }),
                  ghosts_.end());
}

// Send / Recv: matched by tag per (sender, receiver, group), so a schedule whose receives come in
// another order than the sends (schedules/message_order.h, e.g. DualPipe at PP >= 8) plays as a
// backend that reorders its receives does. Sends are rendezvous, as NCCL's; with free
// communication they are eager (the schedule analysis' semantics).
void RankPlayer::start_p2p(int, int32_t i, int32_t op) {
  const Instruction& x = ins_[static_cast<size_t>(i)];
  const bool send = x.kind == OpKind::Send;
  const int64_t other = peer(i);
  TANDEM_CHECK_MSG(other >= 0 && other < ex_.grid.world_size() && other != rank_,
                   "rank " << rank_ << " instruction " << i << ": bad peer " << other);
  TANDEM_CHECK_MSG(ex_.is_played(other), "rank " << rank_ << " exchanges messages with rank " << other
                                                  << ", which is not played (pipeline and context-parallel peers "
                                                     "must be in the played block)");
  const int64_t src = send ? rank_ : other;
  const int64_t dst = send ? other : rank_;
  const int channel = static_cast<int>(x.group);
  const bool eager = ex_.options.free_communication;
  const int64_t seq = x.tag;  // unique per (peer pair, iteration), equal on a Send and its Recv
  Message& m = ex_.message(src, dst, channel, seq);
  if (send) {
    m.send_posted = now_;
    m.bytes = x.bytes;
  } else {
    m.recv_posted = now_;
    recv_key_[i] = {channel, seq};
  }
  if (m.send_posted >= 0 && m.recv_posted >= 0) {
    if (ex_.layout.reduced() && !eager)
      for (const auto& [a, b] : ex_.message_images(src, dst)) ghost(a, b, m.bytes);
  }
  const std::string channel_name = to_string(x.group);
  if (eager) {
    const std::string box =
        "eager-" + channel_name + "#" + std::to_string(src) + ">" + std::to_string(dst) + "#" + std::to_string(x.tag);
    if (send) {
      sg4::Mailbox::by_name(box)->put_init(&g_token, 0)->detach();
      return finish_network(op, now_);
    }
    sg4::CommPtr get = sg4::Mailbox::by_name(box)->get_init();
    get->set_dst_data(&sink_, sizeof(void*));
    get->start();
    return wait_on(op, get, 0.0);
  }
  const std::string tagged = channel_name + "#" + std::to_string(x.tag);
  sg4::Actor* receiver = ex_.options.buffered_p2p ? ex_.actors.at(dst) : nullptr;
  Pending pending = send ? ex_.collectives.start_send(rank_, other, x.bytes, tagged, receiver)
                         : ex_.collectives.start_recv(rank_, other, tagged, receiver);
  const double latency = ex_.collectives.latency(src, dst);
  for (const sg4::CommPtr& comm : pending.comms()) wait_on(op, comm, latency);
}

void RankPlayer::note_recv_done(int32_t i) {
  auto it = recv_key_.find(i);
  if (it == recv_key_.end()) return;
  const int64_t other = peer(i);
  const auto [channel, seq] = it->second;
  const Message& m = ex_.message(other, rank_, static_cast<int>(channel), seq);
  transfer_start_[i] = std::max(m.send_posted, m.recv_posted);
  ex_.forget_message(other, rank_, static_cast<int>(channel), seq);
  recv_key_.erase(it);
}

void RankPlayer::note_collective_done(int32_t i) {
  auto it = collective_seq_.find(i);
  if (it == collective_seq_.end()) return;
  const GroupInfo& g = ex_.group(rank_, ins_[static_cast<size_t>(i)].group);
  all_started_[i] = ex_.last_start(g.key, it->second, g.group.gpus.size());
  collective_seq_.erase(it);
}

void RankPlayer::start_collective(int, int32_t i, int32_t op) {
  const Instruction& x = ins_[static_cast<size_t>(i)];
  GroupInfo& g = ex_.group(rank_, x.group);
  if (g.spans_dcs) {  // when its members have all started: the WAN exposure's split (executor.h)
    const int64_t seq = seq_[g.key | (uint64_t{1} << 62)]++;
    double& last = ex_.last_start(g.key, seq);
    last = std::max(last, now_);
    wan_collective_[i] = {g.key, seq};
  }
  const PlanKind kind = plan_kind(x.kind);
  const PlanInfo& plan = ex_.plan(g, kind);
  if (g.all_played) {
    const int64_t seq = seq_[g.key | (uint64_t{1} << 62)]++;
    ex_.note_start(g.key, seq, now_);
    collective_seq_[i] = seq;
    start_played_collective(g, kind, op, x);
  } else {
    start_partial_collective(g, kind, op, x);
  }
  Op& o = ops_[static_cast<size_t>(op)];
  ++net_collectives_;
  net_busy_until_ = std::max(net_busy_until_, now_ + plan.latency + plan.seconds_per_byte * x.bytes);
  if (o.remaining == 0) schedule(op, std::max(o.ready + plan.latency, o.floor));
}

// Every member is played: mailbox rendezvous through collectives.h; in a reduced run the last
// member to arrive also starts the group's image flows in the other copies.
void RankPlayer::start_played_collective(GroupInfo& g, PlanKind kind, int32_t op, const Instruction& x) {
  const auto& gpus = g.group.gpus;
  const size_t p = gpus.size();
  PlanInfo& plan = ex_.plan(g, kind);
  static const std::vector<double> kEven;   // no routing model: Instruction::bytes split evenly
  const std::vector<double>& routed = routed_all_to_all(x) ? *x.cost->peer_bytes : kEven;   // EP x EP bytes
  if (kind == PlanKind::AllToAll) {
    std::vector<double> send = ex_.all_to_all_shares(g, static_cast<size_t>(g.member.at(rank_)));
    for (double& b : send) b *= x.bytes;
    for (size_t j = 0; j < p && !routed.empty(); ++j) send[j] = pair_bytes(ex_.grid, routed, rank_, gpus[j]);
    Pending pending = ex_.collectives.start_all_to_all_v(g.group, rank_, send);
    for (size_t k = 0; k < pending.comms().size(); ++k) wait_on(op, pending.comms()[k], pending.delays()[k]);
  } else {
    Pending pending =
        ex_.collectives.start_collective(collective_kind(kind), g.algorithm, g.group, rank_, x.bytes);
    for (const sg4::CommPtr& comm : pending.comms()) wait_on(op, comm, plan.latency);
  }
  if (plan.images.empty()) return;
  const int64_t seq = seq_[g.key | (uint64_t{1} << 63)]++;
  if (ex_.arrive(g.key, seq, p))
    for (const OneSidedFlow& f : plan.images)
      ghost(f.src, f.dst, routed.empty() ? f.unit_bytes * x.bytes : pair_bytes(ex_.grid, routed, f.src, f.dst));
}

// Some members are unplayed (a data-parallel group in a reduced run): this member starts its own
// flows, its in-flows from unplayed members and its share of the ghost flows, all one-sided, and
// is done no earlier than the plan's uncontended time.
void RankPlayer::start_partial_collective(GroupInfo& g, PlanKind kind, int32_t op, const Instruction& x) {
  PlanInfo& plan = ex_.plan(g, kind);
  TANDEM_CHECK_MSG(!routed_all_to_all(x), "routed all-to-all on a group that is not played whole");
  const auto member = static_cast<size_t>(g.member.at(rank_));
  for (const OneSidedFlow& f : plan.starts[member]) {
    const double bytes = f.unit_bytes * x.bytes;
    if (!f.wait) {
      ghost(f.src, f.dst, bytes);
      continue;
    }
    wait_on(op, sg4::Comm::sendto_async(ex_.platform.host(f.src), ex_.platform.host(f.dst), payload(bytes)),
            plan.latency);
  }
  Op& o = ops_[static_cast<size_t>(op)];
  o.floor = now_ + plan.floor_seconds_per_byte * x.bytes + plan.latency;
}

}  // namespace tandem::sim::detail
