// ProgramExecutor: stream-ordered walk with in-flight instructions and buffer accounting.
#include "backends/executor/program_executor.h"

#include <algorithm>
#include <thread>

#include "core/check.h"

namespace tandem::exec {
namespace {

enum class State : uint8_t { Waiting, InFlight, Done };

class Walk {
 public:
  Walk(const RankProgram& program, InstructionHandler& handler, Device& device, bool skip_persistent,
       std::vector<std::string>* executed)
      : program_(program), handler_(handler), device_(device), skip_persistent_(skip_persistent), executed_(executed) {
    const size_t n = program.instructions.size();
    if (executed_ != nullptr) executed_->assign(n, std::string());
    state_.assign(n, State::Waiting);
    stream_prev_.assign(n, -1);
    live_.assign(program.buffers.size(), false);
    std::vector<int32_t> last(8, -1);
    for (size_t i = 0; i < n; ++i) {
      const Instruction& ins = program.instructions[i];
      const size_t s = static_cast<size_t>(ins.stream);
      TANDEM_CHECK(s < last.size());
      stream_prev_[i] = last[s];
      last[s] = static_cast<int32_t>(i);
      if (is_collective(ins.kind)) collectives_.push_back(static_cast<int32_t>(i));
      for (int32_t d : ins.deps)
        TANDEM_CHECK_MSG(d >= 0 && static_cast<size_t>(d) < i, "instruction " << i << " depends on " << d);
    }
  }

  ExecutionStats run() {
    const size_t n = state_.size();
    size_t lowest = 0;
    while (lowest < n) {
      bool issued = false;
      for (size_t i = lowest; i < n && !issued; ++i) {
        if (state_[i] != State::Waiting || !ready(static_cast<int32_t>(i))) continue;
        if (i != lowest) ++stats_.out_of_order;
        issue(static_cast<int32_t>(i));
        issued = true;
      }
      while (lowest < n && state_[lowest] != State::Waiting) ++lowest;
      if (!issued && !poll_all()) std::this_thread::yield();
    }
    while (!in_flight_.empty())
      if (!poll_all()) std::this_thread::yield();
    device_.synchronize();
    for (size_t b = 0; b < live_.size(); ++b)
      TANDEM_CHECK_MSG(!live_[b] || is_persistent(program_.buffers[b].role),
                       "buffer " << program_.buffers[b].name() << " still allocated at the end of the program");
    return stats_;
  }

 private:
  bool finished(int32_t i) {
    if (i < 0 || state_[static_cast<size_t>(i)] == State::Done) return true;
    if (state_[static_cast<size_t>(i)] == State::Waiting) return false;
    if (!handler_.poll(i)) return false;
    state_[static_cast<size_t>(i)] = State::Done;
    std::erase(in_flight_, i);
    return true;
  }

  bool ready(int32_t i) {
    // Collectives keep their list order across streams: every member of every group then meets
    // them in the program's order, whatever waits elsewhere (no cross-group deadlock).
    if (is_collective(program_.instructions[static_cast<size_t>(i)].kind) &&
        (next_collective_ >= collectives_.size() || collectives_[next_collective_] != i))
      return false;
    if (!finished(stream_prev_[static_cast<size_t>(i)])) return false;
    for (int32_t d : program_.instructions[static_cast<size_t>(i)].deps)
      if (!finished(d)) return false;
    return true;
  }

  bool poll_all() {
    bool any = false;
    for (int32_t i : std::vector<int32_t>(in_flight_)) any = finished(i) || any;
    return any;
  }

  void issue(int32_t index) {
    const Instruction& ins = program_.instructions[static_cast<size_t>(index)];
    if (executed_ != nullptr) (*executed_)[static_cast<size_t>(index)] = op_trace_line(ins);
    device_.set_stream(ins.stream);
    for (int32_t d : ins.deps) device_.wait_event(d);
    bool done = true;
    if (is_memory(ins.kind)) memory(ins, index);
    else done = handler_.execute(ins, index);
    device_.record_event(index);
    if (is_collective(ins.kind)) ++next_collective_;
    state_[static_cast<size_t>(index)] = done ? State::Done : State::InFlight;
    if (!done) in_flight_.push_back(index);
    ++stats_.instructions;
  }

  void memory(const Instruction& ins, int32_t index) {
    TANDEM_CHECK_MSG(ins.buffer >= 0 && static_cast<size_t>(ins.buffer) < program_.buffers.size(),
                     "instruction " << index << " names buffer " << ins.buffer);
    const size_t b = static_cast<size_t>(ins.buffer);
    const Buffer& buffer = program_.buffers[b];
    const bool alloc = ins.kind == OpKind::Alloc;
    TANDEM_CHECK_MSG(live_[b] != alloc, (alloc ? "double alloc of " : "free of unallocated ") << buffer.name());
    live_[b] = alloc;
    bytes_ += alloc ? buffer.bytes : -buffer.bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, bytes_);
    if (alloc && is_persistent(buffer.role)) stats_.persistent_bytes += buffer.bytes;
    if (alloc && is_persistent(buffer.role) && skip_persistent_) return;
    if (alloc) handler_.on_alloc(buffer);
    else handler_.on_free(buffer);
  }

  const RankProgram& program_;
  InstructionHandler& handler_;
  Device& device_;
  bool skip_persistent_;
  std::vector<std::string>* executed_;   // [instruction] its op trace line once issued, or null
  std::vector<State> state_;
  std::vector<int32_t> stream_prev_;
  std::vector<int32_t> in_flight_;
  std::vector<int32_t> collectives_;   // indices of the collectives, in list order
  size_t next_collective_ = 0;
  std::vector<bool> live_;
  double bytes_ = 0;
  ExecutionStats stats_;
};

}  // namespace

ExecutionStats ProgramExecutor::run(const RankProgram& program, InstructionHandler& handler,
                                    std::vector<std::string>* trace) {
  std::vector<std::string> executed;
  const ExecutionStats stats =
      Walk(program, handler, device_, persistent_allocated_, trace != nullptr ? &executed : nullptr).run();
  persistent_allocated_ = true;
  if (trace != nullptr) {
    for (size_t i = 0; i < executed.size(); ++i)
      TANDEM_CHECK_MSG(!executed[i].empty(), "instruction " << i << " of rank " << program.rank << " was not executed");
    trace->insert(trace->end(), std::make_move_iterator(executed.begin()), std::make_move_iterator(executed.end()));
  }
  return stats;
}

}  // namespace tandem::exec
