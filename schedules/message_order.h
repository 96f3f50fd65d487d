#pragma once
// Which point-to-point channels of a schedule receive messages in another order than they are
// sent: the one computation every consumer asks (validation's MessageOrder warning, the
// simulator's buffered receives, the NCCL backend's per-channel matching).
//
// A channel is an ordered pair (sender, receiver) of pipeline ranks. Its messages are the
// sender's SendActivation/SendGradient actions to the receiver, in the sender's list order,
// and the receiver's RecvActivation/RecvGradient actions from the sender, in the receiver's
// list order; a message is (kind, microbatch, sending stage). The channel is out of order when
// the k-th receive names another message than the k-th send for some k: a transport that pairs
// messages by order (NCCL) would then hand the receiver the wrong microbatch.
//
// Out-of-order schedules today: ZB-V, DualPipeV with 4 or more ranks (the V layout sends
// activations and gradients of both chunks over one pair of ranks) and DualPipe with 8 or more
// ranks (its two directions share the pairs). Every other registered schedule is in order.
#include <vector>

#include "core/schedule.h"

namespace tandem {

struct MessageChannel {
  int sender = -1;        // pipeline rank that sends
  int receiver = -1;      // pipeline rank that receives
  int position = -1;      // first message index (0-based, per channel) whose receive differs
  int send_action = -1;   // index in actions[sender] of the send at that position
  int recv_action = -1;   // index in actions[receiver] of the receive at that position
};

// The out-of-order channels of `schedule`, sorted by (sender, receiver); empty when every
// channel receives in send order. Pure function of the action lists; ids must be in range.
std::vector<MessageChannel> out_of_order_channels(const Schedule& schedule);

}  // namespace tandem
