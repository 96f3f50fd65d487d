#include "schedules/dualpipe_order.h"

#include <deque>
#include <utility>

#include "schedules/schedule_util.h"

namespace tandem::sched {
namespace {

// Emits compute steps for one rank, tracking per-chunk microbatch counters and the FIFO of
// deferred weight gradients (DualPipe's WeightGradStore).
class DualRankWriter {
 public:
  explicit DualRankWriter(const DualRankShape& shape) : shape_(shape) {}

  void forward(int phase, bool fused_with_next = false) {
    const int c = shape_.chunk_of_phase(phase);
    out_.push_back(fwd(shape_.microbatch_of(c, f_[c]++), c, fused_with_next));
  }
  // Full backward unless split_weight, in which case the W is queued for weight().
  void backward(int phase, bool split_weight = false) {
    const int c = shape_.chunk_of_phase(phase);
    const int mb = shape_.microbatch_of(c, b_[c]++);
    out_.push_back(bwd(mb, c));
    if (split_weight) pending_.emplace_back(mb, c);
  }
  void weight() {
    TANDEM_CHECK(!pending_.empty());
    out_.push_back(wgt(pending_.front().first, pending_.front().second));
    pending_.pop_front();
  }
  // Forward of phase0 overlapped with the full backward of phase1 (F&B).
  void forward_backward(int phase0, int phase1) {
    forward(phase0, true);
    backward(phase1);
  }
  std::vector<ComputeStep> take() {
    TANDEM_CHECK(pending_.empty());
    return std::move(out_);
  }

 private:
  const DualRankShape& shape_;
  std::vector<ComputeStep> out_;
  int f_[2] = {0, 0};
  int b_[2] = {0, 0};
  std::deque<std::pair<int, int>> pending_;  // (microbatch, chunk)
};

}  // namespace

std::vector<ComputeStep> dual_rank_order(const DualRankShape& shape) {
  const int n = shape.ranks, r = shape.rank;
  const bool last = r == n - 1;  // DualPipeV's last rank, DualPipe's middle ranks
  DualRankWriter w(shape);
  for (int i = 0; i < (n - r - 1) * 2; ++i) w.forward(0);                 // 1: nF0
  for (int i = 0; i < r + 1; ++i) { w.forward(0); w.forward(1); }         // 2: nF0F1
  for (int i = 0; i < n - r - 1; ++i) {                                   // 3: nB1W1F1
    w.backward(1, true);
    w.weight();
    w.forward(1);
  }
  const int main_steps = shape.microbatches - 2 * n + r + 1;              // 4: nF0B1F1B0
  for (int i = 0; i < main_steps; ++i) {
    if (i == 0 && last) {  // not overlapped, to shorten the bubble
      w.forward(0);
      w.backward(1);
    } else {
      w.forward_backward(0, 1);
    }
    w.forward_backward(1, 0);
  }
  for (int i = 0; i < n - r - 1; ++i) {                                   // 5: nB1F1B0
    w.backward(1);
    w.forward_backward(1, 0);
  }
  bool split = false;                                                     // 6: nB1B0
  for (int i = 0; i < r + 1; ++i) {
    if (i == (r + 1) / 2 && r % 2 == 1) split = true;
    w.backward(1, split);
    if (i == (r + 1) / 2 && r % 2 == 0) split = true;
    w.backward(0, split);
  }
  for (int i = 0; i < n - r - 1; ++i) {                                   // 7: nWB0
    w.weight();
    w.backward(0, true);
  }
  for (int i = 0; i < r + 1; ++i) w.weight();                             // 8: nW
  return w.take();
}

}  // namespace tandem::sched
