#pragma once
// Walks one rank's program (program/program.h) and carries out every instruction on a real
// backend: the execution model of the program — streams, deps, alloc/free — applied to a Device.
//
// For each instruction in list order: make its stream current, wait for the events of its deps,
// execute it (compute and communication through the InstructionHandler, memory through the
// handler's alloc/free hooks and the byte accounting here), then record its event. On an
// in-order device (CPU) this is the list order; on a GPU the same calls give the overlap the
// program describes. Every instruction is executed exactly once, so the list of executed
// instructions (the op trace) is the program.
#include <cstdint>
#include <string>
#include <vector>

#include "backends/executor/device.h"
#include "program/program.h"

namespace tandem::exec {

// What a backend does for the instructions it is handed.
class InstructionHandler {
 public:
  virtual ~InstructionHandler() = default;
  virtual void execute(const Instruction& ins, int32_t index) = 0;   // compute or communication
  virtual void on_alloc(const Buffer& buffer) { (void)buffer; }
  virtual void on_free(const Buffer& buffer) { (void)buffer; }
};

struct ExecutionStats {
  int64_t instructions = 0;
  double peak_bytes = 0;        // of the program's buffers (symbolic sizes)
  double persistent_bytes = 0;  // allocated and never freed (parameters, gradients, optimizer)
};

class ProgramExecutor {
 public:
  explicit ProgramExecutor(Device& device) : device_(device) {}
  // Runs `program` once. When `trace` is given, appends op_trace_line() of each instruction
  // executed, in execution order. The persistent buffers are allocated once, by the first run
  // (later runs skip their Setup allocations: parameters outlive an iteration).
  ExecutionStats run(const RankProgram& program, InstructionHandler& handler, std::vector<std::string>* trace);

 private:
  Device& device_;
  bool persistent_allocated_ = false;
};

}  // namespace tandem::exec
