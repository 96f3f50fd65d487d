// Effects a training-time simulator must show: contention on shared fabric links, WAN links
// between datacenters, and bit-identical results for identical inputs.
#include "backends/sim/collectives.h"

#include <gtest/gtest.h>

#include <simgrid/s4u.hpp>

#include <algorithm>

#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

namespace sg4 = simgrid::s4u;
using testing::decode;
using testing::encode;
using testing::h100_cluster;
using testing::run_isolated;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Four nodes, two per leaf. Job A is data-parallel over nodes 0 and 2, job B over nodes 1 and 3:
// the eight DP groups of each job (one per local GPU, i.e. per rail) all cross the spine, and on
// each rail both jobs' flows share the same leaf uplinks.
ClusterSpec two_leaf_cluster(double oversubscription) {
  ClusterSpec c = h100_cluster();
  c.nodes_per_leaf = 2;
  c.oversubscription = oversubscription;
  return c;
}

// Gradient all-reduce of `bytes` in every DP group of the listed jobs; returns the time the last
// rank finishes (s).
std::string data_parallel_jobs(const ClusterSpec& c, const std::vector<std::pair<int64_t, int64_t>>& jobs,
                               double bytes) {
  return run_isolated([&] {
    Platform platform(c, 32);
    Collectives coll(platform);
    std::vector<Group> groups;
    for (size_t j = 0; j < jobs.size(); ++j)
      for (int64_t k = 0; k < 8; ++k)
        groups.push_back({"job" + std::to_string(j) + "-dp" + std::to_string(k),
                          {jobs[j].first * 8 + k, jobs[j].second * 8 + k}});
    double last = 0;
    for (const Group& g : groups)
      for (int64_t gpu : g.gpus)
        sg4::Actor::create("rank", platform.host(gpu), [&, gpu] {
          Pending p = coll.start_all_reduce(g, gpu, bytes);
          p.wait();
          last = std::max(last, p.finish_time());
        });
    platform.run();
    return encode({last});
  });
}

TEST(Contention, TwoJobsOnAnOversubscribedSpineTakeLonger) {
  const double bytes = kGiB;
  const std::vector<std::pair<int64_t, int64_t>> job_a = {{0, 2}};
  const std::vector<std::pair<int64_t, int64_t>> both = {{0, 2}, {1, 3}};
  const double full_alone = decode(data_parallel_jobs(two_leaf_cluster(1.0), job_a, bytes))[0];
  const double full_both = decode(data_parallel_jobs(two_leaf_cluster(1.0), both, bytes))[0];
  const double over_alone = decode(data_parallel_jobs(two_leaf_cluster(4.0), job_a, bytes))[0];
  const double over_both = decode(data_parallel_jobs(two_leaf_cluster(4.0), both, bytes))[0];

  // Full fat tree: a rail uplink (2 nodes x 50 GB/s) carries both jobs at NIC speed.
  const double c = h100_cluster().nic_latency + 2 * PlatformOptions{}.uplink_latency;  // s per hop
  const double nic_bound = 2 * c + bytes / 50e9;  // 2 ring steps, S per rank at 50 GB/s
  EXPECT_NEAR(full_alone, nic_bound, 0.01 * nic_bound);
  EXPECT_NEAR(full_both, full_alone, 1e-9);
  // 4:1 oversubscribed: a rail uplink is 25 GB/s; alone a job gets all of it, together half.
  EXPECT_NEAR(over_alone, 2 * c + bytes / 25e9, 0.01 * over_alone);
  EXPECT_NEAR(over_both, 2 * c + bytes / 12.5e9, 0.01 * over_both);
  EXPECT_GT(over_both, 1.9 * over_alone);
  EXPECT_GT(over_both, 3.9 * full_both);
}

// Two datacenters of one node each, a pipeline split between them: stage 0 on GPUs 0-7 (DC 0),
// stage 1 on GPUs 8-15 (DC 1). Activations cross the 100 Gb/s, 10 ms WAN link.
ClusterSpec two_datacenters() {
  ClusterSpec c = h100_cluster();
  c.datacenters = 2;
  c.wan_bandwidth = 12.5e9;  // bytes/s
  c.wan_latency = 10e-3;     // s
  return c;
}

// Sends `bytes` from GPU s to GPU s + 8 for each s in `senders`; returns the receivers' finish times.
std::vector<double> pipeline_sends(const std::vector<int64_t>& senders, double bytes) {
  return decode(run_isolated([&] {
    Platform platform(two_datacenters(), 16);
    Collectives coll(platform);
    std::vector<double> finish(senders.size());
    for (size_t i = 0; i < senders.size(); ++i) {
      const int64_t src = senders[i];
      sg4::Actor::create("stage0", platform.host(src), [&, src] { coll.start_send(src, src + 8, bytes, "act").wait(); });
      sg4::Actor::create("stage1", platform.host(src + 8), [&, i, src] {
        Pending p = coll.start_recv(src + 8, src, "act");
        p.wait();
        finish[i] = p.finish_time();
      });
    }
    platform.run();
    return encode(finish);
  }));
}

TEST(Wan, PointToPointAcrossDatacentersCostsLatencyPlusBytesOverBandwidth) {
  const double bytes = 256e6;
  const auto t = pipeline_sends({3}, bytes);
  // Hand-computed: WAN 10 ms + NIC-to-NIC 3 us + two leaf-spine uplinks of 0.5 us, then
  // 256 MB at the WAN's 12.5 GB/s (the narrowest link) = 20.48 ms.
  const double want = 10e-3 + 3e-6 + 2 * 0.5e-6 + 256e6 / 12.5e9;
  ASSERT_EQ(t.size(), 1u);
  EXPECT_NEAR(t[0], want, 0.01 * want);
}

TEST(Wan, ConcurrentPipelineBoundariesShareTheWanLink) {
  const double bytes = 256e6;
  const auto t = pipeline_sends({0, 1, 2, 3}, bytes);
  const double want = 10e-3 + 4e-6 + 4 * 256e6 / 12.5e9;  // four flows share 12.5 GB/s
  for (double f : t) EXPECT_NEAR(f, want, 0.01 * want);
}

TEST(Determinism, SameInputGivesBitIdenticalTimes) {
  const std::vector<std::pair<int64_t, int64_t>> both = {{0, 2}, {1, 3}};
  const std::string first = data_parallel_jobs(two_leaf_cluster(3.0), both, 123456789.0);
  const std::string second = data_parallel_jobs(two_leaf_cluster(3.0), both, 123456789.0);
  EXPECT_EQ(first, second);
  ASSERT_EQ(first.size(), sizeof(double));
  EXPECT_GT(decode(first)[0], 0.0);
}

}  // namespace
}  // namespace tandem::sim
