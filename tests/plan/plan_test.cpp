// The planner: its search space and rejections, its closed-form collectives against the
// simulator's, its analytic times against full simulations, and the ranking it returns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "backends/sim/collectives.h"
#include "backends/sim/platform.h"
#include "backends/sim/simulator.h"
#include "backends/sim/stack.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "plan/collective_cost.h"
#include "plan/planner.h"
#include "../sim/sim_test_support.h"

namespace tandem::plan {
namespace {

SearchSpace small_space(std::vector<std::string> extra = {}, int64_t gpus = 16, const std::string& hidden = "1024") {
  JobRequest r;
  r.megatron_flags = {"--num-layers", "8", "--hidden-size", hidden, "--num-attention-heads", "16", "--seq-length", "2048",
                      "--max-position-embeddings", "2048", "--vocab-size", "32000", "--global-batch-size", "64", "--bf16",
                      "--use-flash-attn"};
  r.megatron_flags.insert(r.megatron_flags.end(), extra.begin(), extra.end());
  r.cluster = "dgx-h100";
  r.gpus = gpus;
  SearchSpace s;
  s.base = assemble_job(r);
  s.gpus = gpus;
  s.pinned = pinned_flags(r.megatron_flags);
  return s;
}

TEST(KendallTau, CountsConcordantPairs) {
  EXPECT_DOUBLE_EQ(kendall_tau({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(kendall_tau({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  EXPECT_NEAR(kendall_tau({1, 2, 3, 4}, {1, 3, 2, 4}), 4.0 / 6.0, 1e-12);   // one of six pairs swapped
}

TEST(Space, EnumeratesDistinctCandidatesAndHonoursPins) {
  const SearchSpace free = small_space();
  const std::vector<Candidate> all = enumerate_candidates(free);
  std::set<std::string> keys;
  for (const Candidate& c : all) {
    EXPECT_TRUE(keys.insert(c.key()).second) << c.key();
    EXPECT_EQ(c.tp * c.pp * c.cp * c.dp, 16) << c.key();
    EXPECT_EQ(c.sequence_parallel, c.tp > 1) << c.key();
    EXPECT_EQ(c.schedule, c.vp > 1 ? "interleaved" : "1f1b") << c.key();
  }
  EXPECT_GT(all.size(), 500u);
  const SearchSpace pinned = small_space({"--micro-batch-size", "2", "--tensor-model-parallel-size", "4"});
  for (const Candidate& c : enumerate_candidates(pinned)) {
    EXPECT_EQ(c.mbs, 2);
    EXPECT_EQ(c.tp, 4);
  }
}

TEST(Space, RejectsWithTheReasonThatApplies) {
  const SearchSpace s = small_space();
  Job job;
  std::string detail;
  Candidate c;
  c.tp = 3, c.dp = 16 / 3;   // 16 heads do not split over 3
  EXPECT_EQ(check_candidate(s, c, job, detail).value_or(""), "tp-divides-heads");
  c = Candidate{};
  c.pp = 16, c.dp = 1;       // 8 layers over 16 stages
  EXPECT_EQ(check_candidate(s, c, job, detail).value_or(""), "pp-divides-layers");
  c = Candidate{};
  c.dp = 16, c.mbs = 8;      // 64 sequences = 16 x 8 x 0.5
  EXPECT_EQ(check_candidate(s, c, job, detail).value_or(""), "batch-divisible");
  c = Candidate{};
  c.pp = 4, c.vp = 1, c.dp = 4, c.mbs = 1;
  EXPECT_FALSE(check_candidate(s, c, job, detail).has_value()) << detail;
  EXPECT_EQ(job.parallel.pipeline_model_parallel_size, 4);
  EXPECT_EQ(job.training.num_microbatches, 16);
  c.vp = 2, c.schedule = "interleaved", c.mbs = 16;   // 1 microbatch for 4 stages
  const auto reason = check_candidate(s, c, job, detail);
  ASSERT_TRUE(reason.has_value());
  EXPECT_EQ(reason->rfind("schedule: ", 0), 0u) << *reason;
}

// The closed form costs a collective as the simulator's plan does when it runs alone.
TEST(CollectiveCost, AgreesWithTheSimulatorsIdealTime) {
  const ClusterSpec cluster = load_cluster("dgx-h100");
  const sim::Stack stack = sim::stack_for_cluster(cluster);
  struct Case {
    Collective kind;
    int64_t size, stride;
    double bytes;
  };
  const std::vector<Case> cases = {{Collective::AllGather, 8, 1, 64e6},      {Collective::ReduceScatter, 4, 1, 16e6},
                                   {Collective::AllReduce, 8, 8, 256e6},     {Collective::ReduceScatter, 8, 8, 256e6},
                                   {Collective::AllReduce, 16, 4, 128e6},    {Collective::AllGather, 32, 2, 64e6},
                                   {Collective::AllReduce, 2, 1, 1e3}};
  const std::vector<double> simulated = sim::testing::decode(sim::testing::run_isolated([&] {
    sim::PlatformOptions o;
    o.efficiency = &stack.efficiency;
    sim::Platform platform(cluster, 64, o);
    std::vector<double> out;
    for (const Case& c : cases) {
      sim::Group g{"g", {}};
      for (int64_t i = 0; i < c.size; ++i) g.gpus.push_back(i * c.stride);
      const sim::CollectiveKind kind = c.kind == Collective::AllReduce       ? sim::CollectiveKind::AllReduce
                                       : c.kind == Collective::ReduceScatter ? sim::CollectiveKind::ReduceScatter
                                                                             : sim::CollectiveKind::AllGather;
      out.push_back(sim::ideal_time(platform, kind, sim::Algorithm::Ring, g, c.bytes));
    }
    return sim::testing::encode(out);
  }));
  const LinkRates links = link_rates(cluster, stack.efficiency);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const double closed = collective_seconds(links, c.kind, c.size, c.stride, c.bytes);
    EXPECT_NEAR(closed / simulated[i], 1.0, 0.10)
        << "case " << i << ": size " << c.size << " stride " << c.stride << ": " << closed << " s vs " << simulated[i];
  }
}

// The analytic model is built from the simulator's costs: on a small job it lands near the full
// simulation for layouts of every kind (hidden 2048: TP 8 shards that are not only latency).
TEST(CostModel, TracksFullSimulationOnASmallJob) {
  const SearchSpace s = small_space({"--use-distributed-optimizer", "--overlap-grad-reduce"}, 16, "2048");
  std::vector<Candidate> picks;
  for (const Candidate& c : enumerate_candidates(s)) {
    const bool want = (c.tp == 1 && c.pp == 1 && c.cp == 1 && c.mbs == 2) || (c.tp == 4 && c.pp == 2 && c.vp == 2 && c.cp == 1 && c.mbs == 1) ||
                      (c.tp == 2 && c.pp == 1 && c.cp == 2 && c.mbs == 4) || (c.tp == 8 && c.pp == 2 && c.vp == 1 && c.cp == 1 && c.mbs == 1);
    if (want && c.recompute == RecomputeGranularity::None) picks.push_back(c);
  }
  ASSERT_EQ(picks.size(), 4u);
  Job job;
  std::string detail;
  ASSERT_FALSE(check_candidate(s, picks[0], job, detail).has_value()) << detail;
  CostModel model(job);
  for (const Candidate& c : picks) {
    ASSERT_FALSE(check_candidate(s, c, job, detail).has_value()) << c.key() << ": " << detail;
    const Estimate e = model.evaluate(s, c, job);
    const sim::SimResult r = sim::simulate_in_subprocess(job);
    EXPECT_NEAR(e.iteration_time_s / r.iteration_time_s, 1.0, 0.15) << c.key();
    EXPECT_NEAR(e.peak_memory_gib / r.peak_memory_gib, 1.0, 0.02) << c.key();
  }
}

TEST(Plan, RanksSimulatedCandidatesFirstAndExplainsRejections) {
  const SearchSpace s = small_space({"--use-distributed-optimizer"});
  PlanOptions o;
  o.top_k = 4;
  o.parallel = 2;
  const PlanResult r = run_plan(s, o);
  ASSERT_GE(r.ranked.size(), 4u);
  EXPECT_EQ(r.simulated, 4);
  for (size_t i = 0; i < r.ranked.size(); ++i) {
    EXPECT_EQ(r.ranked[i].simulated.has_value(), i < 4) << i;
    EXPECT_TRUE(r.ranked[i].candidate.distributed_optimizer);   // pinned
    if (i > 0 && i < 4)
      EXPECT_LE(r.ranked[i - 1].simulated->iteration_time_s, r.ranked[i].simulated->iteration_time_s);
    if (i > 4) EXPECT_LE(r.ranked[i - 1].analytic.iteration_time_s, r.ranked[i].analytic.iteration_time_s);
  }
  EXPECT_FALSE(r.ranked.front().simulated->oom);
  EXPECT_GE(r.kendall_tau, -1.0);
  EXPECT_LE(r.kendall_tau, 1.0);
  int64_t rejected = 0;
  for (const auto& [reason, count] : r.rejected) rejected += count;
  EXPECT_EQ(static_cast<int64_t>(r.ranked.size()) + rejected, r.enumerated);
  EXPECT_GT(r.rejected.count("tp-divides-heads") + r.rejected.count("batch-divisible"), 0u);
}

TEST(Plan, SaysWhyNothingRuns) {
  // 70B-class layers on 2 GPUs cannot hold their weights.
  JobRequest req;
  req.megatron_flags = {"--num-layers", "80", "--hidden-size", "8192", "--num-attention-heads", "64", "--seq-length",
                        "4096", "--max-position-embeddings", "4096", "--vocab-size", "32000", "--global-batch-size", "8",
                        "--bf16"};
  req.cluster = "dgx-h100";
  req.gpus = 2;
  SearchSpace s;
  s.base = assemble_job(req);
  s.gpus = 2;
  try {
    run_plan(s, PlanOptions{});
    FAIL() << "expected a UserError";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("memory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::plan
