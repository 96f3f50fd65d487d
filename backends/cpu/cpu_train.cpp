// train_on_cpu (cpu_train.h).
#include "backends/cpu/cpu_train.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "backends/cpu/cpu_device.h"
#include "backends/cpu/mpi_comm.h"
#include "backends/cpu/ops_gemm.h"
#include "core/parallel_grid.h"

namespace tandem::cpu {
namespace {

// Ranks on this machine: Open MPI and Slurm say; otherwise assume all of them.
int local_ranks(int world) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  return world;
}

}  // namespace

exec::TrainReport train_on_cpu(const Job& job, const exec::TrainOptions& options) {
  CpuDevice device;
  const ParallelGrid grid = ParallelGrid::from_job(job);
  MpiCommunicator comm(grid, device);
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  set_gemm_threads(std::max(1, cores / std::max(1, local_ranks(static_cast<int>(comm.world_size())))));
  return exec::train(job, device, comm, options);
}

}  // namespace tandem::cpu
