// Stragglers end to end: resolved onto the machine (units reached, seeded draws), link bandwidths
// on the platform, and their effect through pipeline and data-parallel coupling in simulate().
#include "backends/sim/simulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/degradation.h"
#include "backends/sim/platform.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using nlohmann::json;
using testing::decode;
using testing::encode;
using testing::run_isolated;

// A 4-layer model; `layout` adds the parallel flags. 16 sequences per iteration on dgx-h100.
Job tiny_job(const std::vector<std::string>& layout, int64_t gpus, const std::vector<std::string>& stragglers = {}) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = gpus;
  request.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16"};
  request.megatron_flags.insert(request.megatron_flags.end(), layout.begin(), layout.end());
  request.stragglers = stragglers;
  return load_job(request);
}

json simulate_json(const Job& job, bool all_ranks = false) {
  SimOptions options;
  options.all_ranks = all_ranks;
  return json::parse(run_isolated([&] { return result_to_json(simulate(job, options)).dump(); }));
}

const json& rank_entry(const json& r, int64_t rank) {
  for (const json& x : r["ranks"])
    if (x["rank"].get<int64_t>() == rank) return x;
  throw std::runtime_error("rank " + std::to_string(rank) + " not in the result");
}

double waiting(const json& rank) {   // seconds its compute stream sat idle, all causes
  const json& b = rank["breakdown"];
  return rank["finish_s"].get<double>() - b["compute"].get<double>() - b["optimizer"].get<double>();
}

// PP=2 x DP=2 on four GPUs of one node; order pp before dp: ranks 0, 1 are stages 0, 1 of replica 0
// and ranks 2, 3 those of replica 1. With a slow GPU the node's collectives are played as flows,
// so the gradient all-reduce waits for its last member.
const std::vector<std::string> kPp2Dp2 = {"--pipeline-model-parallel-size", "2", "--order", "tp-cp-ep-pp-dp"};

TEST(Stragglers, SpeedOneChangesNothingByteForByte) {
  const std::vector<std::string> layout = {"--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"};
  const Job none = tiny_job(layout, 16);
  const Job idle = tiny_job(layout, 16, {"gpu:rank=3:1.0", "nic:fraction=0.5:1:seed=4"});
  const json a = simulate_json(none);
  const json b = simulate_json(idle);
  EXPECT_TRUE(a["symmetry_reduced"].get<bool>());   // still reduced: a speed-1 straggler is ignored
  EXPECT_EQ(a.dump(), b.dump());
  EXPECT_EQ(simulate_json(none, true).dump(), simulate_json(idle, true).dump());
}

TEST(Stragglers, SlowGpuSlowsItsStageAndOthersWaitForIt) {
  const json base = simulate_json(tiny_job(kPp2Dp2, 4), true);
  const json slow = simulate_json(tiny_job(kPp2Dp2, 4, {"gpu:rank=1:0.5"}));
  EXPECT_FALSE(slow["symmetry_reduced"].get<bool>());
  EXPECT_EQ(slow["ranks_played"].get<int64_t>(), 4);
  const double t0 = base["iteration_time_s"].get<double>();
  const double t1 = slow["iteration_time_s"].get<double>();
  // Rank 1 (the last stage of replica 0, the heavier stage: it holds the output layer and the loss)
  // computes twice as long; it paces the pipeline, so the iteration grows by most of its extra
  // compute, and by no more than all of it.
  const double busy0 = rank_entry(base, 1)["busy_s"].get<double>();
  const double busy1 = rank_entry(slow, 1)["busy_s"].get<double>();
  EXPECT_NEAR(busy1 / busy0, 2.0, 0.05);
  EXPECT_GT(t1 - t0, 0.6 * (busy1 - busy0));
  EXPECT_LE(t1 - t0, 1.02 * (busy1 - busy0));
  // The other ranks compute as before and wait the difference.
  for (int64_t r : {0, 2, 3}) {
    EXPECT_NEAR(rank_entry(slow, r)["busy_s"].get<double>(), rank_entry(base, r)["busy_s"].get<double>(),
                0.02 * busy0) << "rank " << r;
    EXPECT_GT(waiting(rank_entry(slow, r)), waiting(rank_entry(base, r)) + 0.5 * (t1 - t0)) << "rank " << r;
  }
  // Its pipeline peer (rank 0, stage 0) waits in pipeline receives; its data-parallel peer (rank 3,
  // the last stage of replica 1) waits for it to start the gradient all-reduce.
  const auto pipeline = [](const json& x) {
    return x["breakdown"]["pipeline_bubble"].get<double>() + x["breakdown"]["pp_comm"].get<double>();
  };
  EXPECT_GT(pipeline(rank_entry(slow, 0)), pipeline(rank_entry(base, 0)) + 0.3 * (t1 - t0));
  EXPECT_GT(rank_entry(slow, 3)["peer_wait_s"].get<double>(), 0.3 * (t1 - t0));
  EXPECT_GT(rank_entry(slow, 3)["breakdown"]["dp_comm"].get<double>(),
            rank_entry(base, 3)["breakdown"]["dp_comm"].get<double>() + 0.3 * (t1 - t0));
  // The summary names the slow rank and its peers.
  const json& waits = slow["waits"];
  ASSERT_GE(waits.size(), 3u);
  EXPECT_EQ(waits[0]["who"], "slowest");
  EXPECT_EQ(waits[0]["rank"].get<int64_t>(), 1);
  std::vector<std::string> who;
  for (const json& w : waits) who.push_back(w["who"].get<std::string>());
  EXPECT_NE(std::find(who.begin(), who.end(), "pipeline peers"), who.end());
  EXPECT_NE(std::find(who.begin(), who.end(), "data-parallel peers"), who.end());
  for (const json& w : waits) {
    const double sum = w["compute_s"].get<double>() + w["pipeline_s"].get<double>() + w["collectives_s"].get<double>() +
                       w["data_parallel_s"].get<double>() + w["optimizer_s"].get<double>() +
                       w["idle_at_end_s"].get<double>();
    EXPECT_NEAR(sum, t1, 1e-9 * t1) << w.dump();
  }
}

TEST(Stragglers, SlowGpuInATensorParallelGroupHoldsUpItsPeers) {
  const std::vector<std::string> tp8 = {"--tensor-model-parallel-size", "8"};
  const json base = simulate_json(tiny_job(tp8, 8));
  const json slow = simulate_json(tiny_job(tp8, 8, {"gpu:rank=3:0.5"}));
  const double t0 = base["iteration_time_s"].get<double>();
  const double t1 = slow["iteration_time_s"].get<double>();
  EXPECT_GT(t1, 1.15 * t0);   // hidden 1024 at TP 8: two thirds of the time is communication
  // A peer computes as before and waits for rank 3 at every TP collective.
  EXPECT_GT(rank_entry(slow, 0)["peer_wait_s"].get<double>(), 0.5 * (t1 - t0));
  EXPECT_NEAR(rank_entry(slow, 0)["finish_s"].get<double>(), t1, 0.01 * t1);
}

TEST(Stragglers, SlowNicHurtsDataParallelJobsAndNotAOneNodeTensorParallelJob) {
  const std::vector<std::string> dp16 = {"--tensor-model-parallel-size", "1"};
  const double dp_base = simulate_json(tiny_job(dp16, 16))["iteration_time_s"].get<double>();
  const double dp_slow = simulate_json(tiny_job(dp16, 16, {"nic:node=1:0.5"}))["iteration_time_s"].get<double>();
  const std::vector<std::string> tp8 = {"--tensor-model-parallel-size", "8"};
  const double tp_base = simulate_json(tiny_job(tp8, 8))["iteration_time_s"].get<double>();
  const double tp_slow = simulate_json(tiny_job(tp8, 8, {"nic:node=0:0.5"}))["iteration_time_s"].get<double>();
  EXPECT_EQ(tp_slow, tp_base);          // one node: its NICs carry nothing
  EXPECT_GT(dp_slow, 1.01 * dp_base);   // the gradient all-reduce crosses the slow NICs
}

TEST(Stragglers, SlowUplinksMatterOnlyWhenNarrowerThanTheRing) {
  // 512 GPUs, two leaves of 32 nodes: each rail's ring crosses the spine once each way. A rail
  // uplink is 32 NICs wide, so at 0.1 it is still wider than the ring's NICs; at 0.01 it is not.
  const std::vector<std::string> dp512 = {"--tensor-model-parallel-size", "1", "--global-batch-size", "512"};
  const double base = simulate_json(tiny_job(dp512, 512))["iteration_time_s"].get<double>();
  const auto with = [&](const std::string& straggler) {
    return simulate_json(tiny_job(dp512, 512, {straggler}))["iteration_time_s"].get<double>();
  };
  const double tenth = with("uplink:leaf=0:0.1");
  const double hundredth = with("uplink:leaf=0:0.01");
  EXPECT_NEAR(tenth, base, 1e-3 * base);
  EXPECT_GT(hundredth, 1.1 * base);
}

TEST(Stragglers, LinksReachedRunAtTheirSpeed) {
  ClusterSpec cluster = testing::h100_cluster();
  cluster.nodes_per_leaf = 1;
  cluster.stragglers = {parse_straggler("nvlink:rank=1:0.5", "test"), parse_straggler("nic:rank=8:0.25", "test"),
                        parse_straggler("uplink:leaf=2:0.1", "test")};
  const std::vector<double> bw = decode(run_isolated([&] {
    Platform platform(cluster, 24);
    return encode({platform.route_bandwidth(0, 2), platform.route_bandwidth(0, 1), platform.route_bandwidth(0, 8),
                   platform.route_bandwidth(1, 9), platform.route_bandwidth(2, 18)});
  }));
  ASSERT_EQ(bw.size(), 5u);
  EXPECT_NEAR(bw[1], 0.5 * bw[0], 1e-6 * bw[0]);   // into GPU 1's NVLink
  EXPECT_GT(bw[3], bw[2]);                         // GPU 8's NIC (node 1 rail 0) is the narrow one
  EXPECT_GT(bw[2], 0);
  EXPECT_LT(bw[4], bw[3]);                         // node 2's leaf uplinks
}

TEST(Stragglers, FractionDrawsAreSeededAndDeterministic) {
  const ClusterSpec cluster = testing::h100_cluster();
  const std::vector<GpuPlace> places = place_gpus(cluster, 1024);
  const auto slow_nics = [&](const std::string& text) {
    ClusterSpec c = cluster;
    c.stragglers = {parse_straggler(text, "test")};
    const Degradation d = resolve_degradation(c, places);
    std::vector<int64_t> out;
    for (size_t u = 0; u < d.nic.size(); ++u)
      if (d.nic[u] < 1) out.push_back(static_cast<int64_t>(u));
    return out;
  };
  const std::vector<int64_t> a = slow_nics("nic:fraction=0.02:0.5:seed=1");
  EXPECT_EQ(a.size(), 20u);   // 2% of 128 nodes x 8 NICs, rounded
  EXPECT_EQ(a, slow_nics("nic:fraction=0.02:0.5:seed=1"));
  EXPECT_NE(a, slow_nics("nic:fraction=0.02:0.5:seed=2"));
  EXPECT_EQ(slow_nics("nic:fraction=0.0001:0.5:seed=1").size(), 1u);   // at least one
  EXPECT_EQ(draw_indices(10, 3, 7), draw_indices(10, 3, 7));
  EXPECT_EQ(draw_indices(5, 5, 3), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // A simulation with a drawn fraction repeats byte for byte.
  const Job job = tiny_job({"--tensor-model-parallel-size", "1"}, 16, {"gpu:fraction=0.2:0.7:seed=3"});
  EXPECT_EQ(simulate_json(job).dump(), simulate_json(job).dump());
}

TEST(Stragglers, NodesAndLeavesReachEveryUnitInside) {
  ClusterSpec cluster = testing::h100_cluster();
  cluster.nodes_per_leaf = 2;
  cluster.stragglers = {parse_straggler("gpu:node=1:0.5", "test"), parse_straggler("gpu:rank=9:0.5", "test"),
                        parse_straggler("nic:leaf=1:0.5", "test"), parse_straggler("uplink:rank=3:0.5", "test")};
  const Degradation d = resolve_degradation(cluster, place_gpus(cluster, 32));
  for (size_t g = 0; g < d.gpu.size(); ++g)
    EXPECT_DOUBLE_EQ(d.gpu[g], g == 9 ? 0.25 : (g >= 8 && g < 16 ? 0.5 : 1.0)) << g;   // speeds multiply
  for (size_t u = 0; u < d.nic.size(); ++u) EXPECT_DOUBLE_EQ(d.nic[u], u >= 16 ? 0.5 : 1.0) << u;  // nodes 2, 3
  for (size_t u = 0; u < d.uplink.size(); ++u) EXPECT_DOUBLE_EQ(d.uplink[u], u == 3 ? 0.5 : 1.0) << u;  // leaf 0 rail 3
  cluster.stragglers = {parse_straggler("nic:node=4:0.5", "--straggler")};
  try {
    resolve_degradation(cluster, place_gpus(cluster, 32));
    FAIL() << "node 4 of 4 accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("nic:node=4:0.5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::sim
