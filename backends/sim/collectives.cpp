#include "backends/sim/collectives.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include <simgrid/s4u.hpp>

#include "core/check.h"

namespace tandem::sim {
namespace sg4 = simgrid::s4u;

namespace {

// Share of the buffer that crosses each ring edge: 2(p-1)/p for all-reduce, (p-1)/p otherwise.
double ring_factor(CollectiveKind kind, int p) {
  const double f = static_cast<double>(p - 1) / static_cast<double>(p);
  return kind == CollectiveKind::AllReduce ? 2 * f : f;
}

// Sequential ring steps: 2(p-1) for all-reduce (reduce-scatter then all-gather), p-1 otherwise.
int ring_steps(CollectiveKind kind, int p) { return kind == CollectiveKind::AllReduce ? 2 * (p - 1) : p - 1; }

// Of those, the steps whose latency is a network hop when the ring spans `nodes` nodes, as NCCL's
// tuning model counts them (src/graph/tuning.cc: nInterSteps = 2 nNodes for all-reduce, nNodes - 1
// otherwise); the other steps cost an NVLink hop.
int ring_inter_node_steps(CollectiveKind kind, int nodes, int steps) {
  if (nodes < 2) return 0;
  return std::min(steps, kind == CollectiveKind::AllReduce ? 2 * nodes : nodes - 1);
}

// The group's members per node, nodes in order of first appearance.
struct NodeLayout {
  std::vector<std::vector<int>> members;  // [node][local rank in group] -> member index
  bool uniform = true;                    // every node holds the same number of members
  int per_node() const { return members.empty() ? 0 : static_cast<int>(members.front().size()); }
  int nodes() const { return static_cast<int>(members.size()); }
};

// Of the group members `members` (all of them when empty).
NodeLayout node_layout(const Platform& platform, const Group& group, const std::vector<int>& members = {}) {
  NodeLayout layout;
  std::map<int64_t, size_t> slot;  // platform node -> index in layout.members
  const size_t count = members.empty() ? group.gpus.size() : members.size();
  for (size_t i = 0; i < count; ++i) {
    const int m = members.empty() ? static_cast<int>(i) : members[i];
    const int64_t node = platform.place(group.gpus[static_cast<size_t>(m)]).node;
    auto [it, fresh] = slot.emplace(node, layout.members.size());
    if (fresh) layout.members.emplace_back();
    layout.members[it->second].push_back(m);
  }
  for (const auto& on_node : layout.members) layout.uniform = layout.uniform && on_node.size() == layout.members[0].size();
  return layout;
}

// Accumulates flows, merging those between the same pair. Each flow belongs to a phase (a run
// of sequential algorithm steps); a phase's step latency is its slowest hop's route latency.
class PlanBuilder {
 public:
  PlanBuilder(const Platform& platform, const Group& group, const CommOptions& options)
      : platform_(platform), group_(group), options_(options) {}

  void add(int src, int dst, double bytes, unsigned phase = 0) {
    if (src == dst) return;
    Entry& e = flows_[{src, dst}];
    e.bytes += bytes;
    e.phases |= 1u << phase;
  }

  // Routes every flow once: the latency is sum over phases of steps[phase] x slowest hop (s);
  // the bandwidth time is the max over links of the bytes they carry / bandwidth (fat pipes:
  // per flow, they do not share).
  FlowPlan finish(const std::vector<int>& steps) const {
    FlowPlan plan;
    std::vector<double> hop(steps.size(), 0.0);                // s, per phase
    std::unordered_map<const sg4::Link*, double> load;        // bytes
    std::vector<sg4::Link*> links;
    for (const auto& [pair, e] : flows_) {
      plan.flows.push_back({pair.first, pair.second, e.bytes});
      links.clear();
      double latency = 0;
      platform_.host(group_.gpus[static_cast<size_t>(pair.first)])
          ->route_to(platform_.host(group_.gpus[static_cast<size_t>(pair.second)]), links, &latency);
      for (size_t k = 0; k < steps.size(); ++k)
        if (e.phases & (1u << k)) hop[k] = std::max(hop[k], latency + options_.step_latency);
      for (const sg4::Link* link : links) {
        double& l = load[link];
        l = link->get_sharing_policy() == sg4::Link::SharingPolicy::FATPIPE ? std::max(l, e.bytes) : l + e.bytes;
      }
    }
    for (size_t k = 0; k < steps.size(); ++k) plan.latency += steps[k] * hop[k];
    for (const auto& [link, bytes] : load) plan.bandwidth_time = std::max(plan.bandwidth_time, bytes / link->get_bandwidth());
    return plan;
  }

 private:
  struct Entry {
    double bytes = 0;
    unsigned phases = 0;  // bit k: the flow takes part in phase k
  };
  const Platform& platform_;
  const Group& group_;
  const CommOptions& options_;
  std::map<std::pair<int, int>, Entry> flows_;
};

// Ring over `members` (indices into the group; all of them when empty). With L members on each of
// N > 1 nodes, L channels as NCCL builds them: channel c visits each node's members starting at
// local rank c, so a member sends L-1 channels to its local successor over NVLink and one channel
// to the next node's member over its NIC. Latency: the NVLink edges (phase `nvl`) pay the
// intra-node steps, the NIC edges (phase `net`) the inter-node ones. Returns the steps per phase.
std::pair<int, int> add_ring(PlanBuilder& builder, const Platform& platform, CollectiveKind kind, const Group& group,
                             const std::vector<int>& members, double bytes, unsigned nvl, unsigned net) {
  const int p = static_cast<int>(members.empty() ? group.gpus.size() : members.size());
  if (p < 2) return {0, 0};
  const double edge_bytes = ring_factor(kind, p) * bytes;  // per ring edge, all channels together
  const NodeLayout layout = node_layout(platform, group, members);
  if (layout.uniform && layout.nodes() > 1) {
    const int n = layout.nodes();
    const int l = layout.per_node();
    const double channel = edge_bytes / l;
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < l; ++k) {
        const int me = layout.members[static_cast<size_t>(i)][static_cast<size_t>(k)];
        const auto next = static_cast<size_t>((k + 1) % l);
        if (l > 1) builder.add(me, layout.members[static_cast<size_t>(i)][next], channel * (l - 1), nvl);
        builder.add(me, layout.members[static_cast<size_t>((i + 1) % n)][next], channel, net);
      }
    }
    const int steps = ring_steps(kind, p);
    const int inter = l > 1 ? ring_inter_node_steps(kind, n, steps) : steps;
    return {steps - inter, inter};
  }
  const auto member = [&](int m) { return members.empty() ? m : members[static_cast<size_t>(m)]; };
  for (int m = 0; m < p; ++m) builder.add(member(m), member((m + 1) % p), edge_bytes, nvl);
  return {ring_steps(kind, p), 0};
}

FlowPlan ring_plan(const Platform& platform, CollectiveKind kind, const Group& group, double bytes,
                   const CommOptions& options) {
  PlanBuilder builder(platform, group, options);
  if (group.gpus.size() < 2) return builder.finish({});
  const auto [nvl_steps, net_steps] = add_ring(builder, platform, kind, group, {}, bytes, 0, 1);
  return builder.finish({nvl_steps, net_steps});
}

// The group's members per datacenter (datacenters in order of first appearance), when it spans
// several datacenters with the same number of members in each; empty otherwise.
std::vector<std::vector<int>> datacenter_layout(const Platform& platform, const Group& group) {
  std::vector<std::vector<int>> members;
  std::map<int64_t, size_t> slot;  // datacenter -> index in members
  for (size_t m = 0; m < group.gpus.size(); ++m) {
    auto [it, fresh] = slot.emplace(platform.place(group.gpus[m]).dc, members.size());
    if (fresh) members.emplace_back();
    members[it->second].push_back(static_cast<int>(m));
  }
  if (members.size() < 2) return {};
  for (const auto& in_dc : members)
    if (in_dc.size() != members.front().size()) return {};
  return members;
}

// Algorithm::DatacenterHierarchical for a group with q members in each of D datacenters: a ring
// inside each datacenter over the whole buffer (for an all-reduce its reduce-scatter and
// all-gather halves), and for each local index k a ring across datacenters over the k-th members
// carrying that member's shard (bytes / q): the WAN carries ring_factor(D) x bytes / q per member
// instead of a flat ring's whole buffer. Pipelined in chunks, so the phases' flows run together
// (the bandwidth time is the slowest phase's); latency: intra-datacenter steps (NVLink phase 0,
// network phase 1) + WAN steps (phase 2: 2(D-1) for an all-reduce, D-1 otherwise).
FlowPlan datacenter_plan(const Platform& platform, CollectiveKind kind, const Group& group, double bytes,
                         const CommOptions& options, const std::vector<std::vector<int>>& dcs) {
  PlanBuilder builder(platform, group, options);
  const int d = static_cast<int>(dcs.size());
  const int q = static_cast<int>(dcs.front().size());
  std::pair<int, int> steps{0, 0};  // the slowest datacenter's (they run together)
  for (const auto& in_dc : dcs) {
    const auto s = add_ring(builder, platform, kind, group, in_dc, bytes, 0, 1);
    steps = {std::max(steps.first, s.first), std::max(steps.second, s.second)};
  }
  const double shard = ring_factor(kind, d) * bytes / q;  // per WAN ring edge
  for (int k = 0; k < q; ++k)
    for (int i = 0; i < d; ++i)
      builder.add(dcs[static_cast<size_t>(i)][static_cast<size_t>(k)],
                  dcs[static_cast<size_t>((i + 1) % d)][static_cast<size_t>(k)], shard, 2);
  return builder.finish({steps.first, steps.second, ring_steps(kind, d)});
}

// Double binary tree (all-reduce): two trees over the group order, the second mirrored, each
// reducing half of the buffer up to its root and broadcasting it back down.
FlowPlan tree_plan(const Platform& platform, const Group& group, double bytes, const CommOptions& options) {
  const int p = static_cast<int>(group.gpus.size());
  PlanBuilder builder(platform, group, options);
  if (p < 2) return builder.finish({});
  for (int tree = 0; tree < 2; ++tree) {
    auto member = [&](int position) { return tree == 0 ? position : p - 1 - position; };
    for (int pos = 1; pos < p; ++pos) {
      const int child = member(pos);
      const int parent = member((pos - 1) / 2);
      builder.add(child, parent, bytes / 2);  // reduce
      builder.add(parent, child, bytes / 2);  // broadcast
    }
  }
  const int depth = static_cast<int>(std::floor(std::log2(static_cast<double>(p))));
  return builder.finish({2 * depth});
}

// Hierarchical: a ring inside each node (NVLink) and, for each local rank, a ring across nodes
// carrying 1/L of the buffer (rails). Pipelined as NCCL does, so both run concurrently.
FlowPlan hierarchical_plan(const Platform& platform, CollectiveKind kind, const Group& group, double bytes,
                           const CommOptions& options) {
  const NodeLayout layout = node_layout(platform, group);
  if (!layout.uniform || layout.nodes() < 2 || layout.per_node() < 2)
    return ring_plan(platform, kind, group, bytes, options);
  const int n = layout.nodes();
  const int l = layout.per_node();
  PlanBuilder builder(platform, group, options);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < l; ++k) {
      const int me = layout.members[static_cast<size_t>(i)][static_cast<size_t>(k)];
      const int local_next = layout.members[static_cast<size_t>(i)][static_cast<size_t>((k + 1) % l)];
      const int remote_next = layout.members[static_cast<size_t>((i + 1) % n)][static_cast<size_t>(k)];
      builder.add(me, local_next, ring_factor(kind, l) * bytes, 0);
      builder.add(me, remote_next, ring_factor(kind, n) * bytes / l, 1);
    }
  }
  return builder.finish({ring_steps(kind, l), ring_steps(kind, n)});
}

uint64_t payload(double bytes) { return static_cast<uint64_t>(std::llround(std::max(0.0, bytes))); }

std::string mailbox_name(const std::string& channel, int64_t src, int64_t dst) {
  return channel + "#" + std::to_string(src) + ">" + std::to_string(dst);
}

}  // namespace

std::string to_string(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::AllReduce: return "all-reduce";
    case CollectiveKind::ReduceScatter: return "reduce-scatter";
    case CollectiveKind::AllGather: return "all-gather";
  }
  return "?";
}

std::string to_string(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::Ring: return "ring";
    case Algorithm::Tree: return "tree";
    case Algorithm::Hierarchical: return "hierarchical";
    case Algorithm::DatacenterHierarchical: return "datacenter-hierarchical";
  }
  return "?";
}

namespace {

FlowPlan algorithm_plan(const Platform& platform, CollectiveKind kind, Algorithm algorithm, const Group& group,
                        double bytes, const CommOptions& options) {
  switch (algorithm) {
    case Algorithm::DatacenterHierarchical: {
      const std::vector<std::vector<int>> dcs = datacenter_layout(platform, group);
      if (!dcs.empty()) return datacenter_plan(platform, kind, group, bytes, options, dcs);
      break;
    }
    case Algorithm::Tree:
      if (kind == CollectiveKind::AllReduce) return tree_plan(platform, group, bytes, options);
      return ring_plan(platform, kind, group, bytes, options);
    case Algorithm::Hierarchical: return hierarchical_plan(platform, kind, group, bytes, options);
    case Algorithm::Ring: break;
  }
  return ring_plan(platform, kind, group, bytes, options);
}

}  // namespace

FlowPlan plan_collective(const Platform& platform, CollectiveKind kind, Algorithm algorithm, const Group& group,
                         double bytes, const CommOptions& options) {
  TANDEM_CHECK_MSG(bytes >= 0, "negative collective size " << bytes);
  FlowPlan plan = algorithm_plan(platform, kind, algorithm, group, bytes, options);
  if (group.gpus.size() > 1) plan.latency += platform.collective_base_latency();
  return plan;
}

double ideal_time(const Platform& platform, CollectiveKind kind, Algorithm algorithm, const Group& group,
                  double bytes, const CommOptions& options) {
  return plan_collective(platform, kind, algorithm, group, bytes, options).ideal_time();
}

// ---------------------------------------------------------------------------------------------
// Pending

Pending::Pending() = default;
Pending::~Pending() = default;
Pending::Pending(Pending&&) noexcept = default;
Pending& Pending::operator=(Pending&&) noexcept = default;

double Pending::ready_time() const {
  double t = start_;
  for (size_t i = 0; i < comms_.size(); ++i) t = std::max(t, comms_[i]->get_finish_time() + delays_[i]);
  return t;
}

bool Pending::test() {
  if (finish_ >= 0) return true;
  for (const auto& comm : comms_)
    if (!comm->test()) return false;
  const double t = ready_time();
  if (sg4::Engine::get_clock() < t) return false;
  finish_ = t;
  return true;
}

void Pending::wait() {
  if (finish_ >= 0) return;
  if (!comms_.empty()) sg4::Comm::wait_all(comms_);
  const double t = ready_time();
  if (t > sg4::Engine::get_clock()) sg4::this_actor::sleep_until(t);
  finish_ = t;
}

double Pending::finish_time() const {
  TANDEM_CHECK_MSG(finish_ >= 0, "Pending::finish_time() before the operation is done");
  return finish_;
}

// ---------------------------------------------------------------------------------------------
// Collectives

// A cached plan for one buffer byte, with each member's outgoing and incoming flows.
struct Collectives::GroupPlan {
  std::vector<int64_t> gpus;
  std::unordered_map<int64_t, int> member;  // GPU -> member index
  FlowPlan unit;                            // for a 1-byte buffer
  std::vector<std::vector<size_t>> out;     // member -> indices into unit.flows it sends
  std::vector<std::vector<size_t>> in;      // member -> indices into unit.flows it receives
};

Collectives::Collectives(const Platform& platform, const CommOptions& options)
    : platform_(platform), options_(options) {}

Collectives::~Collectives() = default;

const Collectives::GroupPlan& Collectives::group_plan(CollectiveKind kind, Algorithm algorithm, const Group& group) {
  const std::string key = group.name + "|" + to_string(kind) + "|" + to_string(algorithm);
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    TANDEM_CHECK_MSG(it->second->gpus.size() == group.gpus.size(),
                     "group '" << group.name << "' used with two different member lists");
    return *it->second;
  }
  auto plan = std::make_unique<GroupPlan>();
  plan->gpus = group.gpus;
  for (size_t m = 0; m < group.gpus.size(); ++m) {
    const bool fresh = plan->member.emplace(group.gpus[m], static_cast<int>(m)).second;
    TANDEM_CHECK_MSG(fresh, "group '" << group.name << "' lists GPU " << group.gpus[m] << " twice");
  }
  plan->unit = plan_collective(platform_, kind, algorithm, group, 1.0, options_);
  plan->out.resize(group.gpus.size());
  plan->in.resize(group.gpus.size());
  for (size_t f = 0; f < plan->unit.flows.size(); ++f) {
    plan->out[static_cast<size_t>(plan->unit.flows[f].src)].push_back(f);
    plan->in[static_cast<size_t>(plan->unit.flows[f].dst)].push_back(f);
  }
  return *plans_.emplace(key, std::move(plan)).first->second;
}

FlowPlan Collectives::plan(CollectiveKind kind, Algorithm algorithm, const Group& group, double bytes) {
  FlowPlan scaled = group_plan(kind, algorithm, group).unit;
  for (Flow& f : scaled.flows) f.bytes *= bytes;
  scaled.bandwidth_time *= bytes;
  return scaled;
}

double Collectives::latency(int64_t src_gpu, int64_t dst_gpu) {
  const uint64_t key = (static_cast<uint64_t>(src_gpu) << 32) | static_cast<uint64_t>(dst_gpu);
  auto it = latency_.find(key);
  if (it != latency_.end()) return it->second;
  const double value = platform_.route_latency(src_gpu, dst_gpu) + options_.step_latency;
  latency_.emplace(key, value);
  return value;
}

void Collectives::add_put(Pending& pending, const std::string& channel, int64_t src, int64_t dst, double bytes,
                          double rate, double delay) {
  sg4::CommPtr comm = sg4::Mailbox::by_name(mailbox_name(channel, src, dst))->put_init(&token_, payload(bytes));
  if (rate > 0) comm->set_rate(rate);
  comm->start();
  pending.comms_.push_back(std::move(comm));
  pending.delays_.push_back(delay);
}

void Collectives::add_get(Pending& pending, const std::string& channel, int64_t src, int64_t dst, double rate,
                          double delay) {
  sg4::CommPtr comm = sg4::Mailbox::by_name(mailbox_name(channel, src, dst))->get_init();
  comm->set_dst_data(&sink_, sizeof(void*));
  if (rate > 0) comm->set_rate(rate);
  comm->start();
  pending.comms_.push_back(std::move(comm));
  pending.delays_.push_back(delay);
}

Pending Collectives::start_collective(CollectiveKind kind, Algorithm algorithm, const Group& group, int64_t self_gpu,
                                      double bytes) {
  TANDEM_CHECK_MSG(bytes >= 0, "negative collective size " << bytes);
  const GroupPlan& gp = group_plan(kind, algorithm, group);
  auto me = gp.member.find(self_gpu);
  TANDEM_CHECK_MSG(me != gp.member.end(), "GPU " << self_gpu << " is not in group '" << group.name << "'");
  Pending pending;
  pending.start_ = sg4::Engine::get_clock();
  // Pace every flow to end with the bottleneck: rate = its bytes / the plan's bandwidth time.
  const double time_per_byte = gp.unit.bandwidth_time;  // s per buffer byte
  for (size_t f : gp.out[static_cast<size_t>(me->second)]) {
    const Flow& flow = gp.unit.flows[f];
    const double rate = time_per_byte > 0 ? flow.bytes / time_per_byte : -1;
    add_put(pending, group.name, self_gpu, gp.gpus[static_cast<size_t>(flow.dst)], flow.bytes * bytes, rate,
            gp.unit.latency);
  }
  for (size_t f : gp.in[static_cast<size_t>(me->second)]) {
    const Flow& flow = gp.unit.flows[f];
    const double rate = time_per_byte > 0 ? flow.bytes / time_per_byte : -1;
    add_get(pending, group.name, gp.gpus[static_cast<size_t>(flow.src)], self_gpu, rate, gp.unit.latency);
  }
  return pending;
}

Pending Collectives::start_all_reduce(const Group& group, int64_t self_gpu, double bytes, Algorithm algorithm) {
  return start_collective(CollectiveKind::AllReduce, algorithm, group, self_gpu, bytes);
}

Pending Collectives::start_reduce_scatter(const Group& group, int64_t self_gpu, double bytes, Algorithm algorithm) {
  return start_collective(CollectiveKind::ReduceScatter, algorithm, group, self_gpu, bytes);
}

Pending Collectives::start_all_gather(const Group& group, int64_t self_gpu, double bytes, Algorithm algorithm) {
  return start_collective(CollectiveKind::AllGather, algorithm, group, self_gpu, bytes);
}

std::map<int32_t, double> Collectives::AllToAllRoutes::sends(size_t member,
                                                           const std::vector<double>& to_member) const {
  std::map<int32_t, double> out;
  for (size_t j = 0; j < to_member.size(); ++j)
    if (j != member) out[via[member][j]] += to_member[j];
  return out;
}

const Collectives::AllToAllRoutes& Collectives::all_to_all_routes(const Group& group) {
  auto& slot = a2a_routes_[group.name];
  if (slot) return *slot;
  slot = std::make_unique<AllToAllRoutes>();
  const size_t p = group.gpus.size();
  // First member of each (node, rail), in group order.
  std::map<std::pair<int64_t, int64_t>, int32_t> first_on_rail;
  for (size_t m = 0; m < p; ++m) {
    const GpuPlace& at = platform_.place(group.gpus[m]);
    first_on_rail.emplace(std::make_pair(at.node, at.rail), static_cast<int32_t>(m));
  }
  slot->via.assign(p, std::vector<int32_t>(p, -1));
  std::vector<std::vector<char>> sends(p, std::vector<char>(p, 0));  // [target][source]
  for (size_t i = 0; i < p; ++i) {
    const GpuPlace& from = platform_.place(group.gpus[i]);
    for (size_t j = 0; j < p; ++j) {
      if (i == j) continue;
      const GpuPlace& to = platform_.place(group.gpus[j]);
      int32_t via = static_cast<int32_t>(j);
      if (to.node != from.node) {
        const auto it = first_on_rail.find({to.node, from.rail});
        if (it != first_on_rail.end()) via = it->second;
      }
      slot->via[i][j] = via;
      sends[static_cast<size_t>(via)][i] = 1;
    }
  }
  slot->sources.resize(p);
  for (size_t m = 0; m < p; ++m)
    for (size_t i = 0; i < p; ++i)
      if (sends[m][i]) slot->sources[m].push_back(static_cast<int32_t>(i));
  return *slot;
}

Pending Collectives::start_all_to_all_v(const Group& group, int64_t self_gpu, const std::vector<double>& send_bytes) {
  TANDEM_CHECK_MSG(send_bytes.size() == group.gpus.size(),
                   "all-to-all on '" << group.name << "': " << send_bytes.size() << " sizes for "
                                     << group.gpus.size() << " members");
  const auto self_it = std::find(group.gpus.begin(), group.gpus.end(), self_gpu);
  TANDEM_CHECK_MSG(self_it != group.gpus.end(), "GPU " << self_gpu << " is not in group '" << group.name << "'");
  const auto self = static_cast<size_t>(self_it - group.gpus.begin());
  const AllToAllRoutes& routes = all_to_all_routes(group);
  Pending pending;
  pending.start_ = sg4::Engine::get_clock();
  for (const auto& [via, bytes] : routes.sends(self, send_bytes)) {
    const int64_t peer = group.gpus[static_cast<size_t>(via)];
    add_put(pending, group.name, self_gpu, peer, bytes, -1, latency(self_gpu, peer));
  }
  for (const int32_t source : routes.sources[self]) {
    const int64_t peer = group.gpus[static_cast<size_t>(source)];
    add_get(pending, group.name, peer, self_gpu, -1, latency(peer, self_gpu));
  }
  return pending;
}

Pending Collectives::start_all_to_all(const Group& group, int64_t self_gpu, double bytes_per_peer) {
  return start_all_to_all_v(group, self_gpu, std::vector<double>(group.gpus.size(), bytes_per_peer));
}

Pending Collectives::start_send(int64_t self_gpu, int64_t peer_gpu, double bytes, const std::string& tag,
                                sg4::Actor* receiver) {
  TANDEM_CHECK_MSG(self_gpu != peer_gpu, "send from GPU " << self_gpu << " to itself");
  if (receiver) sg4::Mailbox::by_name(mailbox_name("p2p:" + tag, self_gpu, peer_gpu))->set_receiver(receiver);
  Pending pending;
  pending.start_ = sg4::Engine::get_clock();
  add_put(pending, "p2p:" + tag, self_gpu, peer_gpu, bytes, -1, latency(self_gpu, peer_gpu));
  return pending;
}

Pending Collectives::start_recv(int64_t self_gpu, int64_t peer_gpu, const std::string& tag, sg4::Actor* receiver) {
  TANDEM_CHECK_MSG(self_gpu != peer_gpu, "receive by GPU " << self_gpu << " from itself");
  if (receiver) sg4::Mailbox::by_name(mailbox_name("p2p:" + tag, peer_gpu, self_gpu))->set_receiver(receiver);
  Pending pending;
  pending.start_ = sg4::Engine::get_clock();
  add_get(pending, "p2p:" + tag, peer_gpu, self_gpu, -1, latency(peer_gpu, self_gpu));
  return pending;
}

Pending Collectives::start_all_flows(const FlowPlan& plan, const Group& group) {
  Pending pending;
  pending.start_ = sg4::Engine::get_clock();
  for (const Flow& flow : plan.flows) {
    sg4::Host* src = platform_.host(group.gpus[static_cast<size_t>(flow.src)]);
    sg4::Host* dst = platform_.host(group.gpus[static_cast<size_t>(flow.dst)]);
    pending.comms_.push_back(sg4::Comm::sendto_async(src, dst, payload(flow.bytes)));
    pending.delays_.push_back(plan.latency);
  }
  return pending;
}

}  // namespace tandem::sim
