// Collectives as SimGrid flows: simulated times against textbook formulas.
#include "backends/sim/collectives.h"

#include <gtest/gtest.h>

#include <simgrid/s4u.hpp>

#include <algorithm>
#include <numeric>

#include "core/job_loader.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

namespace sg4 = simgrid::s4u;
using testing::decode;
using testing::encode;
using testing::h100_cluster;
using testing::run_isolated;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

Group make_group(const std::string& name, int64_t first, int64_t count, int64_t stride = 1) {
  Group g{name, {}};
  for (int64_t i = 0; i < count; ++i) g.gpus.push_back(first + i * stride);
  return g;
}

// Simulates one collective with one actor per member; returns each member's finish time (s)
// followed by the plan's ideal time (s).
std::vector<double> simulate(const ClusterSpec& c, int64_t gpus, CollectiveKind kind, Algorithm algorithm,
                             const Group& group, double bytes) {
  return decode(run_isolated([&] {
    Platform platform(c, gpus);
    Collectives coll(platform);
    std::vector<double> finish(group.gpus.size() + 1, 0.0);
    for (size_t m = 0; m < group.gpus.size(); ++m) {
      sg4::Actor::create("rank" + std::to_string(m), platform.host(group.gpus[m]), [&, m] {
        Pending p = coll.start_collective(kind, algorithm, group, group.gpus[m], bytes);
        p.wait();
        finish[m] = p.finish_time();
      });
    }
    platform.run();
    finish.back() = ideal_time(platform, kind, algorithm, group, bytes);
    return encode(finish);
  }));
}

double max_of(const std::vector<double>& v, size_t n) { return *std::max_element(v.begin(), v.begin() + static_cast<long>(n)); }
double min_of(const std::vector<double>& v, size_t n) { return *std::min_element(v.begin(), v.begin() + static_cast<long>(n)); }

// Textbook ring all-reduce: 2(p-1) steps of latency alpha and 2(p-1)/p * S over bus bandwidth B.
double ring_all_reduce(int p, double bytes, double alpha, double bus_bandwidth) {
  return 2.0 * (p - 1) * alpha + 2.0 * (p - 1) / p * bytes / bus_bandwidth;
}

TEST(RingAllReduce, EightGpusInOneNodeMatchTheFormula) {
  const ClusterSpec c = h100_cluster();
  const Group g = make_group("tp0", 0, 8);
  const auto t = simulate(c, 8, CollectiveKind::AllReduce, Algorithm::Ring, g, kGiB);
  const double want = ring_all_reduce(8, kGiB, c.nvlink_latency, c.nvlink_bandwidth);
  EXPECT_NEAR(max_of(t, 8), want, 0.01 * want);
  EXPECT_NEAR(min_of(t, 8), want, 0.01 * want);  // paced flows: every rank ends together
  EXPECT_NEAR(t.back(), want, 1e-9 * want);
}

// Across N nodes with 8 members each, NCCL runs 8 channels, one per NIC: the bus bandwidth is
// 8 NICs (the NVLink share of 7/8 channels is lighter on H100). Latency as NCCL's tuning model
// counts it: 2N of the 2(p-1) steps are network hops, the others NVLink hops.
TEST(RingAllReduce, AcrossTwoAndFourNodesUsesEveryNic) {
  const ClusterSpec c = h100_cluster();
  for (int nodes : {2, 4}) {
    const int p = 8 * nodes;
    const Group g = make_group("world", 0, p);
    const auto t = simulate(c, p, CollectiveKind::AllReduce, Algorithm::Ring, g, kGiB);
    const int inter = 2 * nodes, intra = 2 * (p - 1) - inter;
    const double want = ring_all_reduce(p, kGiB, 0, 8 * c.nic_bandwidth) + intra * c.nvlink_latency + inter * c.nic_latency;
    EXPECT_NEAR(max_of(t, g.gpus.size()), want, 0.01 * want) << nodes << " nodes";
    EXPECT_NEAR(min_of(t, g.gpus.size()), want, 0.01 * want) << nodes << " nodes";
    EXPECT_NEAR(t.back(), want, 1e-9 * want) << nodes << " nodes";
  }
}

TEST(RingAllReduce, OneGpuPerNodeAcrossFourNodes) {
  const ClusterSpec c = h100_cluster();
  const Group g = make_group("dp0", 3, 4, 8);  // GPU 3 of nodes 0-3: rail 3
  const auto t = simulate(c, 32, CollectiveKind::AllReduce, Algorithm::Ring, g, kGiB);
  const double want = ring_all_reduce(4, kGiB, c.nic_latency, c.nic_bandwidth);
  EXPECT_NEAR(max_of(t, 4), want, 0.01 * want);
}

// A ring mixing NVLink and NIC hops runs at the NIC's pace; ranks whose own hops are NVLink
// still finish with the others, as in a pipelined ring.
TEST(RingAllReduce, MixedHopsEndTogetherAtTheSlowestHop) {
  const ClusterSpec c = h100_cluster();
  const Group g{"mixed", {0, 1, 2, 3, 8}};  // 0>1>2>3 over NVLink, 3>8>0 over NICs
  const auto t = simulate(c, 16, CollectiveKind::AllReduce, Algorithm::Ring, g, kGiB);
  const double want = ring_all_reduce(5, kGiB, c.nic_latency, c.nic_bandwidth);
  EXPECT_NEAR(min_of(t, 5), want, 0.01 * want);
  EXPECT_NEAR(max_of(t, 5), want, 0.01 * want);
}

// A GPU kind with NCCL data (clusters/gpu_models) runs its links at the achieved bus bandwidth:
// DGX A100's NVLink at 0.78 x 300 GB/s, its HDR NICs at 0.95 x 25 GB/s, and NCCL's 8.4 us per
// collective on top of the hop latencies.
TEST(RingAllReduce, KnownGpuKindsRunAtTheirAchievedNcclBandwidth) {
  const ClusterSpec c = load_cluster("dgx-a100");
  const auto eff = decode(run_isolated([&] {
    Platform platform(c, 16);
    return encode({platform.nvlink_efficiency(), platform.nic_efficiency(), platform.collective_base_latency()});
  }));
  EXPECT_DOUBLE_EQ(eff[0], 0.78);
  EXPECT_DOUBLE_EQ(eff[1], 0.95);
  EXPECT_DOUBLE_EQ(eff[2], 8.4e-6);
  const Group node = make_group("tp0", 0, 8);
  const auto t = simulate(c, 8, CollectiveKind::AllReduce, Algorithm::Ring, node, kGiB);
  const double want = 8.4e-6 + ring_all_reduce(8, kGiB, c.nvlink_latency, 0.78 * c.nvlink_bandwidth);
  EXPECT_NEAR(max_of(t, 8), want, 0.01 * want);
  EXPECT_NEAR(t.back(), want, 1e-9 * want);
  const Group rail = make_group("dp0", 3, 2, 8);  // GPU 3 of nodes 0 and 1
  const auto r = simulate(c, 16, CollectiveKind::AllReduce, Algorithm::Ring, rail, kGiB);
  const double want_rail = 8.4e-6 + ring_all_reduce(2, kGiB, c.nic_latency, 0.95 * c.nic_bandwidth);
  EXPECT_NEAR(max_of(r, 2), want_rail, 0.01 * want_rail);
  // A 32 MB all-reduce on one node lands on nccl-tests' busbw curve, below its large-message plateau.
  const double mb32 = 32.0 * 1024 * 1024;
  const auto small = simulate(c, 8, CollectiveKind::AllReduce, Algorithm::Ring, node, mb32);
  const double busbw = 2.0 * 7 / 8 * mb32 / small.back();
  EXPECT_GT(busbw, 180e9);
  EXPECT_LT(busbw, 200e9);
}

TEST(RingCollectives, ReduceScatterAndAllGatherTakeHalfTheAllReduce) {
  const ClusterSpec c = h100_cluster();
  const Group g = make_group("tp0", 0, 8);
  for (CollectiveKind kind : {CollectiveKind::ReduceScatter, CollectiveKind::AllGather}) {
    const auto t = simulate(c, 8, kind, Algorithm::Ring, g, kGiB);
    const double want = 7 * c.nvlink_latency + 7.0 / 8 * kGiB / c.nvlink_bandwidth;
    EXPECT_NEAR(max_of(t, 8), want, 0.01 * want) << to_string(kind);
  }
}

// Tree and hierarchical algorithms: the simulation alone on the platform meets the plan's ideal.
TEST(OtherAlgorithms, MeetTheirPlannedIdealTime) {
  const ClusterSpec c = h100_cluster();
  const Group dp = make_group("dp0", 0, 8, 8);  // one GPU on each of 8 nodes
  const auto tree = simulate(c, 64, CollectiveKind::AllReduce, Algorithm::Tree, dp, kGiB);
  EXPECT_NEAR(max_of(tree, 8), tree.back(), 0.01 * tree.back());
  // Double binary tree: each rank sends and receives about 2S, latency 2 log2(p) hops.
  EXPECT_NEAR(tree.back(), 2 * 3 * c.nic_latency + 2 * kGiB / c.nic_bandwidth, 0.05 * tree.back());

  const Group world = make_group("world", 0, 32);
  const auto hier = simulate(c, 32, CollectiveKind::AllReduce, Algorithm::Hierarchical, world, kGiB);
  EXPECT_NEAR(max_of(hier, 32), hier.back(), 0.01 * hier.back());
  // Rails carry 2(N-1)/N * S/8 each; NVLink rings carry 2(L-1)/L * S.
  const double rails = 2.0 * 3 / 4 * kGiB / 8 / c.nic_bandwidth;
  const double nvlink = 2.0 * 7 / 8 * kGiB / c.nvlink_bandwidth;
  EXPECT_NEAR(hier.back(), 14 * c.nvlink_latency + 6 * c.nic_latency + std::max(rails, nvlink), 1e-9);
}

TEST(Plan, RingFlowsCarryTheirChannelShare) {
  const std::string text = run_isolated([] {
    Platform platform(h100_cluster(), 16);
    const FlowPlan plan = plan_collective(platform, CollectiveKind::AllReduce, Algorithm::Ring,
                                          make_group("w", 0, 16), 16.0);
    std::string out;
    for (const Flow& f : plan.flows)
      if (f.src == 0 || f.src == 7) out += std::to_string(f.src) + ">" + std::to_string(f.dst) + ":" +
                                          std::to_string(f.bytes) + " ";
    return out;
  });
  // 2(p-1)/p * S = 30 bytes per ring edge, 30/8 per channel: 7 channels to the local successor,
  // one to the next node's member on the next rail.
  EXPECT_EQ(text, "0>1:26.250000 0>9:3.750000 7>0:26.250000 7>8:3.750000 ");
}

// Plays an all-to-all of per_peer bytes among GPUs 0..gpus-1 with one actor per member; returns
// each member's finish time (s) followed by member 0's number of flows.
std::vector<double> play_all_to_all(const ClusterSpec& c, int64_t gpus, double per_peer) {
  return decode(run_isolated([&] {
    Platform platform(c, gpus);
    Collectives coll(platform);
    const Group g = make_group("ep0", 0, gpus);
    std::vector<double> out(static_cast<size_t>(gpus) + 1);
    for (int64_t m = 0; m < gpus; ++m)
      sg4::Actor::create("rank", platform.host(m), [&, m] {
        Pending p = coll.start_all_to_all(g, m, per_peer);
        if (m == 0) out.back() = static_cast<double>(p.num_flows());
        p.wait();
        out[static_cast<size_t>(m)] = p.finish_time();
      });
    platform.run();
    return encode(out);
  }));
}

TEST(AllToAll, PairwiseFlowsShareEachGpusNvlink) {
  const ClusterSpec c = h100_cluster();
  const double per_peer = 64e6;  // bytes
  const auto t = play_all_to_all(c, 8, per_peer);
  const double want = c.nvlink_latency + 7 * per_peer / c.nvlink_bandwidth;
  for (size_t m = 0; m < 8; ++m) EXPECT_NEAR(t[m], want, 0.01 * want);
  EXPECT_EQ(t[8], 14.0);  // 7 puts + 7 gets
}

// Across nodes the all-to-all is rail-aligned (PXN): one flow per member and remote node, through
// the member's own NIC, carrying what it sends to all of that node's members. 16 GPUs on two
// nodes: 7 NVLink puts + 1 NIC put per member, and each NIC carries 8 x per_peer each way.
TEST(AllToAll, AcrossNodesOneRailAlignedFlowPerRemoteNodeAtNicSpeed) {
  const ClusterSpec c = h100_cluster();
  const double per_peer = 64e6;  // bytes
  const auto t = play_all_to_all(c, 16, per_peer);
  EXPECT_EQ(t[16], 16.0);  // 8 puts + 8 gets
  const double nic = 8 * per_peer / c.nic_bandwidth, nvlink = 7 * per_peer / c.nvlink_bandwidth;
  ASSERT_GT(nic, 2 * nvlink);
  for (size_t m = 0; m < 16; ++m) {
    EXPECT_GT(t[m], nic);
    EXPECT_LT(t[m], 1.05 * nic + 1e-4) << m;
  }
}

// One actor plays every member's flows one-sided (ranks that are not played, symmetry).
TEST(AllFlows, OneActorPlaysAWholeCollective) {
  const ClusterSpec c = h100_cluster();
  const auto t = decode(run_isolated([&] {
    Platform platform(c, 32);
    Collectives coll(platform);
    const Group g = make_group("dp3", 3, 4, 8);
    std::vector<double> out(2);
    sg4::Actor::create("ghost", platform.host(0), [&] {
      const FlowPlan plan = coll.plan(CollectiveKind::AllReduce, Algorithm::Ring, g, kGiB);
      Pending p = coll.start_all_flows(plan, g);
      p.wait();
      out = {p.finish_time(), plan.ideal_time()};
    });
    platform.run();
    return encode(out);
  }));
  EXPECT_NEAR(t[0], t[1], 1e-9 * t[1]);
  EXPECT_NEAR(t[1], ring_all_reduce(4, kGiB, c.nic_latency, c.nic_bandwidth), 1e-9 * t[1]);
}

// Started, then overlapped with compute on the same actor: the wait costs only what is left.
TEST(Overlap, CollectiveRunsWhileTheActorComputes) {
  const ClusterSpec c = h100_cluster();
  const auto t = decode(run_isolated([&] {
    Platform platform(c, 8);
    Collectives coll(platform);
    const Group g = make_group("tp0", 0, 8);
    std::vector<double> out(3);
    for (int64_t m = 0; m < 8; ++m)
      sg4::Actor::create("rank", platform.host(m), [&, m] {
        Pending p = coll.start_all_reduce(g, m, kGiB);
        sg4::this_actor::execute(platform.host(m)->get_speed() * 1e-3);  // 1 ms of compute
        const bool done_early = p.test();
        p.wait();
        if (m == 0) out = {sg4::Engine::get_clock(), p.finish_time(), done_early ? 1.0 : 0.0};
      });
    platform.run();
    return encode(out);
  }));
  const double comm = ring_all_reduce(8, kGiB, c.nvlink_latency, c.nvlink_bandwidth);
  ASSERT_GT(comm, 1e-3);
  EXPECT_NEAR(t[0], comm, 0.01 * comm);  // not 1 ms + comm
  EXPECT_NEAR(t[1], comm, 0.01 * comm);
  EXPECT_EQ(t[2], 0.0);
}

}  // namespace
}  // namespace tandem::sim
