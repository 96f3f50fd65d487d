// NcclCommunicator and its host-side group logic (nccl_comm.h).
#include "backends/cuda/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <array>
#include <limits>
#include <list>
#include <map>
#include <numeric>
#include <set>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/p2p_matching.h"
#include "backends/mpi_control/mpi_control.h"
#include "core/check.h"

#define TANDEM_NCCL_CHECK(call) ::tandem::cuda::check_nccl((call), #call, __FILE__, __LINE__)

namespace tandem::cuda {

inline void check_nccl(ncclResult_t r, const char* what, const char* file, int line) {
  if (r != ncclSuccess) throw_cuda_error(what, file, line, ncclGetErrorString(r));
}

namespace {

}  // namespace

int node_local_device(int visible) {
  if (visible <= 0) throw std::invalid_argument("node_local_device: visible = " + std::to_string(visible));
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  return local % visible;
}

// ---------------------------------------------------------------- state

namespace {

struct Group {
  ncclComm_t nccl = nullptr;
  MPI_Comm mpi = MPI_COMM_NULL;
  int size = 0, rank = 0;
};

struct PendingSend {
  cudaEvent_t done = nullptr;
  exec::DeviceTensor data;   // kept alive until the send completes
};

struct PendingRecv {
  cudaEvent_t done = nullptr;   // null while a matched receive waits for its message's turn
  exec::DeviceTensor data;
  exec::DeviceTensor staging;   // the staging buffer copied into `data`, kept until the copy is done
  int64_t peer = -1;            // the sender, when the channel is matched by tag
};

// A message received ahead of its receive (p2p_matching.h: Stage).
struct Staged {
  exec::DeviceTensor buffer;
  cudaEvent_t done = nullptr;
};

// The receiver's side of an out-of-order channel.
struct Incoming {
  P2pChannelMatcher matcher;
  cudaStream_t stream = nullptr;        // stream of the latest receive posted on the channel
  std::map<int64_t, Staged> staged;     // tag -> message received into staging
};

// A sender's announcement (tag, elements) in flight over MPI.
struct Announcement {
  std::array<int64_t, 2> data{};
  MPI_Request request = MPI_REQUEST_NULL;
};

constexpr ncclDataType_t kFloat = ncclFloat32;

}  // namespace

struct NcclCommunicator::Impl {
  CudaDevice& device;
  int rank = 0, size = 1;
  ncclComm_t world = nullptr;
  std::map<ParallelGroup, Group> groups;
  std::map<std::pair<int64_t, int64_t>, ncclComm_t> pairs;   // (sender, receiver) -> 2-rank comm
  std::vector<PendingSend> sends;
  std::map<int64_t, PendingRecv> receives;
  std::vector<cudaEvent_t> spare;
  int64_t next_request = 0;
  // Out-of-order channels (nccl_comm.h): announcements on their own MPI communicator.
  MPI_Comm announce_comm = MPI_COMM_NULL;
  std::set<int64_t> announce_to;             // receivers of this rank's out-of-order channels
  std::map<int64_t, Incoming> incoming;      // sender -> matcher of an out-of-order channel
  std::list<Announcement> announcements;     // in flight (stable addresses for MPI)

  explicit Impl(CudaDevice& d) : device(d) {}

  const Group& group(ParallelGroup g) const {
    auto it = groups.find(g);
    TANDEM_CHECK_MSG(it != groups.end() && it->second.nccl != nullptr,
                     "rank " << rank << " is in no " << to_string(g) << " group");
    return it->second;
  }
  ncclComm_t pair(int64_t from, int64_t to) const {
    auto it = pairs.find({from, to});
    TANDEM_CHECK_MSG(it != pairs.end(), "no point-to-point channel from rank " << from << " to rank " << to
                                            << " (only pipeline and context-parallel peers have one)");
    return it->second;
  }
  cudaEvent_t event_after() { return event_on(device.stream()); }
  cudaEvent_t event_on(cudaStream_t stream) {
    cudaEvent_t e = nullptr;
    if (spare.empty()) {
      TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    } else {
      e = spare.back();
      spare.pop_back();
    }
    TANDEM_CUDA_CHECK(cudaEventRecord(e, stream));
    return e;
  }
  void reap() {
    std::erase_if(sends, [this](PendingSend& p) {
      const cudaError_t q = cudaEventQuery(p.done);
      if (q == cudaErrorNotReady) return false;
      TANDEM_CUDA_CHECK(q);
      spare.push_back(p.done);
      return true;
    });
    std::erase_if(announcements, [](Announcement& a) {
      int done = 0;
      MPI_Test(&a.request, &done, MPI_STATUS_IGNORE);
      return done != 0;
    });
  }
  void announce(int64_t to, int64_t tag, int64_t elements) {
    Announcement& a = announcements.emplace_back();
    a.data = {tag, elements};
    MPI_Isend(a.data.data(), 2, MPI_INT64_T, mpi::count(to, "peer"), 0, announce_comm, &a.request);
  }
  void pump(int64_t from, Incoming& in);
  void issue(int64_t from, Incoming& in, const P2pStep& step);
  void create_groups(const ParallelGrid& grid);
  void create_pairs(const ParallelGrid& grid);
};

void NcclCommunicator::Impl::create_groups(const ParallelGrid& grid) {
  for (const GroupSplit& s : group_splits(grid, rank)) {
    Group g;
    TANDEM_NCCL_CHECK(ncclCommSplit(world, s.color < 0 ? NCCL_SPLIT_NOCOLOR : s.color, s.key, &g.nccl, nullptr));
    MPI_Comm_split(MPI_COMM_WORLD, s.color < 0 ? MPI_UNDEFINED : s.color, s.key, &g.mpi);
    if (s.color >= 0) {
      TANDEM_NCCL_CHECK(ncclCommCount(g.nccl, &g.size));
      TANDEM_NCCL_CHECK(ncclCommUserRank(g.nccl, &g.rank));
      TANDEM_CHECK_MSG(g.size == s.size && g.rank == s.key,
                       to_string(s.kind) << " group: NCCL gives rank " << g.rank << " of " << g.size << ", the grid "
                                         << s.key << " of " << s.size);
    }
    groups.emplace(s.kind, g);
  }
}

// One two-rank communicator per ordered pair: the sender makes the unique id and sends it
// over MPI, then both sides initialise all their pair communicators in one NCCL group.
void NcclCommunicator::Impl::create_pairs(const ParallelGrid& grid) {
  const auto list = p2p_pairs(grid, rank);
  std::vector<ncclUniqueId> ids(list.size());
  std::vector<MPI_Request> requests;
  const int tag_of_pair = 7;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto [from, to] = list[i];
    MPI_Request r = MPI_REQUEST_NULL;
    if (from == rank) {
      TANDEM_NCCL_CHECK(ncclGetUniqueId(&ids[i]));
      MPI_Isend(&ids[i], sizeof(ncclUniqueId), MPI_BYTE, mpi::count(to, "peer"), tag_of_pair, MPI_COMM_WORLD, &r);
    } else {
      MPI_Irecv(&ids[i], sizeof(ncclUniqueId), MPI_BYTE, mpi::count(from, "peer"), tag_of_pair, MPI_COMM_WORLD, &r);
    }
    requests.push_back(r);
  }
  // Messages between one pair of ranks are non-overtaking: both sides list (a,b) before (b,a).
  MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
  std::vector<ncclComm_t> comms(list.size(), nullptr);
  TANDEM_NCCL_CHECK(ncclGroupStart());
  for (size_t i = 0; i < list.size(); ++i)
    TANDEM_NCCL_CHECK(ncclCommInitRank(&comms[i], 2, ids[i], list[i].first == rank ? 0 : 1));
  TANDEM_NCCL_CHECK(ncclGroupEnd());
  for (size_t i = 0; i < list.size(); ++i) pairs.emplace(list[i], comms[i]);
}

// Announcements that have arrived from `from`, then what the matcher says to issue now.
void NcclCommunicator::Impl::pump(int64_t from, Incoming& in) {
  const int source = mpi::count(from, "peer");
  for (;;) {
    int arrived = 0;
    MPI_Iprobe(source, 0, announce_comm, &arrived, MPI_STATUS_IGNORE);
    if (arrived == 0) break;
    std::array<int64_t, 2> a{};
    MPI_Recv(a.data(), 2, MPI_INT64_T, source, 0, announce_comm, MPI_STATUS_IGNORE);
    in.matcher.announce(a[0], a[1]);
  }
  for (const P2pStep& step : in.matcher.take_steps()) issue(from, in, step);
}

void NcclCommunicator::Impl::issue(int64_t from, Incoming& in, const P2pStep& step) {
  const ncclComm_t comm = pair(from, rank);
  const auto count = static_cast<size_t>(step.elements);
  switch (step.kind) {
    case P2pStep::Kind::Receive: {
      PendingRecv& r = receives.at(step.request);
      TANDEM_NCCL_CHECK(ncclRecv(device.address(r.data), count, kFloat, 0, comm, in.stream));
      r.done = event_on(in.stream);
      return;
    }
    case P2pStep::Kind::Stage: {
      Staged st{device.empty({step.elements}), nullptr};
      TANDEM_NCCL_CHECK(ncclRecv(device.address(st.buffer), count, kFloat, 0, comm, in.stream));
      st.done = event_on(in.stream);
      in.staged.emplace(step.tag, std::move(st));
      return;
    }
    case P2pStep::Kind::Unstage: {
      auto node = in.staged.extract(step.tag);
      TANDEM_CHECK_MSG(!node.empty(), "message tag " << step.tag << " from rank " << from << " was not staged");
      PendingRecv& r = receives.at(step.request);
      TANDEM_CUDA_CHECK(cudaStreamWaitEvent(in.stream, node.mapped().done, 0));
      TANDEM_CUDA_CHECK(cudaMemcpyAsync(device.address(r.data), device.address(node.mapped().buffer),
                                        count * sizeof(float), cudaMemcpyDeviceToDevice, in.stream));
      spare.push_back(node.mapped().done);   // a later record does not disturb the wait above
      r.staging = node.mapped().buffer;
      r.done = event_on(in.stream);
      return;
    }
  }
}

NcclCommunicator::NcclCommunicator(const ParallelGrid& grid, CudaDevice& device,
                                   const std::vector<std::pair<int64_t, int64_t>>& out_of_order)
    : impl_(std::make_unique<Impl>(device)) {
  MPI_Comm_rank(MPI_COMM_WORLD, &impl_->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &impl_->size);
  if (impl_->size != grid.world_size())
    throw_field_error("world_size", grid.world_size(),
                      "the job's ranks differ from the " + std::to_string(impl_->size) + " MPI ranks this run was given");
  TANDEM_CUDA_CHECK(cudaSetDevice(device.device_index()));
  ncclUniqueId id{};
  if (impl_->rank == 0) TANDEM_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  TANDEM_NCCL_CHECK(ncclCommInitRank(&impl_->world, impl_->size, id, impl_->rank));
  impl_->create_groups(grid);
  impl_->create_pairs(grid);
  MPI_Comm_dup(MPI_COMM_WORLD, &impl_->announce_comm);
  for (const auto& [from, to] : out_of_order) {
    TANDEM_CHECK_MSG(impl_->pairs.count({from, to}) == 1,
                     "out-of-order channel " << from << " -> " << to << " is no point-to-point channel of rank "
                                             << impl_->rank);
    if (from == impl_->rank) impl_->announce_to.insert(to);
    if (to == impl_->rank) impl_->incoming[from];
  }
}

NcclCommunicator::~NcclCommunicator() {
  try {
    wait_sends();
  } catch (...) {
  }
  for (auto& [kind, g] : impl_->groups) {
    if (g.nccl != nullptr) ncclCommDestroy(g.nccl);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (g.mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&g.mpi);
  }
  for (auto& [pair, c] : impl_->pairs) ncclCommDestroy(c);
  for (auto& [from, in] : impl_->incoming)
    for (auto& [tag, st] : in.staged) cudaEventDestroy(st.done);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (impl_->announce_comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(&impl_->announce_comm);
  if (impl_->world != nullptr) ncclCommDestroy(impl_->world);
  for (auto& [id, r] : impl_->receives)
    if (r.done != nullptr) cudaEventDestroy(r.done);
  for (cudaEvent_t e : impl_->spare) cudaEventDestroy(e);
}

int64_t NcclCommunicator::rank() const { return impl_->rank; }
int64_t NcclCommunicator::world_size() const { return impl_->size; }
int64_t NcclCommunicator::group_size(ParallelGroup group) const { return impl_->group(group).size; }
int64_t NcclCommunicator::group_rank(ParallelGroup group) const { return impl_->group(group).rank; }

// ---------------------------------------------------------------- point to point

void NcclCommunicator::send(int64_t peer, int64_t tag, const exec::DeviceTensor& data) {
  impl_->reap();
  // In-order channels need no tag (see the header); out-of-order ones announce it.
  if (impl_->announce_to.count(peer) != 0) impl_->announce(peer, tag, data.numel());
  const float* ptr = impl_->device.address(data);
  TANDEM_NCCL_CHECK(ncclSend(ptr, static_cast<size_t>(data.numel()), kFloat, 1, impl_->pair(impl_->rank, peer),
                             impl_->device.stream()));
  impl_->sends.push_back(PendingSend{impl_->event_after(), data});
}

int64_t NcclCommunicator::irecv(int64_t peer, int64_t tag, const exec::DeviceTensor& data) {
  const auto in = impl_->incoming.find(peer);
  if (in != impl_->incoming.end()) {   // matched by tag (p2p_matching.h)
    const int64_t id = impl_->next_request++;
    impl_->receives.emplace(id, PendingRecv{nullptr, data, {}, peer});
    in->second.stream = impl_->device.stream();
    in->second.matcher.post(tag, data.numel(), id);
    impl_->pump(peer, in->second);
    return id;
  }
  float* ptr = impl_->device.address(data);
  TANDEM_NCCL_CHECK(ncclRecv(ptr, static_cast<size_t>(data.numel()), kFloat, 0, impl_->pair(peer, impl_->rank),
                             impl_->device.stream()));
  const int64_t id = impl_->next_request++;
  impl_->receives.emplace(id, PendingRecv{impl_->event_after(), data, {}, -1});
  return id;
}

bool NcclCommunicator::test(int64_t request) {
  auto it = impl_->receives.find(request);
  TANDEM_CHECK_MSG(it != impl_->receives.end(), "unknown receive request " << request);
  if (it->second.done == nullptr) {   // its channel is matched by tag: not yet issued
    impl_->pump(it->second.peer, impl_->incoming.at(it->second.peer));
    if (it->second.done == nullptr) return false;
  }
  const cudaError_t q = cudaEventQuery(it->second.done);
  if (q == cudaErrorNotReady) return false;
  TANDEM_CUDA_CHECK(q);
  impl_->spare.push_back(it->second.done);
  impl_->receives.erase(it);
  return true;
}

void NcclCommunicator::wait_sends() {
  for (PendingSend& p : impl_->sends) {
    TANDEM_CUDA_CHECK(cudaEventSynchronize(p.done));
    impl_->spare.push_back(p.done);
  }
  impl_->sends.clear();
  for (Announcement& a : impl_->announcements) MPI_Wait(&a.request, MPI_STATUS_IGNORE);
  impl_->announcements.clear();
}

// ---------------------------------------------------------------- collectives

void NcclCommunicator::all_reduce(ParallelGroup group, const exec::DeviceTensor& data, exec::ReduceOp op) {
  float* ptr = impl_->device.address(data);
  TANDEM_NCCL_CHECK(ncclAllReduce(ptr, ptr, static_cast<size_t>(data.numel()), kFloat,
                                  op == exec::ReduceOp::Sum ? ncclSum : ncclMax, impl_->group(group).nccl,
                                  impl_->device.stream()));
}

void NcclCommunicator::reduce_scatter(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) {
  const int64_t n = group_size(group);
  TANDEM_CHECK_MSG(in.numel() == n * out.numel(), "reduce-scatter of " << in.numel() << " into " << n << " x "
                                                                       << out.numel());
  TANDEM_CHECK(!in.same_memory(out));
  const float* src = impl_->device.address(in);
  float* dst = impl_->device.address(out);
  TANDEM_NCCL_CHECK(ncclReduceScatter(src, dst, static_cast<size_t>(out.numel()), kFloat, ncclSum,
                                      impl_->group(group).nccl, impl_->device.stream()));
}

void NcclCommunicator::all_gather(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) {
  const int64_t n = group_size(group), m = in.numel();
  TANDEM_CHECK_MSG(out.numel() == n * m, "all-gather of " << m << " into " << out.numel() << " over " << n);
  const bool own_block = in.storage == out.storage && in.offset == out.offset + group_rank(group) * m;
  TANDEM_CHECK_MSG(own_block || !in.same_memory(out), "all-gather input overlaps the output outside its own block");
  // In place when `in` is the rank's own block of `out` (NCCL's in-place rule is the same).
  const float* src = impl_->device.address(in);
  float* dst = impl_->device.address(out);
  TANDEM_NCCL_CHECK(ncclAllGather(src, dst, static_cast<size_t>(m), kFloat, impl_->group(group).nccl,
                                  impl_->device.stream()));
}

namespace {

// Element offsets of row blocks of `cols` columns: [n + 1], the last is the total.
std::vector<int64_t> block_offsets(std::span<const int64_t> rows, int64_t cols) {
  std::vector<int64_t> at(rows.size() + 1, 0);
  for (size_t i = 0; i < rows.size(); ++i) at[i + 1] = at[i] + rows[i] * cols;
  return at;
}

int64_t cols_of(const exec::DeviceTensor& a, const exec::DeviceTensor& b) {
  if (a.shape.size() >= 2) return a.numel() / std::max<int64_t>(1, a.dim(0));
  return b.shape.size() >= 2 ? b.numel() / std::max<int64_t>(1, b.dim(0)) : 1;
}

void copy_on_stream(float* dst, const float* src, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(count) * sizeof(float), cudaMemcpyDeviceToDevice,
                                    stream));
}

}  // namespace

void NcclCommunicator::all_gather_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                                    std::span<const int64_t> rows) {
  const Group& g = impl_->group(group);
  TANDEM_CHECK(static_cast<int64_t>(rows.size()) == g.size);
  const auto at = block_offsets(rows, cols_of(out, in));
  const size_t me = static_cast<size_t>(g.rank);
  TANDEM_CHECK(in.numel() == at[me + 1] - at[me] && out.numel() == at.back());
  TANDEM_CHECK(!in.same_memory(out));
  const float* src = impl_->device.address(in);
  float* dst = impl_->device.address(out);
  cudaStream_t stream = impl_->device.stream();
  copy_on_stream(dst + at[me], src, in.numel(), stream);
  TANDEM_NCCL_CHECK(ncclGroupStart());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i == me) continue;
    const int peer = static_cast<int>(i);
    if (in.numel() > 0) TANDEM_NCCL_CHECK(ncclSend(src, static_cast<size_t>(in.numel()), kFloat, peer, g.nccl, stream));
    if (at[i + 1] > at[i])
      TANDEM_NCCL_CHECK(ncclRecv(dst + at[i], static_cast<size_t>(at[i + 1] - at[i]), kFloat, peer, g.nccl, stream));
  }
  TANDEM_NCCL_CHECK(ncclGroupEnd());
}

void NcclCommunicator::reduce_scatter_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                                        std::span<const int64_t> rows) {
  const Group& g = impl_->group(group);
  TANDEM_CHECK(static_cast<int64_t>(rows.size()) == g.size);
  const auto at = block_offsets(rows, cols_of(in, out));
  const size_t me = static_cast<size_t>(g.rank), n = rows.size();
  const int64_t mine = at[me + 1] - at[me];
  TANDEM_CHECK(out.numel() == mine && in.numel() == at.back());
  TANDEM_CHECK(!in.same_memory(out));
  if (mine == 0 && in.numel() == 0) return;
  // Every member's block `me` lands in parts [n, mine]; then out = parts[0] + ... + parts[n-1].
  const exec::DeviceTensor parts = impl_->device.empty({static_cast<int64_t>(n), mine});
  const float* src = impl_->device.address(in);
  float* tmp = impl_->device.address(parts);
  cudaStream_t stream = impl_->device.stream();
  copy_on_stream(tmp + static_cast<int64_t>(me) * mine, src + at[me], mine, stream);
  TANDEM_NCCL_CHECK(ncclGroupStart());
  for (size_t i = 0; i < n; ++i) {
    if (i == me) continue;
    const int peer = static_cast<int>(i);
    if (at[i + 1] > at[i])
      TANDEM_NCCL_CHECK(ncclSend(src + at[i], static_cast<size_t>(at[i + 1] - at[i]), kFloat, peer, g.nccl, stream));
    if (mine > 0)
      TANDEM_NCCL_CHECK(ncclRecv(tmp + static_cast<int64_t>(i) * mine, static_cast<size_t>(mine), kFloat, peer, g.nccl,
                                 stream));
  }
  TANDEM_NCCL_CHECK(ncclGroupEnd());
  if (mine == 0) return;
  const exec::DeviceTensor flat_out = out.flat();
  exec::Device& dev = impl_->device;   // the interface: kernels may live in another file
  dev.copy(parts.rows(0, 1).flat(), flat_out);
  for (size_t i = 1; i < n; ++i)
    dev.axpy(1.0f, parts.rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).flat(), flat_out);
}

void NcclCommunicator::all_to_all_v(ParallelGroup group, const exec::DeviceTensor& in,
                                    std::span<const int64_t> send_rows, const exec::DeviceTensor& out,
                                    std::span<const int64_t> recv_rows) {
  const Group& g = impl_->group(group);
  const size_t n = static_cast<size_t>(g.size), me = static_cast<size_t>(g.rank);
  TANDEM_CHECK(send_rows.size() == n && recv_rows.size() == n);
  const int64_t in_rows = std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
  const int64_t out_rows = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  const int64_t cols = in_rows > 0 ? in.numel() / in_rows : (out_rows > 0 ? out.numel() / out_rows : 0);
  TANDEM_CHECK(in.numel() == in_rows * cols && out.numel() == out_rows * cols);
  TANDEM_CHECK(!in.same_memory(out) || in.numel() == 0);
  const auto so = block_offsets(send_rows, cols), ro = block_offsets(recv_rows, cols);
  TANDEM_CHECK(so[me + 1] - so[me] == ro[me + 1] - ro[me]);   // the rank's block to itself
  const float* src = in.defined() ? impl_->device.address(in) : nullptr;
  float* dst = out.defined() ? impl_->device.address(out) : nullptr;
  cudaStream_t stream = impl_->device.stream();
  copy_on_stream(dst + ro[me], src + so[me], so[me + 1] - so[me], stream);
  TANDEM_NCCL_CHECK(ncclGroupStart());
  for (size_t i = 0; i < n; ++i) {
    if (i == me) continue;
    const int peer = static_cast<int>(i);
    if (so[i + 1] > so[i])
      TANDEM_NCCL_CHECK(ncclSend(src + so[i], static_cast<size_t>(so[i + 1] - so[i]), kFloat, peer, g.nccl, stream));
    if (ro[i + 1] > ro[i])
      TANDEM_NCCL_CHECK(ncclRecv(dst + ro[i], static_cast<size_t>(ro[i + 1] - ro[i]), kFloat, peer, g.nccl, stream));
  }
  TANDEM_NCCL_CHECK(ncclGroupEnd());
}

// ---------------------------------------------------------------- host control data (MPI)

std::vector<int64_t> NcclCommunicator::all_to_all_counts(ParallelGroup group, std::span<const int64_t> in) {
  const Group& g = impl_->group(group);
  return mpi::all_to_all_counts(g.mpi, g.size, in);
}

std::vector<double> NcclCommunicator::world_sum(std::span<const double> values) { return mpi::world_sum(values); }

std::vector<std::string> NcclCommunicator::gather_to_root(const std::string& text) {
  return mpi::gather_to_root(text);
}

void NcclCommunicator::barrier() { MPI_Barrier(MPI_COMM_WORLD); }

}  // namespace tandem::cuda
