// ModelRunner, the MoE block (placeholder until the expert path lands).
#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {
[[noreturn]] void unsupported(const Instruction& ins) {
  throw UserError("MoE layers are not supported by real backends yet (" + op_trace_line(ins) + ")");
}
}  // namespace

void ModelRunner::expert_gemm(const Instruction& ins) { unsupported(ins); }
void ModelRunner::expert_gemm_grad_input(const Instruction& ins) { unsupported(ins); }
void ModelRunner::expert_gemm_grad_weight(const Instruction& ins) { unsupported(ins); }
void ModelRunner::router(const Instruction& ins) { unsupported(ins); }
void ModelRunner::router_grad(const Instruction& ins) { unsupported(ins); }
void ModelRunner::permute(const Instruction& ins) { unsupported(ins); }
void ModelRunner::permute_grad(const Instruction& ins) { unsupported(ins); }
void ModelRunner::unpermute(const Instruction& ins) { unsupported(ins); }
void ModelRunner::unpermute_grad(const Instruction& ins) { unsupported(ins); }
void ModelRunner::moe_collective(const Instruction& ins) { unsupported(ins); }
void ModelRunner::moe_add(const Instruction& ins) { unsupported(ins); }

}  // namespace tandem::exec
