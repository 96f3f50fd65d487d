#pragma once
// NCCL for the CUDA backend: exec::Communicator over NCCL, with MPI for process start-up and
// host-side control data. mpi.h and nccl.h stay inside nccl_comm.cpp (pimpl).
//
// Start-up: MPI starts one process per GPU. Rank 0's ncclUniqueId goes to every rank with
// MPI_Bcast; that gives one world communicator, split once per ParallelGrid group kind
// (ncclCommSplit, color = the group's index, key = the rank's index in the group), so NCCL
// ranks inside a group follow the grid's member order, as the MPI communicators of the CPU
// backend do (see group_splits below, the host logic shared with the tests).
//
// Point-to-point: NCCL has no tags and gives no guarantee that two operations of one
// communicator progress concurrently, so a pending receive could hold back a later send on the
// same communicator. Messages therefore travel on one two-rank communicator per ordered pair
// (sender -> receiver) of the pipeline and context-parallel groups (p2p_pairs below): on it the
// sender only sends and the receiver only receives, and NCCL pairs the k-th receive with the
// k-th send. The program matches messages by (peer, tag) (program/program.h):
//   - on a channel the schedule receives in send order, program order pairs them already;
//   - on a channel it receives out of order (out_of_order_pairs, p2p_matching.h: ZB-V,
//     DualPipeV, DualPipe at PP >= 8), the sender announces each message's (tag, elements) over MPI before
//     its ncclSend, and the receiver's P2pChannelMatcher issues the receives in the announced
//     order, staging a message that arrives ahead of its receive and copying it in once that
//     receive is posted. Each receive then gets the message with its tag (its microbatch).
// Sends and receives run on the device's current stream (a staged message on the stream of the
// receive that made it wait); a receive is finished once an event recorded after its ncclRecv
// (or its copy out of staging) has completed (cudaEventQuery).
//
// Collectives run on the current stream: ncclAllReduce, ncclReduceScatter, ncclAllGather; the
// variable-size forms and the all-to-all as ncclGroupStart + ncclSend/ncclRecv (the rank's own
// block by a device copy). Control data (all_to_all_counts, world_sum, gather_to_root,
// barrier) goes through MPI on the host.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/executor/communicator.h"
#include "core/parallel_grid.h"

namespace tandem::cuda {

class CudaDevice;

// The group kinds a communicator serves, in the order every rank creates them.
std::vector<ParallelGroup> communicator_group_kinds();

// How `rank` takes part in the split of one group kind: color = the group's index (-1: the
// rank is in no group of that kind, NCCL_SPLIT_NOCOLOR), key = its index in the group.
struct GroupSplit {
  ParallelGroup kind = ParallelGroup::Tp;
  int color = -1;
  int key = 0;
  int size = 0;   // members of the rank's group (0 when not a member)
};
std::vector<GroupSplit> group_splits(const ParallelGrid& grid, int64_t rank);

// Ordered pairs (sender, receiver) of global ranks that may exchange point-to-point messages
// and involve `rank`: every ordered pair of distinct members of its pipeline group and of its
// context-parallel group, sorted.
std::vector<std::pair<int64_t, int64_t>> p2p_pairs(const ParallelGrid& grid, int64_t rank);

// The CUDA device index for this process: its rank among the MPI ranks on this node
// (MPI_Comm_split_type SHARED) modulo `visible` devices. MPI must be initialised.
int node_local_device(int visible);

class NcclCommunicator final : public exec::Communicator {
 public:
  // MPI must be initialised and hold grid.world_size() ranks (UserError otherwise). Creates
  // the NCCL communicators (collective over the world: every rank constructs one).
  // `out_of_order` lists the channels (sender, receiver) involving this rank whose messages are
  // matched by tag (out_of_order_pairs); both ends must list them.
  NcclCommunicator(const ParallelGrid& grid, CudaDevice& device,
                   const std::vector<std::pair<int64_t, int64_t>>& out_of_order = {});
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

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

}  // namespace tandem::cuda
