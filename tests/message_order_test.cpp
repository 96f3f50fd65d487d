// Out-of-order channels (schedules/message_order.h): computed once from the schedule, they are
// exactly the channels on which the lowered programs receive in another order than they send
// (pipeline activations and gradients, DualPipe's mirror gradients, context-parallel rings).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "schedules/message_order.h"
#include "schedules/registry.h"
#include "schedules/validate.h"
#include "tests/program_test_util.h"

namespace tandem {
namespace {

using Channels = std::set<std::pair<int64_t, int64_t>>;   // (sender, receiver)

// Channels of global ranks whose k-th Recv is not the sender's k-th Send, for some k.
Channels program_out_of_order(const testing::Lowered& l) {
  Channels out;
  const auto world = static_cast<int64_t>(l.programs.size());
  for (int64_t from = 0; from < world; ++from) {
    for (int64_t to = 0; to < world; ++to) {
      std::vector<int64_t> sent, received;
      for (const Instruction& ins : l.programs[static_cast<size_t>(from)].instructions)
        if (ins.kind == OpKind::Send && ins.peer == to) sent.push_back(ins.tag);
      for (const Instruction& ins : l.programs[static_cast<size_t>(to)].instructions)
        if (ins.kind == OpKind::Recv && ins.peer == from) received.push_back(ins.tag);
      EXPECT_EQ(sent.size(), received.size()) << from << " -> " << to;
      if (sent != received) out.insert({from, to});
    }
  }
  return out;
}

// The schedule's channels as global ranks, over every pipeline group.
Channels schedule_out_of_order(const testing::Lowered& l) {
  Channels out;
  for (const MessageChannel& c : out_of_order_channels(l.schedule)) {
    for (int64_t r = 0; r < l.grid.world_size(); ++r) {
      DenseCoord a = l.grid.dense_coord(r);
      if (a.pp != c.sender) continue;
      DenseCoord b = a;
      b.pp = c.receiver;
      out.insert({r, l.grid.dense_rank(b)});
    }
  }
  return out;
}

struct Case {
  std::string name;
  std::vector<std::string> flags;
  int64_t gpus;
  bool out_of_order;
};

std::vector<Case> cases() {
  const auto pp = [](int p, const std::string& schedule, int layers, int batch, std::vector<std::string> extra = {}) {
    std::vector<std::string> f = {"--pipeline-model-parallel-size", std::to_string(p), "--pipeline-schedule", schedule,
                                  "--num-layers", std::to_string(layers), "--global-batch-size", std::to_string(batch)};
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
  };
  return {
      {"1f1b pp4", pp(4, "1f1b", 4, 8), 4, false},
      {"zb-h1 pp4", pp(4, "zb-h1", 4, 8), 4, false},
      {"zb-v pp4", pp(4, "zb-v", 8, 8), 4, true},
      {"dualpipe pp4", pp(4, "dualpipe", 4, 8), 4, false},
      {"dualpipe pp4 overlap", pp(4, "dualpipe", 4, 8, {"--overlap-grad-reduce"}), 4, false},
      {"dualpipe pp2 cp2", pp(2, "dualpipe", 4, 4, {"--context-parallel-size", "2"}), 4, false},
      {"dualpipe pp8", pp(8, "dualpipe", 8, 16), 8, true},
      {"dualpipe pp8 overlap", pp(8, "dualpipe", 8, 16, {"--overlap-grad-reduce"}), 8, true},
      {"dualpipev pp2", pp(2, "dualpipev", 4, 4), 2, false},
      {"dualpipev pp4", pp(4, "dualpipev", 8, 8), 4, true},
      {"dualpipev pp4 cp2", pp(4, "dualpipev", 8, 8, {"--context-parallel-size", "2"}), 8, true},
  };
}

TEST(MessageOrder, ProgramsReceiveOutOfOrderExactlyOnTheScheduleChannels) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const testing::Lowered l = testing::lower_all(testing::tiny_llama(c.flags, c.gpus));
    const Channels from_programs = program_out_of_order(l);
    EXPECT_EQ(from_programs, schedule_out_of_order(l));
    EXPECT_EQ(!from_programs.empty(), c.out_of_order);
  }
}

TEST(MessageOrder, ValidationWarnsOncePerOutOfOrderChannel) {
  const Schedule s = build_schedule("dualpipev", ScheduleParams{4, 8, 0, 0});
  const std::vector<MessageChannel> channels = out_of_order_channels(s);
  ASSERT_FALSE(channels.empty());
  const ValidationReport report = validate_schedule(s);
  std::vector<ValidationIssue> order;
  for (const ValidationIssue& w : report.warnings)
    if (w.kind == IssueKind::MessageOrder) order.push_back(w);
  ASSERT_EQ(order.size(), channels.size());
  for (size_t i = 0; i < channels.size(); ++i) {
    EXPECT_EQ(order[i].rank, channels[i].receiver);
    EXPECT_EQ(order[i].action_index, channels[i].recv_action);
    // The receive at that position names another message than the send at that position.
    const Action& recv = s.actions[channels[i].receiver][channels[i].recv_action];
    const Action& send = s.actions[channels[i].sender][channels[i].send_action];
    EXPECT_TRUE(is_recv(recv.kind));
    EXPECT_TRUE(is_send(send.kind));
    EXPECT_EQ(recv.peer, channels[i].sender);
    EXPECT_EQ(send.peer, channels[i].receiver);
  }
}

// Which schedules receive out of order: ZB-V, DualPipeV from PP 4 and DualPipe from PP 8 (the
// V and bidirectional layouts send both directions over one rank pair).
TEST(MessageOrder, OutOfOrderSchedulesAreZbVDualPipeVAndDualPipeAtPp8) {
  const auto out_of_order = [](const char* name, int pp, int chunks = 0) {
    return !out_of_order_channels(build_schedule(name, ScheduleParams{pp, 4 * pp, chunks, 0})).empty();
  };
  for (int pp : {2, 4, 8}) {
    for (const char* name : {"gpipe", "1f1b", "zb-h1", "zb-h2"}) EXPECT_FALSE(out_of_order(name, pp)) << name << pp;
    EXPECT_FALSE(out_of_order("interleaved", pp, 2)) << pp;
    EXPECT_TRUE(out_of_order("zb-v", pp)) << pp;
    EXPECT_EQ(out_of_order("dualpipev", pp), pp >= 4) << pp;
    EXPECT_EQ(out_of_order("dualpipe", pp), pp >= 8) << pp;
  }
}

}  // namespace
}  // namespace tandem
