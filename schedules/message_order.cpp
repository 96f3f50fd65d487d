// Out-of-order point-to-point channels of a schedule (message_order.h).
#include "schedules/message_order.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

namespace tandem {

std::vector<MessageChannel> out_of_order_channels(const Schedule& s) {
  using Key = std::tuple<int, int, int>;  // (is gradient, microbatch, sending stage)
  std::map<std::pair<int, int>, std::vector<std::pair<Key, int>>> sent, received;
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const Action& a = s.actions[r][i];
      const bool grad = a.kind == ActionKind::SendGradient || a.kind == ActionKind::RecvGradient;
      if (is_send(a.kind)) sent[{r, a.peer}].push_back({Key{grad, a.microbatch, a.stage}, i});
      if (is_recv(a.kind)) {
        const int from_stage = grad ? a.stage + 1 : a.stage - 1;
        received[{a.peer, r}].push_back({Key{grad, a.microbatch, from_stage}, i});
      }
    }
  }
  std::vector<MessageChannel> out;
  for (const auto& [channel, sends] : sent) {
    const auto& recvs = received[channel];
    for (size_t k = 0; k < std::min(sends.size(), recvs.size()); ++k) {
      if (sends[k].first == recvs[k].first) continue;
      out.push_back(MessageChannel{channel.first, channel.second, static_cast<int>(k), sends[k].second,
                                   recvs[k].second});
      break;
    }
  }
  return out;
}

}  // namespace tandem
