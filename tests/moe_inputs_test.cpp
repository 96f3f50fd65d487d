// Frontier-scale MoE inputs: multi-latent attention sizes, group-limited (node-limited) routing
// and multi-token prediction are validated when a job resolves, each error naming the Megatron
// flag and its value; what Megatron accepts, tandem accepts.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/job_loader.h"

namespace tandem {
namespace {

// DeepSeek-V3 as published (2,048 H800, PP 16, EP 64), with `flags` on top.
Job deepseek(std::vector<std::string> flags) {
  JobRequest r;
  r.config_file = "deepseek-v3";
  r.megatron_flags = std::move(flags);
  return load_job(r);
}

// A small MoE job on one 8-GPU node: 16 experts, top-2, EP 8.
Job small_moe(std::vector<std::string> extra, int64_t gpus = 8) {
  JobRequest r;
  r.megatron_flags = {"--num-layers", "4", "--hidden-size", "1024", "--num-attention-heads", "16", "--seq-length",
                      "1024", "--position-embedding-type", "rope", "--num-experts", "16", "--moe-router-topk", "2",
                      "--expert-model-parallel-size", "8"};
  r.megatron_flags.insert(r.megatron_flags.end(), extra.begin(), extra.end());
  r.gpus = gpus;
  return load_job(r);
}

// The message of the UserError `make` throws ("" if it throws none).
template <class F>
std::string error_of(F make) {
  try {
    make();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::string& message, const std::string& flag, const std::string& value) {
  EXPECT_NE(message.find(flag), std::string::npos) << "message lacks '" << flag << "': " << message;
  EXPECT_NE(message.find(value), std::string::npos) << "message lacks '" << value << "': " << message;
}

bool has_note(const Job& j, const std::string& text) {
  return std::any_of(j.notes.begin(), j.notes.end(), [&](const std::string& n) { return n.find(text) != std::string::npos; });
}

TEST(MoeInputs, PublishedDeepSeekV3Resolves) {
  const Job j = deepseek({});
  EXPECT_EQ(j.model.moe_router_num_groups, 8);
  EXPECT_EQ(j.model.moe_router_group_topk, 4);
  // EP 64 on 8-GPU nodes: 8 nodes, one group per node, so each token reaches at most 4 nodes.
  EXPECT_TRUE(has_note(j, "a token reaches at most 4 nodes")) << "no node-limit note";
}

TEST(MoeInputs, MlaHeadDimsThatCannotFormTheLayer) {
  expect_error(error_of([] { deepseek({"--qk-pos-emb-head-dim", "63"}); }), "--qk-pos-emb-head-dim", "63");
  expect_error(error_of([] { deepseek({"--qk-pos-emb-head-dim", "0"}); }), "--qk-pos-emb-head-dim", "= 0");
  expect_error(error_of([] { deepseek({"--q-lora-rank", "8192"}); }), "--q-lora-rank", "8192");
  expect_error(error_of([] { deepseek({"--kv-lora-rank", "7200"}); }), "--kv-lora-rank", "7200");
  expect_error(error_of([] { deepseek({"--kv-lora-rank", "0"}); }), "--kv-lora-rank", "0");
  expect_error(error_of([] { deepseek({"--qk-head-dim", "-128"}); }), "--qk-head-dim", "-128");
  expect_error(error_of([] { deepseek({"--v-head-dim", "0"}); }), "--v-head-dim", "0");
}

TEST(MoeInputs, MlaSizesMegatronAcceptsStayAccepted) {
  // No query compression (DeepSeek-V2-Lite), no RoPE part without RoPE positions, and unusual
  // but well-formed head sizes.
  EXPECT_EQ(deepseek({"--q-lora-rank", "0"}).model.q_lora_rank, 0);
  EXPECT_EQ(deepseek({"--qk-pos-emb-head-dim", "0", "--position-embedding-type", "none"}).model.qk_pos_emb_head_dim, 0);
  EXPECT_EQ(deepseek({"--qk-head-dim", "96", "--v-head-dim", "160", "--kv-lora-rank", "7168"}).model.v_head_dim, 160);
}

TEST(MoeInputs, GroupLimitedRoutingFollowsMegatron) {
  expect_error(error_of([] { deepseek({"--moe-router-num-groups", "7"}); }), "--moe-router-num-groups", "7");
  expect_error(error_of([] { deepseek({"--moe-router-group-topk", "9"}); }), "--moe-router-group-topk", "9");
  expect_error(error_of([] { small_moe({"--moe-router-group-topk", "2"}); }), "--moe-router-num-groups",
               "--moe-router-group-topk = 2");
  // 16 groups of one expert, one group per token: top-2 cannot be reached.
  expect_error(error_of([] { small_moe({"--moe-router-num-groups", "16", "--moe-router-group-topk", "1"}); }),
               "--moe-router-topk = 2", "--moe-router-group-topk = 1");
  expect_error(error_of([] {
                 JobRequest r;
                 r.config_file = "llama3-8b";
                 r.megatron_flags = {"--moe-router-num-groups", "4", "--moe-router-group-topk", "2"};
                 load_job(r);
               }),
               "--moe-router-num-groups", "--num-experts");
  // Exactly reachable: 2 groups of 8 experts picked, top-16.
  EXPECT_EQ(small_moe({"--moe-router-num-groups", "2", "--moe-router-group-topk", "2", "--moe-router-topk", "16"})
                .model.moe_router_topk, 16);
}

TEST(MoeInputs, GroupsAgainstNodesAreReportedNotRejected) {
  // DeepSeek-V2's device-limited routing has one group per device: more groups than nodes is valid.
  EXPECT_TRUE(has_note(deepseek({"--moe-router-num-groups", "64"}), "a token reaches at most 4 nodes"));
  // 4 groups over 8 nodes: a group spans two nodes, the group limit no longer bounds nodes.
  EXPECT_TRUE(has_note(deepseek({"--moe-router-num-groups", "4", "--moe-router-group-topk", "2"}),
                       "groups straddle nodes"));
  // One node: nothing to say.
  EXPECT_FALSE(has_note(small_moe({"--moe-router-num-groups", "4", "--moe-router-group-topk", "2"}), "nodes of an"));
}

TEST(MoeInputs, MultiTokenPrediction) {
  expect_error(error_of([] { deepseek({"--mtp-num-layers", "-1"}); }), "--mtp-num-layers", "-1");
  expect_error(error_of([] { deepseek({"--mtp-num-layers", "1", "--position-embedding-type", "learned_absolute"}); }),
               "--mtp-num-layers = 1", "learned_absolute");
  expect_error(error_of([] { small_moe({"--seq-length", "16", "--mtp-num-layers", "16"}); }),
               "--mtp-num-layers = 16", "--seq-length = 16");
  // Counting the MTP module as a last-stage layer breaks the split; the message says where it goes.
  const std::string split = error_of([] { deepseek({"--decoder-last-pipeline-num-layers", "3"}); });
  expect_error(split, "--decoder-last-pipeline-num-layers = 3", "the --mtp-num-layers module is not one of --num-layers");
  EXPECT_EQ(deepseek({"--mtp-num-layers", "2"}).model.mtp_num_layers, 2);
}

}  // namespace
}  // namespace tandem
