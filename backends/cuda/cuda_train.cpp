// train_on_cuda (cuda_train.h).
#include "backends/cuda/cuda_train.h"

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstdlib>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_pool.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/nccl_comm.h"
#include "core/check.h"
#include "core/parallel_grid.h"
#include "program/lower_context.h"
#include "program/program.h"

namespace tandem::cuda {
exec::TrainReport train_on_cuda(const Job& job, const exec::TrainOptions& options) {
  std::string why;
  const std::vector<DeviceInfo> devices = visible_devices(&why);
  if (devices.empty()) throw UserError("no CUDA device visible (" + (why.empty() ? std::string("count 0") : why) + ")");
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const RankProgram program = lower_rank(job, grid, schedule_for_job(job), rank);
  const PoolSizing sizing = size_pool(program, job.training);

  const int index = node_local_device(static_cast<int>(devices.size()));
  TANDEM_CUDA_CHECK(cudaSetDevice(index));
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const char* override_text = std::getenv("TANDEM_CUDA_POOL_BYTES");
  const double pool = choose_pool_bytes(sizing, double(free_bytes), override_text ? override_text : "");
  if (options.log && rank == 0)
    options.log("cuda: rank 0 on device " + std::to_string(index) + " (" + devices[static_cast<size_t>(index)].name +
                "), memory pool " + (pool > 0 ? mib_text(pool) : std::string("growing on demand")) +
                " (program peak " + mib_text(sizing.program_peak_bytes) + ", in fp32 " +
                mib_text(sizing.fp32_peak_bytes) + ", margin " + mib_text(sizing.margin_bytes) + ")");

  CudaDevice device(CudaDeviceOptions{index, pool});
  NcclCommunicator comm(grid, device);
  return exec::train(job, device, comm, options);
}

}  // namespace tandem::cuda
