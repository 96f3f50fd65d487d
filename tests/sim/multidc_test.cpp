// Multi-datacenter placement (backends/sim/dc_placement.h): the rank -> GPU permutation puts the
// chosen dimension across datacenters, the WAN bytes of PP-across and DP-across jobs match their
// analytic values (activations at the cut; the hierarchical reduction's shards), and the ranking
// of the two follows the physics of a narrow and of a distant WAN.
#include "backends/sim/dc_placement.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/collectives.h"
#include "backends/sim/platform.h"
#include "backends/sim/simulator.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "program/program.h"
#include "tests/sim/sim_test_support.h"

namespace tandem::sim {
namespace {

using nlohmann::json;
using testing::run_isolated;

// 16 H100 (2 nodes) on two datacenters of one node each: TP 2, PP 2, DP 4, 4 microbatches of one
// 1,024-token sequence; h = 1,024, bf16.
Job two_dc_job(const std::string& placement, double wan_gbit_s = 400, double wan_latency_ms = 1,
               const std::vector<std::string>& extra = {}) {
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 16;
  request.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16",
                            "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                            "--dc-placement", placement};
  request.megatron_flags.insert(request.megatron_flags.end(), extra.begin(), extra.end());
  Job job = load_job(request);
  job.cluster.datacenters = 2;
  job.cluster.wan_bandwidth = wan_gbit_s * 1e9 / 8;  // bytes/s
  job.cluster.wan_latency = wan_latency_ms * 1e-3;   // s
  return job;
}

json simulate_json(const Job& job) {
  return json::parse(run_isolated([&] { return result_to_json(simulate(job)).dump(); }));
}

// The datacenter of each rank under the job's placement.
std::vector<int64_t> dc_of_rank(const Job& job, const ParallelGrid& grid) {
  const std::vector<int64_t> gpu = gpu_of_rank(job, grid);
  const std::vector<GpuPlace> places = place_gpus(job.cluster, grid.world_size());
  std::vector<int64_t> dc;
  for (int64_t g : gpu) dc.push_back(places[static_cast<size_t>(g)].dc);
  return dc;
}

// Datacenters each group of `kind` spans (one count per group).
std::vector<size_t> spans(const Job& job, ParallelGroup kind) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const std::vector<int64_t> dc = dc_of_rank(job, grid);
  std::vector<size_t> out;
  for (const auto& group : grid.groups(kind)) {
    std::set<int64_t> dcs;
    for (int64_t r : group) dcs.insert(dc[static_cast<size_t>(r)]);
    out.push_back(dcs.size());
  }
  return out;
}

bool all_equal(const std::vector<size_t>& values, size_t want) {
  for (size_t v : values)
    if (v != want) return false;
  return !values.empty();
}

TEST(DcPlacement, PutsExactlyTheChosenDimensionAcrossDatacenters) {
  const Job pp = two_dc_job("pp");
  EXPECT_TRUE(all_equal(spans(pp, ParallelGroup::Pp), 2));
  EXPECT_TRUE(all_equal(spans(pp, ParallelGroup::Dp), 1));
  EXPECT_TRUE(all_equal(spans(pp, ParallelGroup::Tp), 1));
  const Job dp = two_dc_job("dp");
  EXPECT_TRUE(all_equal(spans(dp, ParallelGroup::Dp), 2));
  EXPECT_TRUE(all_equal(spans(dp, ParallelGroup::Pp), 1));
  EXPECT_TRUE(all_equal(spans(dp, ParallelGroup::Tp), 1));
  // EP 4 over TP 1, PP 2, DP 8: expert groups cross, pipelines and TP groups do not.
  const Job ep = two_dc_job("ep", 400, 1,
                            {"--tensor-model-parallel-size", "1", "--num-experts", "8",
                             "--expert-model-parallel-size", "4", "--moe-token-dispatcher-type", "alltoall"});
  EXPECT_TRUE(all_equal(spans(ep, ParallelGroup::Ep), 2));
  EXPECT_TRUE(all_equal(spans(ep, ParallelGroup::Pp), 1));
  // Each datacenter keeps whole TP groups on one node: ranks 2k, 2k+1 on one node.
  const ParallelGrid grid = ParallelGrid::from_job(dp);
  const std::vector<int64_t> gpu = gpu_of_rank(dp, grid);
  for (size_t r = 0; r < gpu.size(); r += 2) EXPECT_EQ(gpu[r] / 8, gpu[r + 1] / 8) << "rank " << r;
  // dp: replicas dp 0, 1 in datacenter 0 and 2, 3 in datacenter 1 (rank = tp + 2 dp + 8 pp).
  EXPECT_EQ(dc_of_rank(dp, grid), (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1}));
}

TEST(DcPlacement, RankOrderAndOneDatacenterAreTheIdentity) {
  const Job job = two_dc_job("rank-order");
  EXPECT_TRUE(is_identity(gpu_of_rank(job, ParallelGrid::from_job(job))));
  Job one_dc = two_dc_job("dp");
  one_dc.cluster.datacenters = 1;
  EXPECT_TRUE(is_identity(gpu_of_rank(one_dc, ParallelGrid::from_job(one_dc))));
  // With the default order (pp slowest), cutting the pipeline is what rank order already does.
  const Job pp = two_dc_job("pp");
  EXPECT_TRUE(is_identity(gpu_of_rank(pp, ParallelGrid::from_job(pp))));
}

TEST(DcPlacement, BadInputsNameTheField) {
  const auto message = [](const Job& job) {
    try {
      gpu_of_rank(job, ParallelGrid::from_job(job));
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string pp = message(two_dc_job("pp", 400, 1, {"--pipeline-model-parallel-size", "1"}));
  EXPECT_NE(pp.find("dc_placement = pp"), std::string::npos) << pp;
  EXPECT_NE(pp.find("PP = 1"), std::string::npos) << pp;
  const std::string ep = message(two_dc_job("ep"));
  EXPECT_NE(ep.find("dc_placement = ep"), std::string::npos) << ep;
  JobRequest request;   // 24 GPUs = 3 nodes, TP 2, DP 12
  request.cluster = "dgx-h100";
  request.gpus = 24;
  request.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "24", "--bf16",
                            "--tensor-model-parallel-size", "2", "--dc-placement", "dp"};
  Job three_nodes = load_job(request);
  three_nodes.cluster.datacenters = 2;
  three_nodes.cluster.wan_bandwidth = 50e9;
  const std::string nodes = message(three_nodes);   // DP 12 divides, but 3 nodes do not split in 2
  EXPECT_NE(nodes.find("whole nodes"), std::string::npos) << nodes;
}

// The bytes of a job's collectives on groups of `kinds` spanning datacenters, sent across by the
// hierarchical algorithm: per member 2(D-1)/D x bytes / q for an all-reduce, (D-1)/D x bytes / q
// for a reduce-scatter or all-gather (q members per datacenter).
double hierarchical_wan_bytes(const Job& job, const std::set<ParallelGroup>& kinds) {
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  const std::vector<int64_t> dc = dc_of_rank(job, grid);
  const double d = static_cast<double>(job.cluster.datacenters);
  double total = 0;
  for (int64_t rank = 0; rank < grid.world_size(); ++rank) {
    const RankProgram program = lower_rank(job, grid, schedule, rank);
    for (const Instruction& x : program.instructions) {
      if (!is_collective(x.kind) || x.kind == OpKind::AllToAllV || !kinds.count(x.group)) continue;
      const std::vector<int64_t> members = grid.group_of(rank, x.group).ranks;
      double here = 0;
      std::set<int64_t> dcs;
      for (int64_t m : members) {
        dcs.insert(dc[static_cast<size_t>(m)]);
        here += dc[static_cast<size_t>(m)] == dc[static_cast<size_t>(rank)] ? 1 : 0;
      }
      if (dcs.size() < 2) continue;
      const double factor = (x.kind == OpKind::AllReduce ? 2 : 1) * (d - 1) / d / here;
      total += factor * x.bytes;
    }
  }
  return total;
}

// Bytes of a plan's flows between datacenters, per direction [from][to].
std::vector<double> wan_bytes_of(const Platform& platform, const Group& group, const FlowPlan& plan) {
  std::vector<double> out(2, 0.0);
  for (const Flow& f : plan.flows) {
    const int64_t a = platform.place(group.gpus[static_cast<size_t>(f.src)]).dc;
    const int64_t b = platform.place(group.gpus[static_cast<size_t>(f.dst)]).dc;
    if (a != b) out[static_cast<size_t>(a)] += f.bytes;
  }
  return out;
}

TEST(MultiDatacenter, HierarchicalPlanSendsTheShardsAcross) {
  // 32 GPUs, 2 nodes per datacenter; a group of 8 with 4 members (2 per node) in each datacenter.
  // All-reduce of S = 1 GB: each member sends 2(2-1)/2 x S / 4 across, S per direction; a flat
  // ring's 2 channels each cross twice with 2(8-1)/8 x S / 2: 1.75 S per direction, and it pays a
  // WAN latency per inter-node step (2 x 4 nodes) instead of 2(D-1) = 2.
  const std::string out = run_isolated([] {
    ClusterSpec c = testing::h100_cluster();
    c.datacenters = 2;
    c.wan_bandwidth = 50e9;  // bytes/s
    c.wan_latency = 10e-3;   // s
    Platform platform(c, 32);
    const Group group{"dp", {0, 1, 8, 9, 16, 17, 24, 25}};
    std::vector<double> v;
    for (Algorithm a : {Algorithm::DatacenterHierarchical, Algorithm::Ring}) {
      const FlowPlan ar = plan_collective(platform, CollectiveKind::AllReduce, a, group, 1e9);
      const FlowPlan rs = plan_collective(platform, CollectiveKind::ReduceScatter, a, group, 1e9);
      for (double b : wan_bytes_of(platform, group, ar)) v.push_back(b);
      v.push_back(wan_bytes_of(platform, group, rs)[0]);
      v.push_back(ar.latency);
    }
    return testing::encode(v);
  });
  const std::vector<double> v = testing::decode(out);
  ASSERT_EQ(v.size(), 8u);
  EXPECT_DOUBLE_EQ(v[0], 1e9);         // hierarchical all-reduce, dc0 -> dc1
  EXPECT_DOUBLE_EQ(v[1], 1e9);         // dc1 -> dc0
  EXPECT_DOUBLE_EQ(v[2], 0.5e9);       // reduce-scatter: (2-1)/2 x S / 4 x 4 members
  EXPECT_DOUBLE_EQ(v[4], 1.75e9);      // flat ring all-reduce, dc0 -> dc1
  EXPECT_GT(v[3], 2 * 10e-3);          // two WAN steps...
  EXPECT_LT(v[3], 3 * 10e-3);
  EXPECT_GT(v[7], 8 * 10e-3);          // ...against eight
}

TEST(MultiDatacenter, PipelineAcrossCarriesTheActivationsAtTheCut) {
  // Untied embeddings: the traffic between the stages is the boundary's activations and
  // gradients. Per message n h e / TP = 1,024 x 1,024 x 2 / 2 = 1 MiB; per direction
  // 4 microbatches x (TP 2 x DP 4) pipelines' ranks x 1 MiB = 33,554,432 bytes. Besides, the
  // gradient norm's fp32 scalar is all-reduced over each model-parallel group (TP x PP = 4 ranks
  // on 2 nodes, one per datacenter) by a flat ring of 2 channels: each member sends
  // 2(4-1)/4 x 4 / 2 = 3 bytes to the other node; 4 members x 4 groups = 48 bytes.
  const Job untied = two_dc_job("pp", 400, 1, {"--untie-embeddings-and-output-weights"});
  const json r = simulate_json(untied);
  const double per_direction = 4.0 * 8 * 1024 * 1024 * 2 / 2;
  EXPECT_EQ(r.at("dc_placement"), "pp");
  EXPECT_DOUBLE_EQ(r.at("wan_bytes_by_direction").at("0->1").get<double>(), per_direction + 24);
  EXPECT_DOUBLE_EQ(r.at("wan_bytes_by_direction").at("1->0").get<double>(), per_direction + 24);
  EXPECT_DOUBLE_EQ(r.at("wan_bytes").get<double>(), 2 * per_direction + 48);
  EXPECT_GT(r.at("wan_exposed_s").get<double>(), 0);
  // Tied embeddings add the first and last stages' embedding all-reduce (a group of one member
  // per datacenter: each sends its whole gradient across).
  const Job tied = two_dc_job("pp");
  const json t = simulate_json(tied);
  const double embedding = hierarchical_wan_bytes(tied, {ParallelGroup::Embedding});
  EXPECT_GT(embedding, 0);
  EXPECT_NEAR(t.at("wan_bytes").get<double>(), 2 * per_direction + 48 + embedding, 1e-9 * embedding);
}

TEST(MultiDatacenter, DataParallelAcrossReducesHierarchically) {
  // DP 4 = 2 replicas per datacenter: each gradient all-reduce sends 2(2-1)/2 x G / 2 = G / 2 per
  // member across, the whole gradient once per direction per DP group (a flat ring: twice).
  for (const bool distributed : {false, true}) {
    const Job job = two_dc_job("dp", 400, 1,
                               distributed ? std::vector<std::string>{"--use-distributed-optimizer"}
                                           : std::vector<std::string>{});
    const json r = simulate_json(job);
    const double want = hierarchical_wan_bytes(job, {ParallelGroup::Dp, ParallelGroup::DpCp, ParallelGroup::TpDp,
                                                     ParallelGroup::TpDpCp, ParallelGroup::ExpertDp});
    EXPECT_GT(want, 0);
    EXPECT_NEAR(r.at("wan_bytes").get<double>(), want, 1e-9 * want) << "distributed optimizer " << distributed;
    EXPECT_DOUBLE_EQ(r.at("wan_bytes_by_direction").at("0->1").get<double>(),
                     r.at("wan_bytes_by_direction").at("1->0").get<double>());
  }
}

TEST(MultiDatacenter, RankingFollowsBytesOnANarrowWanAndLatencyOnADistantOne) {
  // Untied embeddings (as Llama's): with tied ones PP-across also all-reduces the first and last
  // stages' embedding gradients across (0.5 GB per direction here, more than DP-across sends).
  const std::vector<std::string> untied = {"--untie-embeddings-and-output-weights"};
  // Narrow WAN (1 Gb/s, 1 ms): PP-across sends 67 MB per iteration, DP-across the whole fp32
  // gradient (472 MB per direction); at 125 MB/s the bytes decide (measured: PP-across 0.35 s,
  // DP-across 3.78 s = 472 MB / 125 MB/s).
  const json pp_narrow = simulate_json(two_dc_job("pp", 1, 1, untied));
  const json dp_narrow = simulate_json(two_dc_job("dp", 1, 1, untied));
  EXPECT_LT(pp_narrow.at("wan_bytes").get<double>(), dp_narrow.at("wan_bytes").get<double>());
  EXPECT_LT(pp_narrow.at("iteration_time_s").get<double>(), dp_narrow.at("iteration_time_s").get<double>());
  // DP-across cannot beat its WAN bytes through one direction of the link.
  EXPECT_GT(dp_narrow.at("iteration_time_s").get<double>(),
            dp_narrow.at("wan_bytes_by_direction").at("0->1").get<double>() / (1e9 / 8));
  // Distant WAN (400 Gb/s, 50 ms): the latency decides. With one stage per datacenter and
  // rendezvous sends, stage 1 gets microbatch k + 2 only after stage 0 got k's gradient back, so
  // PP-across pays about a WAN latency per microbatch (4 here), and the gradient norm's
  // all-reduce over the model-parallel group crosses too (a flat ring: 4 inter-node steps);
  // DP-across pays 2(D-1) = 2 WAN steps per gradient all-reduce (one bucket here). Measured:
  // PP-across 0.457 s (0.25 s of pipeline transfers, 0.20 s of gradient norm), DP-across 0.115 s.
  const json pp_far = simulate_json(two_dc_job("pp", 400, 50, untied));
  const json dp_far = simulate_json(two_dc_job("dp", 400, 50, untied));
  const json pp_near = simulate_json(two_dc_job("pp", 400, 1, untied));
  const json dp_near = simulate_json(two_dc_job("dp", 400, 1, untied));
  const double pp_cost = pp_far.at("iteration_time_s").get<double>() - pp_near.at("iteration_time_s").get<double>();
  const double dp_cost = dp_far.at("iteration_time_s").get<double>() - dp_near.at("iteration_time_s").get<double>();
  EXPECT_GT(pp_far.at("iteration_time_s").get<double>(), 4 * 0.05);  // a WAN latency per microbatch
  EXPECT_GT(dp_far.at("iteration_time_s").get<double>(), 2 * 0.05);  // at least one all-reduce's 2 WAN steps
  EXPECT_GT(pp_cost, dp_cost);
  EXPECT_GT(pp_far.at("wan_exposed_s").get<double>(), dp_far.at("wan_exposed_s").get<double>());
  // The WAN cost against the same job on an ideal WAN: at least the latencies on the critical
  // path, and it ranks the placements as the iteration times do. (The exposed WAN communication
  // can exceed it slightly: it also holds what those operations cost on an ideal WAN, e.g. their
  // rings inside each datacenter.)
  for (const json* r : {&pp_far, &dp_far, &pp_narrow, &dp_narrow}) {
    EXPECT_NEAR(r->at("wan_cost_s").get<double>(),
                r->at("iteration_time_s").get<double>() - r->at("wan_ideal_iteration_time_s").get<double>(), 1e-12);
    EXPECT_GT(r->at("wan_ideal_iteration_time_s").get<double>(), 0);
  }
  EXPECT_GT(pp_far.at("wan_cost_s").get<double>(), 4 * 0.05);
  EXPECT_GT(dp_far.at("wan_cost_s").get<double>(), 2 * 0.05);
  EXPECT_GT(pp_far.at("wan_cost_s").get<double>(), dp_far.at("wan_cost_s").get<double>());
  EXPECT_LT(pp_narrow.at("wan_cost_s").get<double>(), dp_narrow.at("wan_cost_s").get<double>());
}

TEST(MultiDatacenter, SymmetryReductionMatchesPlayingEveryRank) {
  const std::vector<std::string> moe = {"--tensor-model-parallel-size", "1", "--num-experts", "8",
                                        "--expert-model-parallel-size", "4", "--moe-token-dispatcher-type", "alltoall"};
  for (const std::string placement : {"pp", "dp", "ep"}) {
    const Job job = two_dc_job(placement, 100, 10, placement == "ep" ? moe : std::vector<std::string>{});
    SimOptions all;
    all.all_ranks = true;
    const json reduced = simulate_json(job);
    const json faithful = json::parse(run_isolated([&] { return result_to_json(simulate(job, all)).dump(); }));
    const double t = faithful.at("iteration_time_s").get<double>();
    // EP across: the dense DP groups span both datacenters; the reduced run plays them one-sided,
    // their unplayed members' WAN flows as ghosts started with the played ones (executor.h), an
    // approximation worth 5 us of 0.32 s here.
    EXPECT_NEAR(reduced.at("iteration_time_s").get<double>(), t, (placement == "ep" ? 1e-4 : 1e-9) * t) << placement;
    EXPECT_DOUBLE_EQ(reduced.at("wan_bytes").get<double>(), faithful.at("wan_bytes").get<double>()) << placement;
  }
  // EP across: the token all-to-alls cross the WAN, so expert-parallel communication grows over
  // the rank order (which cuts the pipeline here) and the WAN carries more (untied embeddings:
  // 1.2 GB against the cut's 67 MB of activations).
  std::vector<std::string> untied = moe;
  untied.push_back("--untie-embeddings-and-output-weights");
  const json ep = simulate_json(two_dc_job("ep", 100, 10, untied));
  const json pp = simulate_json(two_dc_job("rank-order", 100, 10, untied));
  EXPECT_GT(ep.at("breakdown").at("ep_comm").get<double>(), 10 * pp.at("breakdown").at("ep_comm").get<double>());
  EXPECT_GT(ep.at("wan_bytes").get<double>(), pp.at("wan_bytes").get<double>());
}

TEST(MultiDatacenter, ReplicasCutDifferentlyAreAllPlayed) {
  // 48 GPUs (6 nodes, 3 per datacenter), TP 8, PP 3, DP 2 in rank order: replica 0 has stages
  // 0, 1 in datacenter 0 and stage 2 in 1, replica 1 stage 0 in 0 and stages 1, 2 in 1. Replica 1
  // is no image of replica 0, so every rank is played (before this check the reduced run gave
  // 0.211857626 s against 0.211824512 s with every rank).
  JobRequest request;
  request.cluster = "dgx-h100";
  request.gpus = 48;
  request.megatron_flags = {"--num-layers", "6", "--hidden-size", "1024", "--num-attention-heads", "16",
                            "--seq-length", "1024", "--max-position-embeddings", "1024", "--vocab-size", "32000",
                            "--micro-batch-size", "1", "--global-batch-size", "16", "--bf16",
                            "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "3"};
  Job job = load_job(request);
  job.cluster.datacenters = 2;
  job.cluster.wan_bandwidth = 12.5e9;  // bytes/s
  job.cluster.wan_latency = 10e-3;     // s
  SimOptions all;
  all.all_ranks = true;
  const json reduced = simulate_json(job);
  const json faithful = json::parse(run_isolated([&] { return result_to_json(simulate(job, all)).dump(); }));
  EXPECT_FALSE(reduced.at("symmetry_reduced").get<bool>());
  EXPECT_EQ(reduced.at("ranks_played").get<int64_t>(), 48);
  EXPECT_EQ(reduced.at("iteration_time_s").get<double>(), faithful.at("iteration_time_s").get<double>());
  bool noted = false;
  for (const auto& note : reduced.at("notes")) noted = noted || note.get<std::string>().find("cuts data-parallel replica") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(MultiDatacenter, RankOrderReproducesTheFiguresFromBeforePlacements) {
  // This job's figures as the simulator gave them before --dc-placement and the hierarchical
  // reduction existed (commit c784dc5, same job on tests/cli/fixtures/two-dc-h100.json): rank
  // order cuts the pipelines here and no data-parallel group spans the datacenters, so nothing
  // may change, by the default or by naming rank-order.
  for (const std::string placement : {"rank-order", "pp"}) {
    const json r = simulate_json(two_dc_job(placement, 100, 10));
    EXPECT_DOUBLE_EQ(r.at("iteration_time_s").get<double>(), 0.16150229679252259) << placement;
    EXPECT_DOUBLE_EQ(r.at("breakdown").at("pp_comm").get<double>(), 0.053425443199999999) << placement;
    EXPECT_DOUBLE_EQ(r.at("breakdown").at("optimizer").get<double>(), 0.040704071679438111) << placement;
    EXPECT_EQ(r.at("critical_rank").get<int64_t>(), 0) << placement;
  }
}

TEST(MultiDatacenter, OutputIsByteIdenticalAndSingleDatacenterJobsHaveNoWanKeys) {
  const Job job = two_dc_job("dp", 100, 10);
  EXPECT_EQ(simulate_json(job).dump(), simulate_json(job).dump());
  Job one = two_dc_job("rank-order");
  one.cluster.datacenters = 1;
  const json r = simulate_json(one);
  EXPECT_FALSE(r.contains("wan_bytes"));
  EXPECT_FALSE(r.contains("dc_placement"));
  // The result survives the JSON round trip (simulate_in_subprocess) with its WAN keys.
  const json back = result_to_json(result_from_json(simulate_json(job)));
  EXPECT_EQ(back.dump(), simulate_json(job).dump());
}

}  // namespace
}  // namespace tandem::sim
