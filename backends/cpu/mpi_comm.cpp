// MpiSession and MpiCommunicator (mpi_comm.h).
#include "backends/cpu/mpi_comm.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>

#include "backends/executor/init_rng.h"
#include "backends/mpi_control/mpi_control.h"
#include "core/check.h"

namespace tandem::cpu {

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    owns_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

void MpiSession::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();   // MPI_Abort does not return; keeps [[noreturn]] honest
}

bool MpiSession::launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE", "SLURM_PROCID"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

namespace {

constexpr ParallelGroup kAllGroups[] = {
    ParallelGroup::Tp, ParallelGroup::Cp, ParallelGroup::Dp, ParallelGroup::DpCp, ParallelGroup::TpCp,
    ParallelGroup::TpDp, ParallelGroup::TpDpCp, ParallelGroup::ModelParallel, ParallelGroup::Pp,
    ParallelGroup::Embedding, ParallelGroup::PositionEmbedding, ParallelGroup::Ep, ParallelGroup::ExpertTp,
    ParallelGroup::ExpertTpEp, ParallelGroup::ExpertTpEpPp, ParallelGroup::ExpertDp};
constexpr size_t kGroupKinds = sizeof(kAllGroups) / sizeof(kAllGroups[0]);

size_t group_slot(ParallelGroup g) {
  for (size_t i = 0; i < kGroupKinds; ++i)
    if (kAllGroups[i] == g) return i;
  TANDEM_CHECK_MSG(false, "unknown group " << to_string(g));
  return 0;
}

struct PendingSend {
  MPI_Request request = MPI_REQUEST_NULL;
  exec::DeviceTensor data;   // kept alive until the send completes
};

struct PendingRecv {
  MPI_Request request = MPI_REQUEST_NULL;
  exec::DeviceTensor data;
  int64_t peer = 0, tag = 0;
};

}  // namespace

struct MpiCommunicator::Impl {
  exec::Device& device;
  int rank = 0, size = 1;
  int tag_ub = 32767;
  MPI_Comm groups[kGroupKinds];
  int group_sizes[kGroupKinds] = {};
  int group_ranks[kGroupKinds] = {};
  std::vector<PendingSend> pending;
  std::map<int64_t, PendingRecv> receives;
  int64_t next_request = 0;

  explicit Impl(exec::Device& d) : device(d) {
    for (MPI_Comm& c : groups) c = MPI_COMM_NULL;
  }
  MPI_Comm comm(ParallelGroup g) const {
    const MPI_Comm c = groups[group_slot(g)];
    TANDEM_CHECK_MSG(c != MPI_COMM_NULL, "rank " << rank << " is in no " << to_string(g) << " group");
    return c;
  }
  int mpi_tag(int64_t tag) const {
    uint64_t s = static_cast<uint64_t>(tag);
    return static_cast<int>(exec::splitmix64(s) % (static_cast<uint64_t>(tag_ub) + 1));
  }
  void reap() {
    std::erase_if(pending, [](PendingSend& p) {
      int done = 0;
      MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
      return done != 0;
    });
  }
};

MpiCommunicator::MpiCommunicator(const ParallelGrid& grid, exec::Device& device)
    : impl_(std::make_unique<Impl>(device)) {
  MPI_Comm_rank(MPI_COMM_WORLD, &impl_->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &impl_->size);
  if (impl_->size != grid.world_size())
    throw_field_error("world_size", grid.world_size(),
                      "the job's ranks differ from the " + std::to_string(impl_->size) + " MPI ranks this run was given");
  int* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  if (flag && ub != nullptr) impl_->tag_ub = *ub;
  for (size_t i = 0; i < kGroupKinds; ++i) {
    const auto m = grid.find_group(impl_->rank, kAllGroups[i]);
    const int color = m ? mpi::count(m->group_index, "group index") : MPI_UNDEFINED;
    const int key = m ? mpi::count(m->index_in_group, "group rank") : 0;
    MPI_Comm_split(MPI_COMM_WORLD, color, key, &impl_->groups[i]);
    if (m) {
      MPI_Comm_size(impl_->groups[i], &impl_->group_sizes[i]);
      MPI_Comm_rank(impl_->groups[i], &impl_->group_ranks[i]);
      TANDEM_CHECK(impl_->group_sizes[i] == static_cast<int>(m->ranks.size()));
    }
  }
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  wait_sends();
  for (MPI_Comm& c : impl_->groups)
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
}

int64_t MpiCommunicator::rank() const { return impl_->rank; }
int64_t MpiCommunicator::world_size() const { return impl_->size; }
int64_t MpiCommunicator::group_size(ParallelGroup group) const { return impl_->group_sizes[group_slot(group)]; }
int64_t MpiCommunicator::group_rank(ParallelGroup group) const { return impl_->group_ranks[group_slot(group)]; }

void MpiCommunicator::send(int64_t peer, int64_t tag, const exec::DeviceTensor& data) {
  impl_->reap();
  PendingSend p;
  p.data = data;
  MPI_Isend(impl_->device.address(data), mpi::count(data.numel(), "send count"), MPI_FLOAT, mpi::count(peer, "peer"),
            impl_->mpi_tag(tag), MPI_COMM_WORLD, &p.request);
  impl_->pending.push_back(std::move(p));
}

int64_t MpiCommunicator::irecv(int64_t peer, int64_t tag, const exec::DeviceTensor& data) {
  PendingRecv p;
  p.data = data;
  p.peer = peer;
  p.tag = tag;
  MPI_Irecv(impl_->device.address(data), mpi::count(data.numel(), "recv count"), MPI_FLOAT, mpi::count(peer, "peer"),
            impl_->mpi_tag(tag), MPI_COMM_WORLD, &p.request);
  const int64_t id = impl_->next_request++;
  impl_->receives.emplace(id, std::move(p));
  return id;
}

bool MpiCommunicator::test(int64_t request) {
  auto it = impl_->receives.find(request);
  TANDEM_CHECK_MSG(it != impl_->receives.end(), "unknown receive request " << request);
  PendingRecv& p = it->second;
  int done = 0;
  MPI_Status status;
  MPI_Test(&p.request, &done, &status);
  if (!done) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_FLOAT, &count);
  TANDEM_CHECK_MSG(count == p.data.numel(), "message from rank " << p.peer << " tag " << p.tag << ": " << count
                                                                 << " floats, expected " << p.data.numel());
  impl_->receives.erase(it);
  return true;
}

void MpiCommunicator::wait_sends() {
  for (PendingSend& p : impl_->pending) MPI_Wait(&p.request, MPI_STATUS_IGNORE);
  impl_->pending.clear();
}

void MpiCommunicator::all_reduce(ParallelGroup group, const exec::DeviceTensor& data, exec::ReduceOp op) {
  MPI_Allreduce(MPI_IN_PLACE, impl_->device.address(data), mpi::count(data.numel(), "all-reduce count"), MPI_FLOAT,
                op == exec::ReduceOp::Sum ? MPI_SUM : MPI_MAX, impl_->comm(group));
}

void MpiCommunicator::reduce_scatter(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) {
  const int64_t n = group_size(group);
  TANDEM_CHECK_MSG(in.numel() == n * out.numel(), "reduce-scatter of " << in.numel() << " into " << n << " x "
                                                                       << out.numel());
  TANDEM_CHECK(!in.same_memory(out));
  MPI_Reduce_scatter_block(impl_->device.address(in), impl_->device.address(out),
                           mpi::count(out.numel(), "reduce-scatter count"), MPI_FLOAT, MPI_SUM, impl_->comm(group));
}

void MpiCommunicator::all_gather(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out) {
  const int64_t n = group_size(group), m = in.numel();
  TANDEM_CHECK_MSG(out.numel() == n * m, "all-gather of " << m << " into " << out.numel() << " over " << n);
  float* dst = impl_->device.address(out);
  const int count = mpi::count(m, "all-gather count");
  const bool own_block = in.storage == out.storage && in.offset == out.offset + group_rank(group) * m;
  if (own_block) {
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_FLOAT, dst, count, MPI_FLOAT, impl_->comm(group));
    return;
  }
  TANDEM_CHECK_MSG(!in.same_memory(out), "all-gather input overlaps the output outside its own block");
  MPI_Allgather(impl_->device.address(in), count, MPI_FLOAT, dst, count, MPI_FLOAT, impl_->comm(group));
}

namespace {

// Element counts and offsets of row blocks of `cols` columns.
void row_blocks(std::span<const int64_t> rows, int64_t cols, std::vector<int>& counts, std::vector<int>& offsets) {
  counts.resize(rows.size());
  offsets.resize(rows.size());
  int64_t at = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    counts[i] = mpi::count(rows[i] * cols, "block count");
    offsets[i] = mpi::count(at, "block offset");
    at += rows[i] * cols;
  }
}

int64_t cols_of(const exec::DeviceTensor& a, const exec::DeviceTensor& b) {
  if (a.shape.size() >= 2) return a.numel() / a.dim(0);
  return b.shape.size() >= 2 ? b.numel() / std::max<int64_t>(1, b.dim(0)) : 1;
}

}  // namespace

void MpiCommunicator::all_gather_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                                   std::span<const int64_t> rows) {
  TANDEM_CHECK(static_cast<int64_t>(rows.size()) == group_size(group));
  const int64_t cols = cols_of(out, in);
  std::vector<int> counts, offsets;
  row_blocks(rows, cols, counts, offsets);
  const int me = static_cast<int>(group_rank(group));
  TANDEM_CHECK(in.numel() == counts[static_cast<size_t>(me)] && out.numel() == std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  TANDEM_CHECK(!in.same_memory(out));
  float* src = in.numel() > 0 ? impl_->device.address(in) : nullptr;
  float* dst = out.numel() > 0 ? impl_->device.address(out) : nullptr;
  MPI_Allgatherv(src, counts[static_cast<size_t>(me)], MPI_FLOAT, dst, counts.data(), offsets.data(), MPI_FLOAT,
                 impl_->comm(group));
}

void MpiCommunicator::reduce_scatter_v(ParallelGroup group, const exec::DeviceTensor& in, const exec::DeviceTensor& out,
                                       std::span<const int64_t> rows) {
  TANDEM_CHECK(static_cast<int64_t>(rows.size()) == group_size(group));
  const int64_t cols = cols_of(in, out);
  std::vector<int> counts, offsets;
  row_blocks(rows, cols, counts, offsets);
  const int me = static_cast<int>(group_rank(group));
  TANDEM_CHECK(out.numel() == counts[static_cast<size_t>(me)] && in.numel() == std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  TANDEM_CHECK(!in.same_memory(out));
  float* src = in.numel() > 0 ? impl_->device.address(in) : nullptr;
  float* dst = out.numel() > 0 ? impl_->device.address(out) : nullptr;
  MPI_Reduce_scatter(src, dst, counts.data(), MPI_FLOAT, MPI_SUM, impl_->comm(group));
}

void MpiCommunicator::all_to_all_v(ParallelGroup group, const exec::DeviceTensor& in,
                                   std::span<const int64_t> send_rows, const exec::DeviceTensor& out,
                                   std::span<const int64_t> recv_rows) {
  const size_t n = static_cast<size_t>(group_size(group));
  TANDEM_CHECK(send_rows.size() == n && recv_rows.size() == n);
  const int64_t in_rows = std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
  const int64_t out_rows = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  const int64_t cols = in_rows > 0 ? in.numel() / in_rows : (out_rows > 0 ? out.numel() / out_rows : 0);
  TANDEM_CHECK(in.numel() == in_rows * cols && out.numel() == out_rows * cols);
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  int64_t so = 0, ro = 0;
  for (size_t i = 0; i < n; ++i) {
    sc[i] = mpi::count(send_rows[i] * cols, "all-to-all count");
    sd[i] = mpi::count(so, "all-to-all offset");
    rc[i] = mpi::count(recv_rows[i] * cols, "all-to-all count");
    rd[i] = mpi::count(ro, "all-to-all offset");
    so += send_rows[i] * cols;
    ro += recv_rows[i] * cols;
  }
  float* src = in.numel() > 0 ? impl_->device.address(in) : nullptr;
  float* dst = out.numel() > 0 ? impl_->device.address(out) : nullptr;
  MPI_Alltoallv(src, sc.data(), sd.data(), MPI_FLOAT, dst, rc.data(), rd.data(), MPI_FLOAT, impl_->comm(group));
}

std::vector<int64_t> MpiCommunicator::all_to_all_counts(ParallelGroup group, std::span<const int64_t> in) {
  return mpi::all_to_all_counts(impl_->comm(group), group_size(group), in);
}

std::vector<double> MpiCommunicator::world_sum(std::span<const double> values) { return mpi::world_sum(values); }

std::vector<std::string> MpiCommunicator::gather_to_root(const std::string& text) {
  return mpi::gather_to_root(text);
}

void MpiCommunicator::barrier() { MPI_Barrier(MPI_COMM_WORLD); }

}  // namespace tandem::cpu
