#pragma once
// `tandem train --backend cuda`: the job trained on this MPI world, one GPU per rank.
// The caller owns the MPI session (MPI_Init/Finalize) around this call.
#include <string>

#include "backends/cuda/cuda_pool.h"
#include "backends/executor/trainer.h"
#include "core/job.h"

namespace tandem::cuda {

// Picks this process's GPU (node-local rank modulo the visible devices), sizes its pool from
// this rank's program, then runs exec::train with a CudaDevice and an NcclCommunicator over
// MPI_COMM_WORLD. UserError "no CUDA device ..." when none is visible.
exec::TrainReport train_on_cuda(const Job& job, const exec::TrainOptions& options);

}  // namespace tandem::cuda
