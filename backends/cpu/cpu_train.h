#pragma once
// `tandem train --backend cpu`: the job trained on this MPI world with the CPU device.
// The caller owns the MpiSession (MPI_Init/Finalize) around this call.
#include "backends/executor/trainer.h"
#include "core/job.h"

namespace tandem::cpu {

// Sets the GEMM threads to the machine's cores over the ranks sharing it, then runs
// exec::train with a CpuDevice and an MpiCommunicator over MPI_COMM_WORLD.
exec::TrainReport train_on_cpu(const Job& job, const exec::TrainOptions& options);

}  // namespace tandem::cpu
