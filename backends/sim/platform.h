#pragma once
// The simulated machine: a SimGrid S4U platform built programmatically from a ClusterSpec.
//
// Topology (one `Platform` per process: SimGrid has one engine per process):
//
//   root (full zone) ── one WAN link per pair of datacenters ("wan0-1")
//    └─ dc<d> (star zone)                 + dc<d>-port zone holding the border router (> 1 DC)
//        └─ pod<p> (star zone, optional)  + pod<p>-port zone holding the core router
//            └─ leaf<x> (Dijkstra zone): hosts gpu<g>, routers node<n>-nvswitch,
//                                        leaf<x>-rail<r>-switch and the gateway leaf<x>-spine
// Gateways sit in their own sibling zones (or at the same depth as the hosts), never one level
// above the hosts they serve: SimGrid silently computes wrong routes otherwise.
//
// Links (bandwidth in bytes/s per direction, latency in s). NVLink and NIC links carry the achieved
// NCCL bandwidth: the raw rate of the ClusterSpec x the GPU kind's nvlink_efficiency /
// nic_efficiency of the job's software stack (clusters/stacks/<stack>.json, "communication").
// Uplinks, built from the NIC rate, inherit the NIC efficiency; WAN links are taken as given.
//   gpu<g>-nvl           split-duplex, GPU <-> NVSwitch, nvlink_bandwidth, nvlink_latency / 2
//   node<n>-nic<r>       split-duplex, NIC on rail r, nic_bandwidth, nic_latency / 2
//                        (NICs beyond one per GPU are bundled; fewer NICs are shared by GPUs)
//   leaf<x>-rail<r>      fat pipe: rail r's leaf switch (non-blocking)
//   leaf<x>              fat pipe: joins the rails of a leaf group (cross-rail, as with NCCL PXN)
//   leaf<x>-rail<r>-up   split-duplex, rail r's uplink to the spine,
//                        nodes_per_leaf * NIC bandwidth / oversubscription, PlatformOptions::uplink_latency
//   spine<p>-up/-down    fat pipes: the spine of pod p (a datacenter without pods is one pod)
//   pod<p>-up            split-duplex, pod-to-core uplink, as wide as all the pod's leaf uplinks
//   wan<a>-<b>           split-duplex, wan_bandwidth, wan_latency
// Stragglers (ClusterSpec::stragglers, degradation.h) scale the bandwidth of the NVLink, NIC and
// rail uplink links they reach; latencies stay.
//
// Routes: same node: NVLink out, NVLink in. Same leaf group: NIC, rail switch (, leaf), NIC.
// Other leaf: NIC, rail switch, rail uplink, spine, rail uplink, NIC (plus pod uplinks across
// pods, plus the WAN link across datacenters).
//
// Build cost: SimGrid 3.32 walks the whole zone tree when it names a new link or host and when
// it seals a zone, so the platform keeps few zones (one per leaf group, not per node) and creates
// every link before any zone. 16,384 GPUs build in about half a second.
//
// Sharing: CM02 max-min with equal weights. SimGrid's CM02 weights each flow by the inverse of its
// route latency (TCP RTT unfairness) and charges latency itself; we set its latency factor to 0 so
// that flows share links evenly, and the communication layer (collectives.h) charges latency
// explicitly from route_latency(). Links still carry their latency, so routes report it.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <simgrid/forward.h>

#include "backends/sim/degradation.h"
#include "core/job.h"

namespace tandem::sim {

struct GpuEfficiency;

struct PlatformOptions {
  // Achieved NCCL efficiencies of the links (a stack's "communication"); nullptr: the cluster's stack.
  const GpuEfficiency* efficiency = nullptr;
  double uplink_latency = 0.5e-6;  // s, one traversal of a leaf-spine or pod-core uplink
  double host_speed = 0;           // FLOP/s of a GPU host; 0: the GPU's dense BF16 peak (1e12 if unknown)
  double switch_bandwidth = 1e15;  // bytes/s, per-flow cap of the non-blocking switch fat pipes
  // [i] physical GPU (place_gpus order) behind index i of this API, e.g. the GPU rank i runs on
  // (dc_placement.h); empty: the identity. A permutation of 0..num_gpus-1.
  std::vector<int64_t> gpu_of_rank;
};

// Where one GPU sits. All indices are global and 0-based.
struct GpuPlace {
  int64_t local = 0;  // index inside its node, 0..gpus_per_node-1
  int64_t node = 0;
  int64_t rail = 0;   // NIC index inside the node (the rail it is cabled to)
  int64_t leaf = 0;   // leaf group (nodes_per_leaf nodes)
  int64_t pod = 0;    // pod (a datacenter is one pod when nodes_per_pod is 0)
  int64_t dc = 0;     // datacenter
};

// The fabric tier that separates two GPUs.
enum class Tier { SameGpu, Node, Leaf, Pod, Datacenter, Wan };

// Checks a cluster description for building `num_gpus` GPUs; throws UserError naming the field.
void validate_cluster(const ClusterSpec& cluster, int64_t num_gpus);

// Places every GPU (contiguous blocks of nodes per datacenter, pods, leaves). Pure, no SimGrid.
std::vector<GpuPlace> place_gpus(const ClusterSpec& cluster, int64_t num_gpus);

// GPU indices taken and returned by Platform are logical: index i is the GPU rank i runs on,
// physical GPU PlatformOptions::gpu_of_rank[i] (the identity by default). Hosts and links keep
// their physical names ("gpu<physical>", "node<n>-nic<r>").
class Platform {
 public:
  // Creates the SimGrid engine, configures it (CM02, TCP-gamma 1e12, no cross-traffic, quiet logs)
  // and builds the platform. At most one Platform may exist in a process, ever.
  Platform(const ClusterSpec& cluster, int64_t num_gpus, const PlatformOptions& options = {});
  ~Platform();
  Platform(const Platform&) = delete;
  Platform& operator=(const Platform&) = delete;

  int64_t num_gpus() const { return static_cast<int64_t>(hosts_.size()); }
  int64_t num_nodes() const;
  const ClusterSpec& cluster() const { return cluster_; }   // raw rates, as described
  double nvlink_efficiency() const { return nvlink_efficiency_; }
  double nic_efficiency() const { return nic_efficiency_; }
  double collective_base_latency() const { return collective_base_latency_; }   // s, per collective
  const PlatformOptions& options() const { return options_; }
  // The cluster's stragglers on this machine: per-GPU compute speeds, per-link bandwidth factors.
  const Degradation& degradation() const { return degradation_; }
  const GpuPlace& place(int64_t gpu) const;
  simgrid::s4u::Host* host(int64_t gpu) const;
  Tier tier(int64_t src_gpu, int64_t dst_gpu) const;

  // The links a flow from src_gpu to dst_gpu crosses, in path order (source side first).
  std::vector<simgrid::s4u::Link*> route(int64_t src_gpu, int64_t dst_gpu) const;
  // Same, as SimGrid link names ("gpu3-nvl_UP", "node0-nic2_UP", "leaf0", ...).
  std::vector<std::string> route_names(int64_t src_gpu, int64_t dst_gpu) const;
  double route_latency(int64_t src_gpu, int64_t dst_gpu) const;    // s, sum over the route's links
  double route_bandwidth(int64_t src_gpu, int64_t dst_gpu) const;  // bytes/s, narrowest link

  simgrid::s4u::Engine& engine() { return *engine_; }
  // Runs the simulation until every actor has finished; returns the simulated clock (s).
  double run();

 private:
  ClusterSpec cluster_;
  PlatformOptions options_;
  double nvlink_efficiency_ = 1.0;  // achieved / raw, applied to the NVLink links
  double nic_efficiency_ = 1.0;     // achieved / raw, applied to the NIC links and uplinks
  double collective_base_latency_ = 0;  // s, NCCL's fixed cost of one collective (GPU kind's file)
  std::unique_ptr<simgrid::s4u::Engine> engine_;
  std::vector<GpuPlace> places_;            // indexed by logical GPU index
  Degradation degradation_;
  std::vector<simgrid::s4u::Host*> hosts_;  // indexed by logical GPU index
  int64_t num_nodes_ = 0;
  std::unordered_map<const simgrid::s4u::Link*, int> hop_rank_;  // position of a link along routes
};

}  // namespace tandem::sim
