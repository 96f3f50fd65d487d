// P2pChannelMatcher (p2p_matching.h): the receiver issues a channel's messages in send order.
#include "backends/cuda/p2p_matching.h"

#include <algorithm>
#include <utility>

#include "core/check.h"
#include "schedules/message_order.h"

namespace tandem::cuda {

void P2pChannelMatcher::announce(int64_t tag, int64_t elements) {
  TANDEM_CHECK_MSG(elements >= 0, "message tag " << tag << " announced with " << elements << " elements");
  TANDEM_CHECK_MSG(staged_.count(tag) == 0, "message tag " << tag << " announced while one with that tag is staged");
  announced_.push_back(Announced{tag, elements});
}

void P2pChannelMatcher::post(int64_t tag, int64_t elements, int64_t request) {
  TANDEM_CHECK_MSG(posted_.count(tag) == 0, "two receives posted for message tag " << tag);
  const auto staged = staged_.find(tag);
  if (staged != staged_.end()) {
    TANDEM_CHECK_MSG(staged->second == elements, "message tag " << tag << ": the sender sent " << staged->second
                                                                 << " elements, the receive expects " << elements);
    steps_.push_back(P2pStep{P2pStep::Kind::Unstage, tag, elements, request});
    staged_.erase(staged);
    return;
  }
  posted_.emplace(tag, Posted{elements, request});
}

std::vector<P2pStep> P2pChannelMatcher::take_steps() {
  // Only while some posted receive waits: its message is this one or comes after it.
  while (!announced_.empty() && !posted_.empty()) {
    const Announced next = announced_.front();
    announced_.pop_front();
    const auto it = posted_.find(next.tag);
    if (it == posted_.end()) {
      staged_.emplace(next.tag, next.elements);
      max_staged_ = std::max(max_staged_, static_cast<int64_t>(staged_.size()));
      steps_.push_back(P2pStep{P2pStep::Kind::Stage, next.tag, next.elements, -1});
      continue;
    }
    TANDEM_CHECK_MSG(it->second.elements == next.elements, "message tag " << next.tag << ": the sender sends "
                                                               << next.elements << " elements, the receive expects "
                                                               << it->second.elements);
    steps_.push_back(P2pStep{P2pStep::Kind::Receive, next.tag, next.elements, it->second.request});
    posted_.erase(it);
  }
  return std::exchange(steps_, {});
}

std::vector<std::pair<int64_t, int64_t>> out_of_order_pairs(const ParallelGrid& grid, const Schedule& schedule,
                                                            int64_t rank) {
  TANDEM_CHECK_MSG(schedule.num_ranks() == grid.pp_size(),
                   "schedule of " << schedule.num_ranks() << " ranks for a pipeline of " << grid.pp_size());
  const DenseCoord me = grid.dense_coord(rank);
  const auto global = [&](int pipeline_rank) {
    DenseCoord c = me;
    c.pp = pipeline_rank;
    return grid.dense_rank(c);
  };
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const MessageChannel& c : out_of_order_channels(schedule)) {
    const int64_t from = global(c.sender), to = global(c.receiver);
    if (from == rank || to == rank) out.emplace_back(from, to);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace tandem::cuda
