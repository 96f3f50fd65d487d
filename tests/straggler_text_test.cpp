// Straggler descriptions (core/stragglers.h): the text syntax, the JSON forms, the canonical text,
// validation against the world, and how job files and --cluster combine them.
#include "core/stragglers.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/job.h"
#include "core/job_loader.h"

namespace tandem {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(StragglerText, ParsesEveryKindAndScope) {
  const Straggler a = parse_straggler("gpu:rank=5:0.5", "--straggler");
  EXPECT_EQ(a.kind, StragglerKind::Gpu);
  EXPECT_EQ(a.scope, StragglerScope::Ranks);
  EXPECT_EQ(a.indices, (std::vector<int64_t>{5}));
  EXPECT_DOUBLE_EQ(a.speed, 0.5);
  const Straggler b = parse_straggler("nic:nodes=7,0,2-4,3:0.25", "--straggler");
  EXPECT_EQ(b.kind, StragglerKind::Nic);
  EXPECT_EQ(b.scope, StragglerScope::Nodes);
  EXPECT_EQ(b.indices, (std::vector<int64_t>{0, 2, 3, 4, 7}));
  EXPECT_EQ(to_text(b), "nic:node=0,2-4,7:0.25");
  const Straggler c = parse_straggler("uplink:fraction=0.02:0.5:seed=9", "--straggler");
  EXPECT_EQ(c.scope, StragglerScope::Fraction);
  EXPECT_DOUBLE_EQ(c.fraction, 0.02);
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(to_text(c), "uplink:fraction=0.02:0.5:seed=9");
  EXPECT_EQ(parse_straggler("nvlink:leaf=1:1", "x").kind, StragglerKind::Nvlink);
  EXPECT_EQ(to_text(parse_straggler(to_text(b), "x")), to_text(b));   // the canonical text reads back
  EXPECT_TRUE(parse_straggler_list("none", "x").empty());
  EXPECT_EQ(parse_straggler_list("gpu:rank=1:0.5; nic:node=0:0.5", "x").size(), 2u);
}

TEST(StragglerText, ErrorsNameTheStragglerAndTheBadPiece) {
  const auto message = [](const std::string& text) {
    return error_of([&] { parse_straggler(text, "--straggler"); });
  };
  EXPECT_NE(message("gpu:rank=5:1.5").find("--straggler gpu:rank=5:1.5: speed = 1.5"), std::string::npos);
  EXPECT_NE(message("gpu:rank=5:-1").find("speed = -1: must be in (0, 1]"), std::string::npos);
  EXPECT_NE(message("nic:fraction=0:0.5").find("fraction = 0"), std::string::npos);
  EXPECT_NE(message("tpu:rank=1:0.5").find("kind = 'tpu'"), std::string::npos);
  EXPECT_NE(message("gpu:rank=7-3:0.5").find("rank = 7-3"), std::string::npos);
  EXPECT_NE(message("gpu:rank=1:0.5:seed=2").find("only goes with fraction"), std::string::npos);
  EXPECT_NE(message("gpu:0.5").find("KIND:WHERE:SPEED"), std::string::npos);
}

TEST(StragglerText, JsonObjectsAndStrings) {
  using nlohmann::json;
  const Straggler a = straggler_from_json(json::parse(R"({"kind": "gpu", "ranks": [3, 1], "speed": 0.8})"), "s[0]");
  EXPECT_EQ(to_text(a), "gpu:rank=1,3:0.8");
  const Straggler b =
      straggler_from_json(json::parse(R"({"kind": "nic", "fraction": 0.1, "speed": 0.5, "seed": 4})"), "s");
  EXPECT_EQ(to_text(b), "nic:fraction=0.1:0.5:seed=4");
  EXPECT_EQ(to_text(straggler_from_json(json("uplink:leaf=2:0.5"), "s")), "uplink:leaf=2:0.5");
  EXPECT_NE(error_of([] { straggler_from_json(json::parse(R"({"kind": "gpu", "speed": 0.5})"), "s[1]"); })
                .find("s[1]: give exactly one of ranks"), std::string::npos);
  const json extra = json::parse(R"({"kind": "gpu", "nodes": [0], "speed": 0.5, "rate": 1})");
  EXPECT_NE(error_of([&] { straggler_from_json(extra, "s[2]"); }).find("s[2].rate: unknown field"), std::string::npos);
}

TEST(StragglerText, IndicesMustLieInsideTheJob) {
  ClusterSpec c;
  c.gpus_per_node = 8;
  c.nodes_per_leaf = 2;
  c.stragglers = {parse_straggler("gpu:rank=31:0.5", "--straggler"),
                  parse_straggler("nic:node=3:0.5", "--straggler"),
                  parse_straggler("uplink:leaf=1:0.5", "--straggler")};
  EXPECT_EQ(error_of([&] { validate_stragglers(c, 32); }), "");
  EXPECT_EQ(cluster_leaves(c, 32), 2);
  EXPECT_NE(error_of([&] { validate_stragglers(c, 24); }).find("--straggler gpu:rank=31:0.5: rank = 31"),
            std::string::npos);
  c.stragglers.erase(c.stragglers.begin());
  EXPECT_NE(error_of([&] { validate_stragglers(c, 24); }).find("node = 3: out of range: the job has 3 nodes"),
            std::string::npos);
}

TEST(StragglerText, CommandLineStragglersAddToTheJobFilesAndSurviveAnotherCluster) {
  const std::string path = std::string(TANDEM_BINARY_DIR) + "/straggler_text_test_job.json";
  std::ofstream(path) << R"({"model": "llama3-8b", "gpus": 16, "cluster": "dgx-a100",
                             "stragglers": ["gpu:rank=1:0.5"]})";
  JobRequest request;
  request.config_file = path;
  request.cluster = "dgx-h100";
  request.stragglers = {"gpu:rank=3:0.5", "nic:fraction=0.1:0.5:seed=2"};
  const Job job = load_job(request);
  EXPECT_EQ(job.cluster.name, "dgx-h100");
  EXPECT_EQ(job_to_json(job)["stragglers"],
            nlohmann::json({"gpu:rank=1:0.5", "gpu:rank=3:0.5", "nic:fraction=0.1:0.5:seed=2"}));
  request.stragglers = {"gpu:rank=16:0.5"};
  EXPECT_NE(error_of([&] { load_job(request); }).find("--straggler gpu:rank=16:0.5: rank = 16"), std::string::npos);
}

}  // namespace
}  // namespace tandem
