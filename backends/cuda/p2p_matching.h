#pragma once
// Matching point-to-point messages on a transport without tags (NCCL), host C++ only: no CUDA,
// NCCL or MPI here, so the rule runs in tests without a device.
//
// NCCL pairs the k-th ncclRecv of a channel (one sender, one receiver) with the sender's k-th
// ncclSend, whatever tensors they name. The program matches messages by (peer, tag)
// (program/program.h); on a channel the schedule receives out of order
// (schedules/message_order.h: ZB-V, DualPipeV, DualPipe at PP >= 8) the receiver's k-th receive is
// not the sender's k-th send, and naive pairing would hand it another microbatch's tensor.
//
// P2pChannelMatcher is the receiver's side of one such channel. The sender announces every
// message, in send order, as (tag, elements) before it sends it (nccl_comm.cpp carries the
// announcements over MPI); the program posts its receives in its own order. The matcher decides
// what the receiver issues, always in the sender's order:
//   - the next announced message whose receive is posted: Receive it into that buffer;
//   - the next announced message while some posted receive waits for a later one: Stage it
//     (receive into a staging buffer of its size), so that the sender's stream moves on;
//   - a posted receive whose message was staged: Unstage (copy the staging buffer into it).
// A message nobody waits for yet is left on the channel, so an in-order channel never stages
// and costs no copy. This is the simulator's "buffered at the receiver" (backends/sim).
#include <cstdint>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "core/parallel_grid.h"
#include "core/schedule.h"

namespace tandem::cuda {

struct P2pStep {
  enum class Kind : uint8_t {
    Receive,   // ncclRecv of the next message into `request`'s buffer
    Stage,     // ncclRecv of the next message into a new staging buffer of `elements`, kept by `tag`
    Unstage,   // copy the staging buffer of `tag` into `request`'s buffer and release it
  };
  Kind kind = Kind::Receive;
  int64_t tag = 0;
  int64_t elements = 0;
  int64_t request = -1;   // Receive, Unstage: the posted receive this step completes
  bool operator==(const P2pStep&) const = default;
};

class P2pChannelMatcher {
 public:
  // The sender's next message on the channel (announcements arrive in send order).
  void announce(int64_t tag, int64_t elements);
  // The program posted a receive of `elements` for `tag`; `request` names it in the steps.
  // A message announced (or staged) with another size is a programmer error (aborts).
  void post(int64_t tag, int64_t elements, int64_t request);
  // What to issue now, in order; every step is returned once.
  std::vector<P2pStep> take_steps();

  int64_t staged() const { return static_cast<int64_t>(staged_.size()); }    // staging buffers held
  int64_t waiting() const { return static_cast<int64_t>(posted_.size()); }   // posted, not yet matched
  int64_t max_staged() const { return max_staged_; }

 private:
  struct Announced {
    int64_t tag = 0, elements = 0;
  };
  struct Posted {
    int64_t elements = 0, request = -1;
  };
  std::deque<Announced> announced_;     // announced, not yet received, in send order
  std::map<int64_t, Posted> posted_;    // tag -> posted receive not yet matched
  std::map<int64_t, int64_t> staged_;   // tag -> elements, received into a staging buffer
  std::vector<P2pStep> steps_;
  int64_t max_staged_ = 0;
};

// The channels (sender, receiver) of global ranks that involve `rank` and receive out of order
// under `schedule` (schedules/message_order.h, mapped onto the rank's pipeline group), sorted.
// Their messages are announced by the sender and matched by the receiver; every other channel
// keeps the order the program sends in, which its receiver receives in.
std::vector<std::pair<int64_t, int64_t>> out_of_order_pairs(const ParallelGrid& grid, const Schedule& schedule,
                                                            int64_t rank);

}  // namespace tandem::cuda
