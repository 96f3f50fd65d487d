#pragma once
// The communicator a real backend executes a program's communication with (MPI on CPUs, NCCL
// on GPUs). Groups are the ParallelGrid's named groups, seen from this rank; members are in
// group order (ParallelGrid::group_of), so gathered data is laid out in that order.
//
// Point-to-point messages carry the program's tag (64-bit, unique per peer pair and
// iteration); an implementation maps it to whatever its transport accepts. Sends may complete
// later (the communicator keeps the buffer alive until then); wait_sends() completes them all.
// Receives are posted (irecv) and finish when test() says so; collectives complete before they
// return on the CPU, or are ordered on the current device stream on a GPU.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backends/executor/device.h"
#include "core/parallel_grid.h"

namespace tandem::exec {

enum class ReduceOp { Sum, Max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;         // global rank
  virtual int64_t world_size() const = 0;
  virtual int64_t group_size(ParallelGroup group) const = 0;
  virtual int64_t group_rank(ParallelGroup group) const = 0;   // index of this rank in its group

  virtual void send(int64_t peer, int64_t tag, const DeviceTensor& data) = 0;
  // Posts a receive into `data`; returns a request for test().
  virtual int64_t irecv(int64_t peer, int64_t tag, const DeviceTensor& data) = 0;
  // True once the request's message has arrived (checked against the expected size).
  virtual bool test(int64_t request) = 0;
  virtual void wait_sends() = 0;

  // In place over the group.
  virtual void all_reduce(ParallelGroup group, const DeviceTensor& data, ReduceOp op) = 0;
  // in [group_size * m] -> out [m]: block i of the element-wise sum goes to member i.
  virtual void reduce_scatter(ParallelGroup group, const DeviceTensor& in, const DeviceTensor& out) = 0;
  // in [m] -> out [group_size * m] in member order. `in` may be out's own block (in place).
  virtual void all_gather(ParallelGroup group, const DeviceTensor& in, const DeviceTensor& out) = 0;
  // Variable-size forms (rows[i]: rows of member i, known to all): in [rows[me], cols] ->
  // out [sum(rows), cols] in member order; and the reverse, summing: in [sum(rows), cols] ->
  // out [rows[me], cols] = sum over members of their block `me`.
  virtual void all_gather_v(ParallelGroup group, const DeviceTensor& in, const DeviceTensor& out,
                            std::span<const int64_t> rows) = 0;
  virtual void reduce_scatter_v(ParallelGroup group, const DeviceTensor& in, const DeviceTensor& out,
                                std::span<const int64_t> rows) = 0;
  // Rows of `in` [sum(send_rows), cols] go to member i in consecutive blocks of send_rows[i];
  // `out` [sum(recv_rows), cols] receives from member i a block of recv_rows[i] rows.
  virtual void all_to_all_v(ParallelGroup group, const DeviceTensor& in, std::span<const int64_t> send_rows,
                            const DeviceTensor& out, std::span<const int64_t> recv_rows) = 0;
  // Exchanges control integers (MoE token counts): in [group_size * m], block i goes to member i;
  // returns [group_size * m], block i from member i.
  virtual std::vector<int64_t> all_to_all_counts(ParallelGroup group, std::span<const int64_t> in) = 0;
  // Host data over the whole world, outside any program (logging, traces, checkpoints).
  virtual std::vector<double> world_sum(std::span<const double> values) = 0;
  // Every rank's text at rank 0 (index = rank); other ranks get an empty list.
  virtual std::vector<std::string> gather_to_root(const std::string& text) = 0;
  virtual void barrier() = 0;
};

}  // namespace tandem::exec
