// The NCCL communicator's matching rule for channels received out of order (p2p_matching.h),
// played without a device: a wire that pairs receives with sends by order, as NCCL does, the
// sender's program sending on it and the receiver's program posting its receives one after the
// other (each once the previous has finished, as on the PpRecv stream). DualPipeV at PP 4
// receives some activations in another order than they are sent: every receive must still get
// the message of its own microbatch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backends/cuda/p2p_matching.h"
#include "schedules/message_order.h"
#include "tests/program_test_util.h"

namespace tandem::cuda {
namespace {

using tandem::testing::Lowered;

struct Message {
  int64_t tag = 0;
  int64_t elements = 0;
  int32_t microbatch = -1;
  int16_t chunk = -1;
  Site site = Site::None;
};

// The messages `program` sends to (`kind` Send) or receives from (Recv) `peer`, in list order:
// the order its stream issues them in.
std::vector<Message> channel(const RankProgram& program, OpKind kind, int64_t peer) {
  std::vector<Message> out;
  for (const Instruction& ins : program.instructions)
    if (ins.kind == kind && ins.peer == peer)
      out.push_back(Message{ins.tag, static_cast<int64_t>(ins.bytes), ins.microbatch, ins.chunk, ins.site});
  return out;
}

Lowered pipeline_job(int pp, const char* schedule, int layers, int batch) {
  return testing::lower_all(testing::tiny_llama({"--pipeline-model-parallel-size", std::to_string(pp),
                                                 "--pipeline-schedule", schedule, "--num-layers",
                                                 std::to_string(layers), "--global-batch-size", std::to_string(batch)},
                                                pp));
}

Lowered dualpipev_pp4() { return pipeline_job(4, "dualpipev", 8, 8); }

// How announcements reach the receiver relative to its posts.
enum class Arrival { AllFirst, OnlyWhenStuck, Random };

// Plays one channel and returns, per receive (in the receiver's order), the message it got.
std::vector<Message> play(const std::vector<Message>& sent, const std::vector<Message>& wanted, Arrival arrival,
                          unsigned seed, int64_t* max_staged) {
  P2pChannelMatcher matcher;
  std::deque<Message> wire(sent.begin(), sent.end());   // what NCCL hands out, in send order
  std::map<int64_t, Message> staging;                     // tag -> staged message
  std::vector<Message> got(wanted.size());
  std::vector<bool> done(wanted.size(), false);
  size_t announced = 0, posted = 0;
  std::mt19937 rng(seed);
  const auto run_steps = [&] {
    for (const P2pStep& step : matcher.take_steps()) {
      if (step.kind == P2pStep::Kind::Unstage) {
        ASSERT_EQ(staging.count(step.tag), 1u);
        got[static_cast<size_t>(step.request)] = staging.at(step.tag);
        staging.erase(step.tag);
        done[static_cast<size_t>(step.request)] = true;
        continue;
      }
      // Receive and Stage are ncclRecv calls: NCCL pairs them with the next message sent.
      ASSERT_FALSE(wire.empty());
      const Message m = wire.front();
      wire.pop_front();
      ASSERT_EQ(m.tag, step.tag) << "the matcher's next receive is not the sender's next send";
      ASSERT_EQ(m.elements, step.elements);
      if (step.kind == P2pStep::Kind::Stage) {
        staging.emplace(m.tag, m);
      } else {
        got[static_cast<size_t>(step.request)] = m;
        done[static_cast<size_t>(step.request)] = true;
      }
    }
  };
  while (posted < wanted.size() || !std::all_of(done.begin(), done.end(), [](bool d) { return d; })) {
    const bool can_post = posted < wanted.size() && (posted == 0 || done[posted - 1]);
    const bool can_announce = announced < sent.size();
    bool announce = can_announce;
    if (arrival == Arrival::OnlyWhenStuck) announce = can_announce && !can_post;
    if (arrival == Arrival::Random) announce = can_announce && (!can_post || rng() % 2 == 0);
    if (announce) {
      matcher.announce(sent[announced].tag, sent[announced].elements);
      ++announced;
    } else if (can_post) {
      matcher.post(wanted[posted].tag, wanted[posted].elements, static_cast<int64_t>(posted));
      ++posted;
    } else {
      ADD_FAILURE() << "stuck: " << posted << " of " << wanted.size() << " receives posted, " << announced
                    << " of " << sent.size() << " messages announced";
      break;
    }
    run_steps();
    if (::testing::Test::HasFatalFailure()) break;
  }
  EXPECT_TRUE(wire.empty());
  EXPECT_TRUE(staging.empty());
  EXPECT_EQ(matcher.staged(), 0);
  EXPECT_EQ(matcher.waiting(), 0);
  *max_staged = std::max(*max_staged, matcher.max_staged());
  return got;
}

TEST(P2pMatching, DualPipeVPp4HasChannelsThatReceiveOutOfOrder) {
  const Lowered l = dualpipev_pp4();
  // The schedule says which channels; the lowered programs agree message by message.
  std::set<std::pair<int64_t, int64_t>> from_programs, from_schedule;
  for (int64_t r = 0; r < 4; ++r) {
    for (const auto& c : out_of_order_pairs(l.grid, l.schedule, r)) from_schedule.insert(c);
    for (int64_t peer = 0; peer < 4; ++peer) {
      const auto sent = channel(l.programs[static_cast<size_t>(r)], OpKind::Send, peer);
      const auto wanted = channel(l.programs[static_cast<size_t>(peer)], OpKind::Recv, r);
      ASSERT_EQ(sent.size(), wanted.size()) << r << " -> " << peer;
      for (size_t k = 0; k < sent.size(); ++k)
        if (sent[k].tag != wanted[k].tag) from_programs.insert({r, peer});
    }
  }
  EXPECT_FALSE(from_schedule.empty());
  EXPECT_EQ(from_programs, from_schedule);
}

TEST(P2pMatching, OrderPairingWouldHandDualPipeVTheWrongMicrobatch) {
  // What the communicator did before matching: the k-th receive gets the k-th send.
  const Lowered l = dualpipev_pp4();
  int wrong = 0;
  for (const auto& [from, to] : out_of_order_pairs(l.grid, l.schedule, 0)) {
    const auto sent = channel(l.programs[static_cast<size_t>(from)], OpKind::Send, to);
    const auto wanted = channel(l.programs[static_cast<size_t>(to)], OpKind::Recv, from);
    for (size_t k = 0; k < sent.size(); ++k) wrong += sent[k].microbatch != wanted[k].microbatch;
  }
  EXPECT_GT(wrong, 0);
}

// Every out-of-order channel of `l`, played with announcements arriving early, late and at random.
void expect_every_receive_gets_its_own_message(const Lowered& l) {
  const int64_t pp = l.grid.pp_size();
  std::set<std::pair<int64_t, int64_t>> channels;
  for (int64_t r = 0; r < pp; ++r)
    for (const auto& c : out_of_order_pairs(l.grid, l.schedule, r)) channels.insert(c);
  ASSERT_FALSE(channels.empty());
  int64_t max_staged = 0;
  for (const auto& [from, to] : channels) {
    const auto sent = channel(l.programs[static_cast<size_t>(from)], OpKind::Send, to);
    const auto wanted = channel(l.programs[static_cast<size_t>(to)], OpKind::Recv, from);
    for (Arrival arrival : {Arrival::AllFirst, Arrival::OnlyWhenStuck, Arrival::Random}) {
      for (unsigned seed = 0; seed < (arrival == Arrival::Random ? 20u : 1u); ++seed) {
        const std::vector<Message> got = play(sent, wanted, arrival, seed, &max_staged);
        ASSERT_FALSE(::testing::Test::HasFatalFailure());
        for (size_t k = 0; k < wanted.size(); ++k) {
          EXPECT_EQ(got[k].tag, wanted[k].tag) << from << " -> " << to << " receive " << k;
          EXPECT_EQ(got[k].microbatch, wanted[k].microbatch) << from << " -> " << to << " receive " << k;
          EXPECT_EQ(got[k].site, wanted[k].site) << from << " -> " << to << " receive " << k;
        }
      }
    }
  }
  EXPECT_GT(max_staged, 0);   // some message did arrive ahead of its receive
}

TEST(P2pMatching, EveryReceiveOfDualPipeVPp4GetsItsOwnMicrobatch) {
  expect_every_receive_gets_its_own_message(dualpipev_pp4());
}

TEST(P2pMatching, EveryReceiveOfZbVAndDualPipePp8GetsItsOwnMicrobatch) {
  expect_every_receive_gets_its_own_message(pipeline_job(4, "zb-v", 8, 8));
  expect_every_receive_gets_its_own_message(pipeline_job(8, "dualpipe", 8, 16));
}

TEST(P2pMatching, InOrderChannelNeverStages) {
  P2pChannelMatcher m;
  for (int64_t tag = 0; tag < 4; ++tag) m.announce(tag, 10);
  for (int64_t tag = 0; tag < 4; ++tag) {
    m.post(tag, 10, tag);
    const std::vector<P2pStep> steps = m.take_steps();
    ASSERT_EQ(steps.size(), 1u);
    EXPECT_EQ(steps[0], (P2pStep{P2pStep::Kind::Receive, tag, 10, tag}));
  }
  EXPECT_EQ(m.max_staged(), 0);
}

TEST(P2pMatching, MessageAheadOfItsReceiveIsStagedThenCopied) {
  P2pChannelMatcher m;
  m.post(7, 5, 0);                   // the receiver wants tag 7 first
  EXPECT_TRUE(m.take_steps().empty());   // nothing announced yet: nothing to issue
  m.announce(3, 4);                  // the sender sends tag 3 first...
  m.announce(7, 5);                  // ...then tag 7
  EXPECT_EQ(m.take_steps(), (std::vector<P2pStep>{{P2pStep::Kind::Stage, 3, 4, -1},
                                                  {P2pStep::Kind::Receive, 7, 5, 0}}));
  m.post(3, 4, 1);
  EXPECT_EQ(m.take_steps(), (std::vector<P2pStep>{{P2pStep::Kind::Unstage, 3, 4, 1}}));
  EXPECT_EQ(m.staged(), 0);
}

TEST(P2pMatching, OutOfOrderPairsOfAnInOrderScheduleAreEmpty) {
  const Lowered l = testing::lower_all(testing::tiny_llama(
      {"--pipeline-model-parallel-size", "4", "--pipeline-schedule", "1f1b", "--global-batch-size", "8"}, 4));
  for (int64_t r = 0; r < 4; ++r) EXPECT_TRUE(out_of_order_pairs(l.grid, l.schedule, r).empty());
}

}  // namespace
}  // namespace tandem::cuda
