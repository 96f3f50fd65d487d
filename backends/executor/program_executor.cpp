// ProgramExecutor: the in-order walk with streams, events and buffer accounting (program_executor.h).
#include "backends/executor/program_executor.h"

#include <algorithm>

#include "core/check.h"

namespace tandem::exec {

ExecutionStats ProgramExecutor::run(const RankProgram& program, InstructionHandler& handler,
                                    std::vector<std::string>* trace) {
  ExecutionStats stats;
  std::vector<bool> live(program.buffers.size(), false);
  double bytes = 0;
  for (size_t i = 0; i < program.instructions.size(); ++i) {
    const Instruction& ins = program.instructions[i];
    const int32_t index = static_cast<int32_t>(i);
    device_.set_stream(ins.stream);
    for (int32_t dep : ins.deps) {
      TANDEM_CHECK_MSG(dep >= 0 && dep < index, "instruction " << index << " depends on " << dep);
      device_.wait_event(dep);
    }
    if (is_memory(ins.kind)) {
      TANDEM_CHECK_MSG(ins.buffer >= 0 && static_cast<size_t>(ins.buffer) < program.buffers.size(),
                       "instruction " << index << " names buffer " << ins.buffer);
      const size_t b = static_cast<size_t>(ins.buffer);
      const Buffer& buffer = program.buffers[b];
      const bool alloc = ins.kind == OpKind::Alloc;
      TANDEM_CHECK_MSG(live[b] != alloc, (alloc ? "double alloc of " : "free of unallocated ") << buffer.name);
      live[b] = alloc;
      bytes += alloc ? buffer.bytes : -buffer.bytes;
      if (alloc && is_persistent(buffer.role)) stats.persistent_bytes += buffer.bytes;
      const bool skip = alloc && is_persistent(buffer.role) && persistent_allocated_;
      if (!skip) alloc ? handler.on_alloc(buffer) : handler.on_free(buffer);
    } else {
      handler.execute(ins, index);
    }
    device_.record_event(index);
    stats.peak_bytes = std::max(stats.peak_bytes, bytes);
    if (trace != nullptr) trace->push_back(op_trace_line(ins));
    ++stats.instructions;
  }
  device_.synchronize();
  for (size_t b = 0; b < live.size(); ++b)
    TANDEM_CHECK_MSG(!live[b] || is_persistent(program.buffers[b].role),
                     "buffer " << program.buffers[b].name << " still allocated at the end of the program");
  persistent_allocated_ = true;
  return stats;
}

}  // namespace tandem::exec
