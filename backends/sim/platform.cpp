#include "backends/sim/platform.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include <simgrid/s4u.hpp>
#include <xbt/log.h>

#include "backends/sim/compute_model.h"
#include "backends/sim/stack.h"
#include "core/check.h"

namespace tandem::sim {
namespace sg4 = simgrid::s4u;
using NetPoint = simgrid::kernel::routing::NetPoint;
using Direction = sg4::LinkInRoute::Direction;

namespace {

bool g_platform_created = false;  // SimGrid allows one engine per process

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string num(int64_t v) { return std::to_string(v); }

int64_t rails_per_node(const ClusterSpec& c) { return std::min(c.nics_per_node, c.gpus_per_node); }

// Bandwidth of one rail's NIC link (bytes/s): surplus NICs are bundled onto the rails.
double nic_link_bandwidth(const ClusterSpec& c) {
  return c.nic_bandwidth * static_cast<double>(c.nics_per_node) / static_cast<double>(rails_per_node(c));
}

void require_positive(const std::string& field, double value, const std::string& unit) {
  if (!(value > 0) || !std::isfinite(value)) throw_field_error(field, value, "must be > 0 " + unit);
}

void require_non_negative(const std::string& field, double value) {
  if (!(value >= 0) || !std::isfinite(value)) throw_field_error(field, value, "must be >= 0 s");
}

void configure_engine() {
  sg4::Engine::set_config("network/model:CM02");
  sg4::Engine::set_config("network/TCP-gamma:1e12");
  sg4::Engine::set_config("network/crosstraffic:0");
  // Equal-weight max-min sharing; latency is charged by the communication layer (see platform.h).
  sg4::Engine::set_config("network/latency-factor:0");
  sg4::Engine::set_config("debug/verbose-exit:0");
}

// The nested structure of the platform: which nodes form which leaf, pod and datacenter.
struct Layout {
  struct Leaf {
    int64_t id = 0;
    std::vector<int64_t> nodes;
  };
  struct Pod {
    int64_t id = 0;
    std::vector<Leaf> leaves;
  };
  struct Dc {
    std::vector<Pod> pods;
  };
  std::vector<Dc> dcs;
  std::vector<std::vector<int64_t>> node_gpus;  // node -> global GPU indices
};

Layout make_layout(const std::vector<GpuPlace>& places, int64_t num_dcs) {
  Layout layout;
  layout.dcs.resize(static_cast<size_t>(num_dcs));
  for (size_t g = 0; g < places.size(); ++g) {
    const GpuPlace& p = places[g];
    if (p.local == 0) {  // first GPU of a node: file the node under its dc / pod / leaf
      auto& pods = layout.dcs[static_cast<size_t>(p.dc)].pods;
      if (pods.empty() || pods.back().id != p.pod) pods.push_back({p.pod, {}});
      auto& leaves = pods.back().leaves;
      if (leaves.empty() || leaves.back().id != p.leaf) leaves.push_back({p.leaf, {}});
      leaves.back().nodes.push_back(p.node);
      layout.node_gpus.emplace_back();
    }
    layout.node_gpus[static_cast<size_t>(p.node)].push_back(static_cast<int64_t>(g));
  }
  return layout;
}

sg4::NetZone* child_zone(sg4::NetZone* zone, sg4::NetZone* parent) {
  zone->set_parent(parent);
  return zone;
}

// Every link of the platform. They are all created in the root zone before any other zone exists:
// SimGrid 3.32 checks a new link's name by walking the whole zone tree, so creating links once
// many zones exist would cost O(zones) each and make the build quadratic.
struct Links {
  std::vector<sg4::Link*> nvl;                    // per GPU
  std::vector<std::vector<sg4::Link*>> nic;       // per node, per rail
  std::vector<sg4::Link*> leaf_switch;            // per leaf: joins its rails (fat pipe)
  std::vector<std::vector<sg4::Link*>> rail_switch;  // per leaf, per rail: the rail's leaf switch (fat pipe)
  std::vector<std::vector<sg4::Link*>> rail_up;   // per leaf, per rail: uplink to the spine
  std::vector<sg4::Link*> spine_up, spine_down;   // per pod (fat pipes)
  std::vector<sg4::Link*> pod_up;                 // per pod (only with pods)
  std::vector<std::vector<sg4::Link*>> wan;       // [dc a][dc b], a < b
};

// Position of a link along any route, from source to destination. SimGrid 3.32's Dijkstra zones
// return a route's links in a scrambled order; sorting by this rank restores the path order.
enum class Hop {
  NvlinkOut, NicOut, RailSwitch, LeafSwitch, RailUplinkOut, SpineUp, PodUplinkOut, Wan,
  PodUplinkIn, SpineDown, RailUplinkIn, NicIn, NvlinkIn
};

// Builds the SimGrid zones, links and routes of one platform.
class Builder {
 public:
  Builder(const ClusterSpec& c, const PlatformOptions& o, const std::vector<GpuPlace>& places,
          const Degradation& degradation, std::vector<sg4::Host*>& hosts,
          std::unordered_map<const sg4::Link*, int>& hop_rank)
      : c_(c), o_(o), places_(places), degradation_(degradation), hosts_(hosts), hop_rank_(hop_rank),
        layout_(make_layout(places, c.datacenters)) {
    speed_ = o.host_speed > 0 ? o.host_speed : (c.gpu.peak_flops_bf16 > 0 ? c.gpu.peak_flops_bf16 : 1e12);
    hosts_.assign(places.size(), nullptr);
  }

  void build() {
    auto* root = sg4::create_full_zone("tandem");
    create_links(root);
    std::vector<sg4::NetZone*> dc_zones;
    std::vector<NetPoint*> borders;
    for (size_t d = 0; d < layout_.dcs.size(); ++d) {
      auto [zone, border] = build_dc(root, static_cast<int64_t>(d));
      dc_zones.push_back(zone);
      borders.push_back(border);
    }
    for (size_t a = 0; a < dc_zones.size(); ++a)
      for (size_t b = a + 1; b < dc_zones.size(); ++b)
        root->add_route(dc_zones[a]->get_netpoint(), dc_zones[b]->get_netpoint(), borders[a], borders[b],
                        {sg4::LinkInRoute(links_.wan[a][b], Direction::UP)}, true);
    root->seal();
  }

 private:
  sg4::Link* duplex(sg4::NetZone* zone, const std::string& name, double bandwidth, double latency, Hop up,
                    Hop down) {
    auto* link = zone->create_split_duplex_link(name, bandwidth);
    link->set_latency(latency);
    hop_rank_[link->get_link_up()] = static_cast<int>(up);
    hop_rank_[link->get_link_down()] = static_cast<int>(down);
    return link;
  }

  sg4::Link* fat_pipe(sg4::NetZone* zone, const std::string& name, Hop hop) {
    auto* link = zone->create_link(name, o_.switch_bandwidth);
    link->set_sharing_policy(sg4::Link::SharingPolicy::FATPIPE);
    hop_rank_[link] = static_cast<int>(hop);
    return link;
  }

  double uplink_bandwidth() const {
    return static_cast<double>(c_.nodes_per_leaf) * nic_link_bandwidth(c_) / c_.oversubscription;
  }

  void create_links(sg4::NetZone* root) {
    const int64_t rails = rails_per_node(c_);
    for (size_t g = 0; g < places_.size(); ++g)
      links_.nvl.push_back(duplex(root, "gpu" + num(g) + "-nvl", c_.nvlink_bandwidth * degradation_.nvlink[g],
                                  c_.nvlink_latency / 2, Hop::NvlinkOut, Hop::NvlinkIn));
    for (size_t n = 0; n < layout_.node_gpus.size(); ++n) {
      links_.nic.emplace_back();
      for (int64_t r = 0; r < rails; ++r)
        links_.nic.back().push_back(
            duplex(root, "node" + num(n) + "-nic" + num(r),
                   nic_link_bandwidth(c_) * degradation_.nic[n * static_cast<size_t>(rails) + static_cast<size_t>(r)],
                   c_.nic_latency / 2, Hop::NicOut, Hop::NicIn));
    }
    for (int64_t x = 0; x <= places_.back().leaf; ++x) {
      const std::string leaf = "leaf" + num(x);
      links_.leaf_switch.push_back(fat_pipe(root, leaf, Hop::LeafSwitch));
      links_.rail_switch.emplace_back();
      links_.rail_up.emplace_back();
      for (int64_t r = 0; r < rails; ++r) {
        links_.rail_switch.back().push_back(fat_pipe(root, leaf + "-rail" + num(r), Hop::RailSwitch));
        links_.rail_up.back().push_back(
            duplex(root, leaf + "-rail" + num(r) + "-up",
                   uplink_bandwidth() * degradation_.uplink[static_cast<size_t>(x * rails + r)], o_.uplink_latency,
                   Hop::RailUplinkOut, Hop::RailUplinkIn));
      }
    }
    // A pod uplink is as wide as all of the pod's leaf uplinks together.
    const double pod_width =
        uplink_bandwidth() * static_cast<double>(rails * ceil_div(c_.nodes_per_pod, c_.nodes_per_leaf));
    for (int64_t p = 0; p <= places_.back().pod; ++p) {
      links_.spine_up.push_back(fat_pipe(root, "spine" + num(p) + "-up", Hop::SpineUp));
      links_.spine_down.push_back(fat_pipe(root, "spine" + num(p) + "-down", Hop::SpineDown));
      if (c_.nodes_per_pod > 0)
        links_.pod_up.push_back(
            duplex(root, "pod" + num(p) + "-up", pod_width, o_.uplink_latency, Hop::PodUplinkOut, Hop::PodUplinkIn));
    }
    links_.wan.resize(static_cast<size_t>(c_.datacenters));
    for (int64_t a = 0; a < c_.datacenters; ++a) {
      links_.wan[static_cast<size_t>(a)].resize(static_cast<size_t>(c_.datacenters), nullptr);
      for (int64_t b = a + 1; b < c_.datacenters; ++b)
        links_.wan[static_cast<size_t>(a)][static_cast<size_t>(b)] =
            duplex(root, "wan" + num(a) + "-" + num(b), c_.wan_bandwidth, c_.wan_latency, Hop::Wan, Hop::Wan);
    }
  }

  // A zone holding one router, used as an explicit gateway beside sibling zones.
  std::pair<sg4::NetZone*, NetPoint*> port_zone(sg4::NetZone* parent, const std::string& name,
                                                const std::string& router) {
    auto* zone = child_zone(sg4::create_star_zone(name), parent);
    NetPoint* gw = zone->create_router(router);
    return {zone, gw};
  }

  std::pair<sg4::NetZone*, NetPoint*> build_dc(sg4::NetZone* root, int64_t d) {
    auto* dc = child_zone(sg4::create_star_zone("dc" + num(d)), root);
    for (const Layout::Pod& pod : layout_.dcs[static_cast<size_t>(d)].pods) {
      if (c_.nodes_per_pod > 0) {
        build_pod(dc, pod);
      } else {
        for (const Layout::Leaf& leaf : pod.leaves) build_leaf(dc, leaf, pod.id);
      }
    }
    NetPoint* border = nullptr;
    if (c_.datacenters > 1) {
      auto [port, gw] = port_zone(dc, "dc" + num(d) + "-port", "dc" + num(d) + "-border");
      dc->add_route(port->get_netpoint(), nullptr, gw, nullptr, {}, true);
      border = gw;
    }
    return {dc, border};
  }

  void build_pod(sg4::NetZone* dc, const Layout::Pod& layout) {
    const std::string name = "pod" + num(layout.id);
    auto* pod = child_zone(sg4::create_star_zone(name), dc);
    for (const Layout::Leaf& leaf : layout.leaves) build_leaf(pod, leaf, layout.id);
    auto [port, core] = port_zone(pod, name + "-port", name + "-core");
    pod->add_route(port->get_netpoint(), nullptr, core, nullptr, {}, true);
    dc->add_route(pod->get_netpoint(), nullptr, core, nullptr,
                  {sg4::LinkInRoute(links_.pod_up[static_cast<size_t>(layout.id)], Direction::UP)}, true);
  }

  // One leaf group as a Dijkstra zone (route cost = number of links). Vertices: the GPU hosts, one
  // NVSwitch router per node, one router per rail (the rail's leaf switch) and the spine-side
  // gateway. Edges: GPU-NVSwitch [NVLink]; GPU->rail [NIC up, rail switch], rail->GPU [NIC down];
  // rail-rail [leaf]; rail-gateway [rail uplink]. Shortest paths are then unique: NVLink inside a
  // node (2 links), NIC-rail-NIC across nodes on one rail (3), NIC-rail-leaf-NIC across rails (4).
  void build_leaf(sg4::NetZone* parent, const Layout::Leaf& layout, int64_t spine) {
    const std::string name = "leaf" + num(layout.id);
    const auto x = static_cast<size_t>(layout.id);
    auto* leaf = child_zone(sg4::create_dijkstra_zone(name, true), parent);
    NetPoint* gateway = leaf->create_router(name + "-spine");
    std::vector<NetPoint*> rails;
    for (int64_t r = 0; r < rails_per_node(c_); ++r) {
      rails.push_back(leaf->create_router(name + "-rail" + num(r) + "-switch"));
      leaf->add_route(rails.back(), gateway, nullptr, nullptr,
                      {sg4::LinkInRoute(links_.rail_up[x][static_cast<size_t>(r)], Direction::UP)}, true);
      for (size_t q = 0; q + 1 < rails.size(); ++q)
        leaf->add_route(rails[q], rails.back(), nullptr, nullptr, {sg4::LinkInRoute(links_.leaf_switch[x])}, true);
    }
    for (int64_t n : layout.nodes) {
      NetPoint* nvswitch = leaf->create_router("node" + num(n) + "-nvswitch");
      const auto& nics = links_.nic[static_cast<size_t>(n)];
      for (int64_t g : layout_.node_gpus[static_cast<size_t>(n)]) {
        const auto gi = static_cast<size_t>(g);
        hosts_[gi] = leaf->create_host("gpu" + num(g), speed_);
        NetPoint* gpu = hosts_[gi]->get_netpoint();
        const auto rail = static_cast<size_t>(places_[gi].rail);
        leaf->add_route(gpu, nvswitch, nullptr, nullptr, {sg4::LinkInRoute(links_.nvl[gi], Direction::UP)}, true);
        leaf->add_route(gpu, rails[rail], nullptr, nullptr,
                        {sg4::LinkInRoute(nics[rail], Direction::UP), sg4::LinkInRoute(links_.rail_switch[x][rail])},
                        false);
        leaf->add_route(rails[rail], gpu, nullptr, nullptr, {sg4::LinkInRoute(nics[rail], Direction::DOWN)}, false);
      }
    }
    sg4::Link* up = links_.spine_up[static_cast<size_t>(spine)];
    sg4::Link* down = links_.spine_down[static_cast<size_t>(spine)];
    parent->add_route(leaf->get_netpoint(), nullptr, gateway, nullptr, {sg4::LinkInRoute(up)}, false);
    parent->add_route(nullptr, leaf->get_netpoint(), nullptr, gateway, {sg4::LinkInRoute(down)}, false);
  }

  const ClusterSpec& c_;
  const PlatformOptions& o_;
  const std::vector<GpuPlace>& places_;
  const Degradation& degradation_;
  std::vector<sg4::Host*>& hosts_;
  std::unordered_map<const sg4::Link*, int>& hop_rank_;
  Layout layout_;
  Links links_;
  double speed_ = 0;  // FLOP/s
};

}  // namespace

void validate_cluster(const ClusterSpec& c, int64_t num_gpus) {
  if (num_gpus <= 0) throw_field_error("gpus", num_gpus, "must be > 0");
  if (c.topology != "fat-tree") throw_field_error("topology", c.topology, "only \"fat-tree\" is supported");
  if (c.gpus_per_node <= 0) throw_field_error("gpus_per_node", c.gpus_per_node, "must be > 0");
  if (c.nics_per_node <= 0) throw_field_error("nics_per_node", c.nics_per_node, "must be > 0");
  if (c.nodes_per_leaf <= 0) throw_field_error("nodes_per_leaf", c.nodes_per_leaf, "must be > 0");
  if (c.nodes_per_pod < 0 || (c.nodes_per_pod > 0 && c.nodes_per_pod % c.nodes_per_leaf != 0))
    throw_field_error("nodes_per_pod", c.nodes_per_pod, "must be 0 or a multiple of nodes_per_leaf");
  if (c.datacenters <= 0) throw_field_error("datacenters", c.datacenters, "must be > 0");
  const int64_t nodes = ceil_div(num_gpus, c.gpus_per_node);
  if (nodes < c.datacenters)
    throw_field_error("datacenters", c.datacenters, "needs at least one node per datacenter, have " + num(nodes));
  require_positive("oversubscription", c.oversubscription, "(leaf downlink : uplink ratio)");
  require_positive("nvlink_bandwidth", c.nvlink_bandwidth, "bytes/s");
  require_positive("nic_bandwidth", c.nic_bandwidth, "bytes/s");
  require_non_negative("nvlink_latency", c.nvlink_latency);
  require_non_negative("nic_latency", c.nic_latency);
  if (c.datacenters > 1) {
    require_positive("wan_bandwidth", c.wan_bandwidth, "bytes/s");
    require_non_negative("wan_latency", c.wan_latency);
  }
}

std::vector<GpuPlace> place_gpus(const ClusterSpec& c, int64_t num_gpus) {
  validate_cluster(c, num_gpus);
  const int64_t nodes = ceil_div(num_gpus, c.gpus_per_node);
  const int64_t nodes_per_dc = ceil_div(nodes, c.datacenters);
  const int64_t rails = rails_per_node(c);
  std::vector<GpuPlace> places(static_cast<size_t>(num_gpus));
  int64_t leaf_base = 0;  // first global leaf (pod) index of the current datacenter
  int64_t pod_base = 0;
  for (int64_t d = 0; d < c.datacenters; ++d) {
    const int64_t first = d * nodes_per_dc;
    const int64_t count = std::min(nodes_per_dc, nodes - first);
    for (int64_t ln = 0; ln < count; ++ln) {
      const int64_t node = first + ln;
      for (int64_t local = 0; local < c.gpus_per_node; ++local) {
        const int64_t g = node * c.gpus_per_node + local;
        if (g >= num_gpus) break;
        GpuPlace& p = places[static_cast<size_t>(g)];
        p.local = local;
        p.node = node;
        p.rail = local * rails / c.gpus_per_node;
        p.leaf = leaf_base + ln / c.nodes_per_leaf;
        p.pod = pod_base + (c.nodes_per_pod > 0 ? ln / c.nodes_per_pod : 0);
        p.dc = d;
      }
    }
    leaf_base += ceil_div(count, c.nodes_per_leaf);
    pod_base += c.nodes_per_pod > 0 ? ceil_div(count, c.nodes_per_pod) : 1;
  }
  return places;
}

Platform::Platform(const ClusterSpec& cluster, int64_t num_gpus, const PlatformOptions& options)
    : cluster_(cluster), options_(options) {
  places_ = place_gpus(cluster_, num_gpus);  // validates before touching SimGrid
  degradation_ = resolve_degradation(cluster_, places_);
  if (!options_.gpu_of_rank.empty()) {
    std::vector<char> seen(static_cast<size_t>(num_gpus), 0);
    TANDEM_CHECK_MSG(static_cast<int64_t>(options_.gpu_of_rank.size()) == num_gpus,
                     options_.gpu_of_rank.size() << " entries in gpu_of_rank for " << num_gpus << " GPUs");
    for (int64_t g : options_.gpu_of_rank) {
      TANDEM_CHECK_MSG(g >= 0 && g < num_gpus && !seen[static_cast<size_t>(g)], "gpu_of_rank is not a permutation");
      seen[static_cast<size_t>(g)] = 1;
    }
  }
  TANDEM_CHECK_MSG(!g_platform_created, "SimGrid supports one engine per process: build one Platform per process");
  g_platform_created = true;
  xbt_log_control_set("root.thresh:critical");
  engine_ = std::make_unique<sg4::Engine>("tandem");
  configure_engine();
  // Links carry what NCCL achieves on them, not the raw rate (per GPU kind, compute_model.h).
  const GpuEfficiency eff = options_.efficiency ? *options_.efficiency : stack_for_cluster(cluster_).efficiency;
  nvlink_efficiency_ = eff.nvlink_efficiency;
  nic_efficiency_ = eff.nic_efficiency;
  collective_base_latency_ = eff.collective_base_latency_s;
  ClusterSpec achieved = cluster_;
  achieved.nvlink_bandwidth *= nvlink_efficiency_;
  achieved.nic_bandwidth *= nic_efficiency_;
  Builder(achieved, options_, places_, degradation_, hosts_, hop_rank_).build();
  num_nodes_ = places_.empty() ? 0 : places_.back().node + 1;
  if (!options_.gpu_of_rank.empty()) {  // logical index i -> physical GPU gpu_of_rank[i]
    const std::vector<GpuPlace> physical_places = std::move(places_);
    const std::vector<sg4::Host*> physical_hosts = std::move(hosts_);
    const std::vector<double> physical_speed = degradation_.gpu;   // stragglers name physical GPUs
    places_.resize(physical_places.size());
    hosts_.resize(physical_hosts.size());
    for (size_t i = 0; i < places_.size(); ++i) {
      const auto g = static_cast<size_t>(options_.gpu_of_rank[i]);
      places_[i] = physical_places[g];
      hosts_[i] = physical_hosts[g];
      if (!physical_speed.empty()) degradation_.gpu[i] = physical_speed[g];
    }
  }
}

Platform::~Platform() = default;

int64_t Platform::num_nodes() const { return num_nodes_; }

const GpuPlace& Platform::place(int64_t gpu) const {
  TANDEM_CHECK_MSG(gpu >= 0 && gpu < num_gpus(), "gpu " << gpu << " out of range");
  return places_[static_cast<size_t>(gpu)];
}

sg4::Host* Platform::host(int64_t gpu) const {
  TANDEM_CHECK_MSG(gpu >= 0 && gpu < num_gpus(), "gpu " << gpu << " out of range");
  return hosts_[static_cast<size_t>(gpu)];
}

Tier Platform::tier(int64_t src_gpu, int64_t dst_gpu) const {
  const GpuPlace& a = place(src_gpu);
  const GpuPlace& b = place(dst_gpu);
  if (src_gpu == dst_gpu) return Tier::SameGpu;
  if (a.node == b.node) return Tier::Node;
  if (a.leaf == b.leaf) return Tier::Leaf;
  if (a.pod == b.pod) return Tier::Pod;
  if (a.dc == b.dc) return Tier::Datacenter;
  return Tier::Wan;
}

std::vector<sg4::Link*> Platform::route(int64_t src_gpu, int64_t dst_gpu) const {
  std::vector<sg4::Link*> links;
  double latency = 0;
  host(src_gpu)->route_to(host(dst_gpu), links, &latency);
  auto rank = [this](const sg4::Link* link) {
    auto it = hop_rank_.find(link);
    return it == hop_rank_.end() ? -1 : it->second;
  };
  std::stable_sort(links.begin(), links.end(),
                   [&](const sg4::Link* a, const sg4::Link* b) { return rank(a) < rank(b); });
  return links;
}

std::vector<std::string> Platform::route_names(int64_t src_gpu, int64_t dst_gpu) const {
  std::vector<std::string> names;
  for (const sg4::Link* link : route(src_gpu, dst_gpu)) names.push_back(link->get_name());
  return names;
}

double Platform::route_latency(int64_t src_gpu, int64_t dst_gpu) const {
  std::vector<sg4::Link*> links;
  double latency = 0;
  host(src_gpu)->route_to(host(dst_gpu), links, &latency);
  return latency;
}

double Platform::route_bandwidth(int64_t src_gpu, int64_t dst_gpu) const {
  double bw = 0;
  for (const sg4::Link* link : route(src_gpu, dst_gpu))
    bw = bw == 0 ? link->get_bandwidth() : std::min(bw, link->get_bandwidth());
  return bw;
}

double Platform::run() {
  engine_->run();
  return sg4::Engine::get_clock();
}

}  // namespace tandem::sim
