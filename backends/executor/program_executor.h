#pragma once
// Walks one rank's program (program/program.h) and carries out every instruction on a real
// backend: the execution model of the program — streams, deps, alloc/free — applied to a Device.
//
// Each instruction starts once the previous instruction of its stream and every instruction in
// its deps have finished; it is handed to the InstructionHandler (compute, communication) or
// accounted here (Alloc/Free, then the handler's hooks). Issue order is the list order whenever
// that is possible. A handler may leave an instruction in flight (a posted receive): then the
// walk goes on with the other streams' instructions in list order — what a GPU's streams do —
// and polls the instruction until it finishes; nothing that must follow it starts before.
// Collectives never overtake one another (they keep list order on every rank). Before
// an instruction starts, the device is told its stream and the events (instruction indices) of
// its deps, so an asynchronous device can order its own work (a CPU device needs neither).
//
// Every instruction is executed exactly once; the op trace records each as it is issued and lists
// them in program order.
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
  // Compute or communication. Returns false when the instruction is still in flight; the
  // executor then calls poll(index) until it returns true.
  virtual bool execute(const Instruction& ins, int32_t index) = 0;
  // True once in-flight instruction `index` has finished (finishing its work if needed).
  virtual bool poll(int32_t index) {
    (void)index;
    return true;
  }
  virtual void on_alloc(const Buffer& buffer) { (void)buffer; }
  virtual void on_free(const Buffer& buffer) { (void)buffer; }
};

struct ExecutionStats {
  int64_t instructions = 0;
  int64_t out_of_order = 0;     // issued ahead of an earlier instruction waiting for a message
  double peak_bytes = 0;        // of the program's buffers (symbolic sizes), in issue order
  double persistent_bytes = 0;  // allocated and never freed (parameters, gradients, optimizer)
};

class ProgramExecutor {
 public:
  explicit ProgramExecutor(Device& device) : device_(device) {}
  // Runs `program` once. When `trace` is given, appends op_trace_line() of each instruction as
  // the walk issued it to the handler, in program order (an instruction never issued is a
  // CHECK failure): the trace says what was executed, not what was lowered. The persistent buffers are allocated once, by the first run (later runs skip
  // their Setup allocations: parameters outlive an iteration).
  ExecutionStats run(const RankProgram& program, InstructionHandler& handler, std::vector<std::string>* trace);

 private:
  Device& device_;
  bool persistent_allocated_ = false;
};

}  // namespace tandem::exec
