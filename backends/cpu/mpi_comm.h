#pragma once
// MPI for the CPU backend: the process session and exec::Communicator over MPI.
//
// Every ParallelGrid group kind becomes one communicator (MPI_Comm_split of the world: color =
// the group's index, key = the rank's index in the group), so MPI ranks inside a group follow
// the grid's group order. Program tags (64-bit) map to MPI tags by a hash below MPI_TAG_UB;
// messages between one pair of ranks are matched by (source, tag) and the program keeps its
// tags unique per pair and iteration, so a collision would need two equal hashes in flight
// between the same two ranks. Sends are MPI_Isend (completed at the latest by wait_sends), so
// a walk of the pipeline schedules never blocks on a send; receives are posted and tested, and
// collectives block. mpi.h stays inside this library (pimpl).
#include <memory>
#include <string>

#include "backends/executor/communicator.h"
#include "core/parallel_grid.h"

namespace tandem::cpu {

// MPI_Init on construction (if MPI is not initialised yet), MPI_Finalize on destruction.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ends every rank of the job (an error on one rank must not leave the others waiting).
  [[noreturn]] void abort(int code) const;
  // True when this process was started by an MPI launcher (mpirun, srun with PMI/PMIx).
  static bool launched_by_mpi();

 private:
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
};

class MpiCommunicator final : public exec::Communicator {
 public:
  // The MPI world must hold exactly grid.world_size() ranks (UserError otherwise).
  MpiCommunicator(const ParallelGrid& grid, exec::Device& device);
  ~MpiCommunicator() override;

  int64_t rank() const override;
  int64_t world_size() const override;
  int64_t group_size(ParallelGroup group) const override;
  int64_t group_rank(ParallelGroup group) const override;
  void send(int64_t peer, int64_t tag, const exec::DeviceTensor& data) override;
  int64_t irecv(int64_t peer, int64_t tag, const exec::DeviceTensor& data) override;
  bool test(int64_t request) override;
  void wait_sends() override;
  void all_reduce(ParallelGroup group, const exec::DeviceTensor& data, exec::ReduceOp op) override;
  void reduce_scatter(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) override;
  void all_gather(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) override;
  void all_gather_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                    std::span<const int64_t> rows) override;
  void reduce_scatter_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                        std::span<const int64_t> rows) override;
  void all_to_all_v(ParallelGroup group, const exec::DeviceTensor& in, std::span<const int64_t> send_rows,
                    const exec::DeviceTensor& out, std::span<const int64_t> recv_rows) override;
  std::vector<int64_t> all_to_all_counts(ParallelGroup group, std::span<const int64_t> in) override;
  std::vector<double> world_sum(std::span<const double> values) override;
  std::vector<std::string> gather_to_root(const std::string& text) override;
  void barrier() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::cpu
