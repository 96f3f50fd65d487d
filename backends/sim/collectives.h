#pragma once
// NCCL-like communication on the simulated platform, decomposed into coarse SimGrid flows.
//
// Granularity: one flow per (sender, receiver) pair per collective, carrying all the bytes that
// pair exchanges over the whole algorithm (e.g. 2(p-1)/p * S / channels for a ring all-reduce).
// The flows of one collective run concurrently, as NCCL's pipelined chunks do; they are paced so
// that, without foreign traffic, all of them finish together at the bottleneck link's time. The
// algorithm's step latency (2(p-1) hops for a ring all-reduce) is charged once, after the last
// flow, since the platform leaves latency to this layer (see platform.h): as in NCCL's tuning
// model, a multi-node ring pays NVLink hops for its intra-node steps and NIC hops for its
// inter-node steps, plus the GPU kind's fixed per-collective cost. Contention with other
// traffic is real: every flow crosses the links of its route and SimGrid shares them max-min.
//
// Usage, from the actor that plays GPU `g` (one actor per rank):
//   Pending p = coll.start_all_reduce(dp_group, g, grad_bytes);  // returns at once
//   ... exec compute ...                                         // overlaps with the flows
//   p.wait();                                                     // blocks the actor until done
// Every member of a group must start the same collectives on it in the same order (as NCCL
// requires): flows are mailbox rendezvous named after the group, so a flow starts when both its
// sender and its receiver have posted it.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <simgrid/forward.h>

#include "backends/sim/platform.h"

namespace tandem::sim {

// A communicator: the GPUs of one process group in rank order. `name` names the group's
// mailboxes: unique per group, identical on every member (e.g. "dp3", "tp0-pp1").
struct Group {
  std::string name;
  std::vector<int64_t> gpus;  // global GPU indices
};

enum class CollectiveKind { AllReduce, ReduceScatter, AllGather };

enum class Algorithm {
  Ring,          // NCCL ring; across nodes with L members per node, L channels (one per NIC)
  Tree,          // double binary tree over the group order (all-reduce only; others use Ring)
  Hierarchical,  // ring inside each node over NVLink + one ring per local index across nodes
  // A group with the same number q of members in each of D > 1 datacenters, as Megatron/NCCL
  // hierarchical data-parallel reductions run: a ring inside each datacenter, then for each local
  // index a ring across datacenters carrying that member's shard (bytes / q), pipelined; the WAN
  // carries ring_factor(D) x bytes / q per member instead of a flat ring's whole buffer at a WAN
  // latency per ring step. Other groups: Ring. The executor picks it for data-parallel groups
  // that span datacenters (executor.h).
  DatacenterHierarchical,
};

std::string to_string(CollectiveKind kind);
std::string to_string(Algorithm algorithm);

struct CommOptions {
  double step_latency = 0;  // s, software cost per algorithm step, added to each hop's route latency
};

// One flow: member `src` sends `bytes` to member `dst` (indices into Group::gpus).
struct Flow {
  int src = 0;
  int dst = 0;
  double bytes = 0;
};

// A collective decomposed into concurrent flows.
struct FlowPlan {
  std::vector<Flow> flows;    // at most one per (src, dst), ordered by (src, dst)
  double latency = 0;         // s, per-collective base + sum over sequential steps of their hop latency
  double bandwidth_time = 0;  // s, alone on the platform: max over links of bytes / bandwidth
  double ideal_time() const { return latency + bandwidth_time; }
};

// The flows of `kind` over `group` for a buffer of `bytes` (all-reduce: the buffer on each rank;
// reduce-scatter: the full input; all-gather: the full output). Uses routes, runs no simulation.
FlowPlan plan_collective(const Platform& platform, CollectiveKind kind, Algorithm algorithm, const Group& group,
                         double bytes, const CommOptions& options = {});

// The uncontended time of one collective: latency + bandwidth term of its plan (s).
double ideal_time(const Platform& platform, CollectiveKind kind, Algorithm algorithm, const Group& group,
                  double bytes, const CommOptions& options = {});

// An operation in flight on one rank. Keep it until it is done; move-only.
class Pending {
 public:
  Pending();
  ~Pending();
  Pending(Pending&&) noexcept;
  Pending& operator=(Pending&&) noexcept;
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;

  bool test();                 // non-blocking: true once every flow is done and its latency paid
  void wait();                 // blocks the calling actor until done
  double finish_time() const;  // s, simulated; valid once test() or wait() has returned
  size_t num_flows() const { return comms_.size(); }
  const std::vector<simgrid::s4u::CommPtr>& comms() const { return comms_; }
  const std::vector<double>& delays() const { return delays_; }  // s, per comm

 private:
  friend class Collectives;
  double ready_time() const;  // s, latest flow end + its latency; flows must be finished

  std::vector<simgrid::s4u::CommPtr> comms_;
  std::vector<double> delays_;  // s, per comm: latency charged after the flow ends
  double start_ = 0;            // s, when the operation was started
  double finish_ = -1;          // s, once known
};

// The communication layer of one simulation, shared by all actors (SimGrid runs them one at a
// time). Plans are cached per (group name, kind, algorithm).
class Collectives {
 public:
  explicit Collectives(const Platform& platform, const CommOptions& options = {});
  ~Collectives();

  // Collectives, started by the actor playing group member `self_gpu`. Pending::comms() holds
  // the member's puts then its gets, each charged the plan's latency after it ends.
  Pending start_all_reduce(const Group& group, int64_t self_gpu, double bytes, Algorithm algorithm = Algorithm::Ring);
  Pending start_reduce_scatter(const Group& group, int64_t self_gpu, double bytes,
                               Algorithm algorithm = Algorithm::Ring);
  Pending start_all_gather(const Group& group, int64_t self_gpu, double bytes, Algorithm algorithm = Algorithm::Ring);
  Pending start_collective(CollectiveKind kind, Algorithm algorithm, const Group& group, int64_t self_gpu,
                           double bytes);

  // All-to-all(v): send_bytes[j] to member j (entry for self ignored); receives from every other
  // member whatever they send. Zero-byte flows still cost one latency. Inside a node one flow
  // per pair. Across nodes the traffic is rail-aligned, as NCCL's PXN sends it: what member i
  // sends to the members of another node crosses the fabric on i's rail, so it is played as one
  // flow to that node's first member on i's rail, carrying the sum (the same bytes on every NIC,
  // leaf and spine, with one flow per remote node instead of one per remote member; the last
  // NVLink hop is not played). Members without a rail match on a node send to each of its
  // members directly. Pending::comms() holds the puts, then the gets, each charged
  // latency(src, dst) after it ends (Pending::delays()).
  Pending start_all_to_all_v(const Group& group, int64_t self_gpu, const std::vector<double>& send_bytes);
  Pending start_all_to_all(const Group& group, int64_t self_gpu, double bytes_per_peer);
  // Rail-aligned all-to-all routes of a group: via[i][j] = the member that carries i's traffic to
  // member j (j itself inside a node or without a rail match); sources[m] = members sending to m.
  struct AllToAllRoutes {
    std::vector<std::vector<int32_t>> via;
    std::vector<std::vector<int32_t>> sources;
    // What `member` sends to each member (to_member[j], own entry ignored), summed per via member.
    std::map<int32_t, double> sends(size_t member, const std::vector<double>& to_member) const;
  };
  const AllToAllRoutes& all_to_all_routes(const Group& group);

  // Point-to-point. Sends and receives between a pair match in order, per tag. Group names must
  // not start with "p2p:", which names these channels. With a `receiver` (the actor playing the
  // receiving GPU) the message is buffered: the transfer starts when the send is issued, without
  // waiting for the receive (SimGrid permanent receiver); both sides must pass it.
  Pending start_send(int64_t self_gpu, int64_t peer_gpu, double bytes, const std::string& tag = "",
                     simgrid::s4u::Actor* receiver = nullptr);
  Pending start_recv(int64_t self_gpu, int64_t peer_gpu, const std::string& tag = "",
                     simgrid::s4u::Actor* receiver = nullptr);

  // Plays every flow of a plan from the calling actor as one-sided transfers (no peer actors):
  // for the traffic of ranks that are not played, or to cost a collective from a single actor.
  Pending start_all_flows(const FlowPlan& plan, const Group& group);

  // The cached plan for (group, kind, algorithm) scaled to `bytes`.
  FlowPlan plan(CollectiveKind kind, Algorithm algorithm, const Group& group, double bytes);

  double latency(int64_t src_gpu, int64_t dst_gpu);  // s, route latency + step latency, cached

 private:
  struct GroupPlan;
  const GroupPlan& group_plan(CollectiveKind kind, Algorithm algorithm, const Group& group);

  void add_put(Pending& pending, const std::string& group, int64_t src, int64_t dst, double bytes, double rate,
               double delay);
  void add_get(Pending& pending, const std::string& group, int64_t src, int64_t dst, double rate, double delay);

  const Platform& platform_;
  CommOptions options_;
  std::unordered_map<std::string, std::unique_ptr<GroupPlan>> plans_;
  std::unordered_map<uint64_t, double> latency_;  // (src << 32 | dst) -> s
  std::unordered_map<std::string, std::unique_ptr<AllToAllRoutes>> a2a_routes_;  // by group name
  void* token_ = nullptr;  // payload pointer handed over by every flow (bytes are modelled only)
  void* sink_ = nullptr;   // where receivers store it
};

}  // namespace tandem::sim
