// Platform construction: GPU placement, validation, and the routes SimGrid computes.
#include "backends/sim/platform.h"

#include <gtest/gtest.h>

#include <simgrid/s4u.hpp>

#include <sstream>

#include "core/check.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using testing::h100_cluster;
using testing::join;
using testing::run_isolated;

TEST(PlaceGpus, ContiguousBlocksPerDatacenterPodAndLeaf) {
  ClusterSpec c = h100_cluster();
  c.nodes_per_leaf = 2;
  c.nodes_per_pod = 4;
  c.datacenters = 2;
  c.wan_bandwidth = 12.5e9;
  const auto places = place_gpus(c, 128);  // 16 nodes: 8 per DC, 2 pods per DC, 2 leaves per pod
  ASSERT_EQ(places.size(), 128u);
  EXPECT_EQ(places[0].dc, 0);
  EXPECT_EQ(places[63].dc, 0);
  EXPECT_EQ(places[64].dc, 1);
  EXPECT_EQ(places[64].node, 8);
  EXPECT_EQ(places[13].local, 5);
  EXPECT_EQ(places[13].rail, 5);
  EXPECT_EQ(places[13].node, 1);
  EXPECT_EQ(places[16].leaf, 1);   // node 2
  EXPECT_EQ(places[32].pod, 1);    // node 4
  EXPECT_EQ(places[64].leaf, 4);   // first leaf of DC 1
  EXPECT_EQ(places[64].pod, 2);
  EXPECT_EQ(places[127].leaf, 7);
}

TEST(PlaceGpus, SharedNicsMapGpusToRails) {
  ClusterSpec c = h100_cluster();
  c.nics_per_node = 4;
  const auto places = place_gpus(c, 8);
  EXPECT_EQ(places[0].rail, 0);
  EXPECT_EQ(places[1].rail, 0);
  EXPECT_EQ(places[7].rail, 3);
}

TEST(ValidateCluster, NamesTheOffendingField) {
  ClusterSpec c = h100_cluster();
  c.nic_bandwidth = 0;
  try {
    validate_cluster(c, 16);
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("nic_bandwidth"), std::string::npos) << e.what();
  }
  c = h100_cluster();
  c.datacenters = 2;
  EXPECT_THROW(validate_cluster(c, 16), UserError);  // no WAN bandwidth
  c.wan_bandwidth = 1e9;
  EXPECT_THROW(validate_cluster(c, 8), UserError);   // one node cannot span two datacenters
  c = h100_cluster();
  c.nodes_per_leaf = 4;
  c.nodes_per_pod = 6;
  EXPECT_THROW(validate_cluster(c, 64), UserError);
  c = h100_cluster();
  c.topology = "torus";
  EXPECT_THROW(validate_cluster(c, 64), UserError);
}

// Routes of a 2-datacenter platform with pods, returned as "src>dst: names | latency" lines.
std::string describe_routes(const ClusterSpec& c, int64_t gpus, const std::vector<std::pair<int, int>>& pairs) {
  return run_isolated([&] {
    Platform platform(c, gpus);
    std::ostringstream os;
    os.precision(17);
    for (auto [a, b] : pairs)
      os << join(platform.route_names(a, b)) << " | " << platform.route_latency(a, b) << " | "
         << platform.route_bandwidth(a, b) << "\n";
    return os.str();
  });
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

struct RouteInfo {
  std::string links;
  double latency = 0;    // s
  double bandwidth = 0;  // bytes/s
};

RouteInfo parse(const std::string& line) {
  RouteInfo r;
  const size_t bar = line.find(" | ");
  r.links = line.substr(0, bar);
  std::istringstream is(line.substr(bar + 3));
  char sep = 0;
  is >> r.latency >> sep >> r.bandwidth;
  return r;
}

TEST(PlatformRoutes, FollowTheFabricTiers) {
  ClusterSpec c = h100_cluster();
  c.nodes_per_leaf = 2;
  c.oversubscription = 2.0;
  c.nodes_per_pod = 4;
  c.datacenters = 2;
  c.wan_bandwidth = 12.5e9;
  c.wan_latency = 5e-3;
  const double up = PlatformOptions{}.uplink_latency;
  // 16 nodes: DC0 = nodes 0-7 (pods 0-1, leaves 0-3), DC1 = nodes 8-15.
  std::vector<RouteInfo> got;
  for (const auto& line : lines(describe_routes(c, 128, {{0, 3}, {3, 0}, {0, 8}, {1, 10}, {2, 18}, {0, 40}, {5, 69}})))
    got.push_back(parse(line));
  ASSERT_EQ(got.size(), 7u);
  // Inside a node: NVLink only.
  EXPECT_EQ(got[0].links, "gpu0-nvl_UP gpu3-nvl_DOWN");
  EXPECT_DOUBLE_EQ(got[0].latency, 2e-6);
  EXPECT_DOUBLE_EQ(got[0].bandwidth, 450e9);
  EXPECT_EQ(got[1].links, "gpu3-nvl_UP gpu0-nvl_DOWN");
  // Same leaf, same rail: NIC, the rail's leaf switch, NIC.
  EXPECT_EQ(got[2].links, "node0-nic0_UP leaf0-rail0 node1-nic0_DOWN");
  EXPECT_DOUBLE_EQ(got[2].latency, 3e-6);
  EXPECT_DOUBLE_EQ(got[2].bandwidth, 50e9);
  // Same leaf, other rail: crosses the leaf, not the spine.
  EXPECT_EQ(got[3].links, "node0-nic1_UP leaf0-rail1 leaf0 node1-nic2_DOWN");
  // Other leaf of the same pod: NIC, leaf, uplink, spine, uplink, NIC. Each rail uplink carries
  // nodes_per_leaf NICs / oversubscription = 2 * 50 / 2 GB/s.
  EXPECT_EQ(got[4].links,
            "node0-nic2_UP leaf0-rail2 leaf0-rail2-up_UP spine0-up spine0-down leaf1-rail2-up_DOWN node2-nic2_DOWN");
  EXPECT_DOUBLE_EQ(got[4].latency, 3e-6 + 2 * up);
  EXPECT_DOUBLE_EQ(got[4].bandwidth, 50e9);
  // Other pod: adds the pods' uplinks.
  EXPECT_EQ(got[5].links,
            "node0-nic0_UP leaf0-rail0 leaf0-rail0-up_UP spine0-up pod0-up_UP pod1-up_DOWN spine1-down "
            "leaf2-rail0-up_DOWN node5-nic0_DOWN");
  EXPECT_DOUBLE_EQ(got[5].latency, 3e-6 + 4 * up);
  // Other datacenter: crosses the WAN link, which is the bottleneck.
  EXPECT_EQ(got[6].links,
            "node0-nic5_UP leaf0-rail5 leaf0-rail5-up_UP spine0-up pod0-up_UP wan0-1_UP pod2-up_DOWN spine2-down "
            "leaf4-rail5-up_DOWN node8-nic5_DOWN");
  EXPECT_NEAR(got[6].latency, 5e-3 + 3e-6 + 4 * up, 1e-15);
  EXPECT_DOUBLE_EQ(got[6].bandwidth, 12.5e9);
}

TEST(PlatformRoutes, SharedNicStillUsesNvlinkInsideTheNode) {
  ClusterSpec c = h100_cluster();
  c.nics_per_node = 4;
  const auto got = lines(describe_routes(c, 16, {{0, 1}, {0, 8}, {1, 9}}));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(parse(got[0]).links, "gpu0-nvl_UP gpu1-nvl_DOWN");
  EXPECT_EQ(parse(got[1]).links, "node0-nic0_UP leaf0-rail0 node1-nic0_DOWN");
  EXPECT_EQ(parse(got[2]).links, "node0-nic0_UP leaf0-rail0 node1-nic0_DOWN");
  EXPECT_DOUBLE_EQ(parse(got[2]).bandwidth, 50e9);  // GPUs 0 and 1 share one 50 GB/s NIC
}

// Every ordered pair of a small two-datacenter platform: the route leaves through the source's
// NVLink (same node) or NIC and enters through the destination's, and crosses the WAN iff the
// datacenters differ. Guards against the gateway pitfalls of hierarchical SimGrid zones.
TEST(PlatformRoutes, EveryPairEntersAndLeavesThroughItsOwnGpu) {
  ClusterSpec c = h100_cluster();
  c.gpus_per_node = 4;
  c.nics_per_node = 4;
  c.nodes_per_leaf = 2;
  c.datacenters = 2;
  c.wan_bandwidth = 1e9;
  const int64_t gpus = 32;  // 8 nodes, 4 per DC
  const std::string report = run_isolated([&] {
    Platform platform(c, gpus);
    std::ostringstream errors;
    for (int64_t a = 0; a < gpus; ++a) {
      for (int64_t b = 0; b < gpus; ++b) {
        if (a == b) continue;
        const auto names = platform.route_names(a, b);
        const GpuPlace& pa = platform.place(a);
        const GpuPlace& pb = platform.place(b);
        const bool same_node = pa.node == pb.node;
        const std::string first = same_node ? "gpu" + std::to_string(a) + "-nvl_UP"
                                            : "node" + std::to_string(pa.node) + "-nic" + std::to_string(pa.rail) + "_UP";
        const std::string last = same_node ? "gpu" + std::to_string(b) + "-nvl_DOWN"
                                           : "node" + std::to_string(pb.node) + "-nic" + std::to_string(pb.rail) + "_DOWN";
        const bool wan = join(names).find("wan0-1") != std::string::npos;
        if (names.empty() || names.front() != first || names.back() != last || wan != (pa.dc != pb.dc) ||
            (same_node && names.size() != 2))
          errors << a << ">" << b << ": " << join(names) << "\n";
      }
    }
    return errors.str();
  });
  EXPECT_EQ(report, "");
}

TEST(Platform, HostsAreNamedAfterGlobalGpuIndices) {
  const std::string names = run_isolated([] {
    Platform platform(h100_cluster(), 20);  // 2.5 nodes: the last node is partial
    std::string out = std::to_string(platform.num_nodes()) + " ";
    for (int64_t g : {0, 9, 19}) out += platform.host(g)->get_name() + " ";
    out += std::to_string(platform.host(3)->get_speed());
    return out;
  });
  EXPECT_EQ(names, "3 gpu0 gpu9 gpu19 " + std::to_string(989.5e12));
}

}  // namespace
}  // namespace tandem::sim
