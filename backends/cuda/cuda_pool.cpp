// PoolArena, size_pool and DevicePool (cuda_pool.h).
#include "backends/cuda/cuda_pool.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "models/accounting.h"

namespace tandem::cuda {

// ---------------------------------------------------------------- PoolArena

PoolArena::PoolArena(int64_t capacity) : capacity_(capacity) {
  if (capacity <= 0 || capacity % kAlignment != 0)
    throw std::invalid_argument("PoolArena: capacity = " + std::to_string(capacity) +
                                " bytes is not a positive multiple of " + std::to_string(kAlignment));
  insert_free(0, FreeBlock{capacity, kAnyStream, 0});
}

int64_t PoolArena::round_up(int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("PoolArena: bytes = " + std::to_string(bytes) + " is negative");
  const int64_t n = std::max<int64_t>(bytes, 1);
  return (n + kAlignment - 1) / kAlignment * kAlignment;
}

void PoolArena::insert_free(int64_t offset, FreeBlock block) {
  free_.emplace(offset, block);
  by_size_.emplace(block.bytes, offset);
}

void PoolArena::erase_free(FreeIt it) {
  by_size_.erase({it->second.bytes, it->first});
  free_.erase(it);
}

std::optional<int64_t> PoolArena::allocate(int64_t bytes, int stream) {
  const int64_t need = round_up(bytes);
  // Smallest block that fits; among equal sizes the lowest offset; skip other streams' blocks.
  for (auto s = by_size_.lower_bound({need, 0}); s != by_size_.end(); ++s) {
    const int64_t offset = std::get<1>(*s);
    auto it = free_.find(offset);
    const FreeBlock block = it->second;
    if (block.tag != kAnyStream && block.tag != stream) continue;
    erase_free(it);
    if (block.bytes > need) insert_free(offset + need, FreeBlock{block.bytes - need, block.tag, block.fence});
    allocated_.emplace(offset, need);
    used_ += need;
    peak_ = std::max(peak_, used_);
    return offset;
  }
  return std::nullopt;
}

PoolArena::FreeIt PoolArena::merge_around(FreeIt it) {
  if (it != free_.begin()) {
    auto left = std::prev(it);
    if (left->first + left->second.bytes == it->first && left->second.tag == it->second.tag) {
      const int64_t offset = left->first;
      const FreeBlock merged{left->second.bytes + it->second.bytes, it->second.tag,
                             std::max(left->second.fence, it->second.fence)};
      erase_free(it);
      erase_free(left);
      insert_free(offset, merged);
      it = free_.find(offset);
    }
  }
  auto right = std::next(it);
  if (right != free_.end() && it->first + it->second.bytes == right->first && right->second.tag == it->second.tag) {
    const int64_t offset = it->first;
    const FreeBlock merged{it->second.bytes + right->second.bytes, it->second.tag,
                           std::max(it->second.fence, right->second.fence)};
    erase_free(right);
    erase_free(it);
    insert_free(offset, merged);
    it = free_.find(offset);
  }
  return it;
}

void PoolArena::release(int64_t offset, int tag, uint64_t fence) {
  auto a = allocated_.find(offset);
  TANDEM_CHECK_MSG(a != allocated_.end(), "PoolArena: release of offset " << offset << ", which is not allocated");
  const int64_t bytes = a->second;
  allocated_.erase(a);
  used_ -= bytes;
  insert_free(offset, FreeBlock{bytes, tag, fence});
  merge_around(free_.find(offset));
}

void PoolArena::retire(int stream, uint64_t completed) {
  std::vector<int64_t> ready;
  for (const auto& [offset, block] : free_)
    if (block.tag == stream && block.fence <= completed) ready.push_back(offset);
  for (int64_t offset : ready) {
    auto it = free_.find(offset);
    if (it == free_.end()) continue;   // merged into a block retagged before it
    it->second.tag = kAnyStream;
    it->second.fence = 0;
    merge_around(it);
  }
}

int64_t PoolArena::largest_free_block() const { return by_size_.empty() ? 0 : std::get<0>(*by_size_.rbegin()); }

int64_t PoolArena::block_bytes(int64_t offset) const {
  auto a = allocated_.find(offset);
  TANDEM_CHECK_MSG(a != allocated_.end(), "PoolArena: offset " << offset << " is not allocated");
  return a->second;
}

// ---------------------------------------------------------------- sizing

std::string mib_text(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

namespace {

// Device bytes (fp32 storage) per program byte of a buffer of `role`.
double fp32_factor(BufferRole role, const BytesPerParameter& bpp, double element_bytes) {
  switch (role) {
    case BufferRole::Parameter: return 4.0 / bpp.weights;
    case BufferRole::Gradient: return 4.0 / bpp.gradients;
    case BufferRole::OptimizerState: return 8.0 / bpp.optimizer;   // exp_avg + exp_avg_sq
    case BufferRole::Activation:
    case BufferRole::Workspace:
    case BufferRole::Message: return 4.0 / element_bytes;
  }
  return 1.0;
}

double element_bytes_of(DType dtype) { return dtype == DType::FP32 ? 4.0 : 2.0; }

}  // namespace

PoolSizing size_pool(const RankProgram& program, DType dtype) {
  TrainingConfig training;
  training.params_dtype = dtype;
  return size_pool(program, training);
}

PoolSizing size_pool(const RankProgram& program, const TrainingConfig& training) {
  const BytesPerParameter bpp = bytes_per_parameter(training);
  const double e = element_bytes_of(training.params_dtype);
  PoolSizing s;
  double live = 0;
  for (const Instruction& ins : program.instructions) {
    if (ins.kind != OpKind::Alloc && ins.kind != OpKind::Free) continue;
    TANDEM_CHECK_MSG(ins.buffer >= 0 && static_cast<size_t>(ins.buffer) < program.buffers.size(),
                     "size_pool: instruction names buffer " << ins.buffer);
    const Buffer& b = program.buffers[static_cast<size_t>(ins.buffer)];
    const double bytes = b.bytes * fp32_factor(b.role, bpp, e);
    live += ins.kind == OpKind::Alloc ? bytes : -bytes;
    s.fp32_peak_bytes = std::max(s.fp32_peak_bytes, live);
  }
  s.program_peak_bytes = program.peak_bytes();
  s.margin_bytes = kPoolMarginFraction * s.fp32_peak_bytes + kPoolMarginBytes;
  const double a = double(PoolArena::kAlignment);
  s.pool_bytes = std::ceil((s.fp32_peak_bytes + s.margin_bytes) / a) * a;
  return s;
}

double choose_pool_bytes(const PoolSizing& sizing, double free_device_bytes, const std::string& override_text) {
  const double usable = std::max(0.0, free_device_bytes - kReservedDeviceBytes);
  if (!override_text.empty()) {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(override_text.c_str(), &end);
    if (end == override_text.c_str() || *end != '\0' || errno != 0 || v < 0)
      throw_field_error("TANDEM_CUDA_POOL_BYTES", override_text, "must be a byte count (0: grow on demand)");
    if (v > usable)
      throw_field_error("TANDEM_CUDA_POOL_BYTES", override_text,
                        "exceeds the " + mib_text(usable) + " the device can give (free less the reserve)");
    return v;
  }
  if (sizing.fp32_peak_bytes > usable)
    throw UserError("this rank's program needs " + mib_text(sizing.fp32_peak_bytes) +
                    " of device memory in fp32 (its predicted peak), more than the " + mib_text(usable) +
                    " free on the device after a reserve of " + mib_text(kReservedDeviceBytes) +
                    ": use a smaller --micro-batch-size, more recompute, or more tensor/pipeline parallelism");
  const double a = double(PoolArena::kAlignment);
  return std::min(sizing.pool_bytes, std::floor(usable / a) * a);
}

// ---------------------------------------------------------------- messages

namespace {

std::string mib(int64_t bytes) { return mib_text(double(bytes)); }

}  // namespace

std::string pool_exhausted_message(const PoolUsage& u) {
  return "CUDA memory pool exhausted on device " + std::to_string(u.device) + ": the pool holds " +
         mib(u.pool_bytes) + " (this rank's predicted peak in fp32 plus margin), " + mib(u.requested_bytes) +
         " requested, " + mib(u.live_bytes) + " live in tensors, " + mib(u.free_bytes) + " free (largest block " +
         mib(u.largest_free) + "). Use a smaller --micro-batch-size, more recompute (--recompute-activations or "
         "--recompute-granularity full), more tensor or pipeline parallelism, or set TANDEM_CUDA_POOL_BYTES "
         "(0: grow on demand)";
}

// ---------------------------------------------------------------- DevicePool

namespace {

struct Segment {
  void* base = nullptr;
  PoolArena arena;
};

// Events recorded on one stream at releases, in order; fence numbers count them.
struct StreamFences {
  uint64_t next = 1;        // fence number of the next record
  uint64_t completed = 0;   // every fence <= this has completed on the GPU
  std::deque<std::pair<uint64_t, cudaEvent_t>> in_flight;
};

// A block used by several streams: held until each stream has passed its fence.
struct HeldBlock {
  size_t segment = 0;
  int64_t offset = 0;
  std::vector<std::pair<int, uint64_t>> fences;   // (stream, fence)
};

}  // namespace

struct PoolState {
  static constexpr size_t kPollEvery = 256;   // events in flight on a stream before a poll
  int device = 0;
  bool growing = false;
  bool closed = false;   // the device is gone: no streams to record on
  std::array<cudaStream_t, kPoolStreams> streams{};
  std::vector<Segment> segments;
  std::array<StreamFences, kPoolStreams> fences;
  std::vector<cudaEvent_t> spare_events;
  std::deque<HeldBlock> held;
  int64_t live = 0, peak = 0;

  ~PoolState() {
    for (auto& f : fences)
      for (auto& e : f.in_flight) cudaEventDestroy(e.second);
    for (cudaEvent_t e : spare_events) cudaEventDestroy(e);
    for (Segment& s : segments) cudaFree(s.base);   // no throw from a destructor
  }

  int64_t capacity() const {
    int64_t c = 0;
    for (const Segment& s : segments) c += s.arena.capacity();
    return c;
  }

  void add_segment(int64_t bytes) {
    void* base = nullptr;
    const cudaError_t err = cudaMalloc(&base, static_cast<size_t>(bytes));
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw PoolExhausted("cudaMalloc of " + mib(bytes) + " for the CUDA memory pool on device " +
                          std::to_string(device) + " failed (" + cudaGetErrorString(err) + "); " +
                          mib(capacity()) + " already held");
    }
    segments.push_back(Segment{base, PoolArena(bytes)});
  }

  // Records an event on `stream`; returns its fence number. Completed events are collected
  // now and then, so a program that never runs short keeps a bounded number of them.
  uint64_t record(int stream) {
    StreamFences& f = fences[static_cast<size_t>(stream)];
    if (f.in_flight.size() >= kPollEvery) poll();
    cudaEvent_t e = nullptr;
    if (spare_events.empty()) {
      TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    } else {
      e = spare_events.back();
      spare_events.pop_back();
    }
    TANDEM_CUDA_CHECK(cudaEventRecord(e, streams[static_cast<size_t>(stream)]));
    f.in_flight.emplace_back(f.next, e);
    return f.next++;
  }

  // Advances the completed fences; frees what they release. True when anything completed.
  bool poll() {
    bool progress = false;
    for (int s = 0; s < kPoolStreams; ++s) {
      StreamFences& f = fences[static_cast<size_t>(s)];
      const uint64_t before = f.completed;
      while (!f.in_flight.empty()) {
        const cudaError_t q = cudaEventQuery(f.in_flight.front().second);
        if (q == cudaErrorNotReady) break;
        TANDEM_CUDA_CHECK(q);
        f.completed = f.in_flight.front().first;
        spare_events.push_back(f.in_flight.front().second);
        f.in_flight.pop_front();
      }
      if (f.completed == before) continue;
      progress = true;
      for (Segment& seg : segments) seg.arena.retire(s, f.completed);
    }
    if (progress) release_held();
    return progress;
  }

  void release_held() {
    std::erase_if(held, [this](const HeldBlock& h) {
      for (const auto& [s, fence] : h.fences)
        if (fences[static_cast<size_t>(s)].completed < fence) return false;
      segments[h.segment].arena.release(h.offset);
      return true;
    });
  }

  bool waiting() const {
    for (const auto& f : fences)
      if (!f.in_flight.empty()) return true;
    return false;
  }

  std::optional<std::pair<size_t, int64_t>> try_place(int64_t bytes, int stream) {
    for (size_t i = 0; i < segments.size(); ++i)
      if (auto off = segments[i].arena.allocate(bytes, stream)) return std::make_pair(i, *off);
    return std::nullopt;
  }

  std::pair<size_t, int64_t> place(int64_t bytes, int stream);
  void give_back(size_t segment, int64_t offset, int64_t rounded, unsigned used);
};

std::pair<size_t, int64_t> PoolState::place(int64_t bytes, int stream) {
  if (auto p = try_place(bytes, stream)) return *p;
  if (poll())
    if (auto p = try_place(bytes, stream)) return *p;
  if (growing) {
    // Segments grow geometrically: a few cudaMalloc calls cover any run.
    const int64_t want = std::max({PoolArena::round_up(bytes), capacity() / 2, int64_t{64} << 20});
    add_segment(PoolArena::round_up(want));
    return *try_place(bytes, stream);
  }
  // Full: frees still in flight on the GPU may make room; wait for them, not forever.
  const auto start = std::chrono::steady_clock::now();
  while (waiting() && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < kPoolWaitSeconds) {
    if (!poll()) std::this_thread::sleep_for(std::chrono::microseconds(50));
    if (auto p = try_place(bytes, stream)) return *p;
  }
  PoolUsage u;
  u.device = device;
  u.pool_bytes = capacity();
  u.requested_bytes = bytes;
  u.live_bytes = live;
  for (const Segment& s : segments) {
    u.free_bytes += s.arena.free_bytes();
    u.largest_free = std::max(u.largest_free, s.arena.largest_free_block());
  }
  throw PoolExhausted(pool_exhausted_message(u));
}

void PoolState::give_back(size_t segment, int64_t offset, int64_t rounded, unsigned used) {
  live -= rounded;
  PoolArena& arena = segments[segment].arena;
  if (closed || used == 0) {
    arena.release(offset);
    return;
  }
  HeldBlock h{segment, offset, {}};
  for (int s = 0; s < kPoolStreams; ++s)
    if (used & (1u << static_cast<unsigned>(s))) h.fences.emplace_back(s, record(s));
  if (h.fences.size() == 1) {
    arena.release(offset, h.fences[0].first, h.fences[0].second);
    return;
  }
  held.push_back(std::move(h));
}

PoolAllocation::~PoolAllocation() {
  if (!state_) return;
  try {
    state_->give_back(segment_, offset_, PoolArena::round_up(bytes_), used_streams_);
  } catch (const std::exception& e) {
    // A destructor must not throw; a failed event record leaves the block held (a leak).
    std::fprintf(stderr, "tandem: CUDA pool release failed: %s\n", e.what());
  }
}

DevicePool::DevicePool(int device, int64_t pool_bytes, const std::array<cudaStream_t, kPoolStreams>& streams)
    : state_(std::make_shared<PoolState>()) {
  if (pool_bytes < 0)
    throw std::invalid_argument("DevicePool: pool_bytes = " + std::to_string(pool_bytes) + " is negative");
  state_->device = device;
  state_->streams = streams;
  state_->growing = pool_bytes == 0;
  if (pool_bytes > 0) state_->add_segment(PoolArena::round_up(pool_bytes));
}

DevicePool::~DevicePool() { state_->closed = true; }

std::shared_ptr<PoolAllocation> DevicePool::allocate(int64_t bytes, int stream) {
  if (stream < 0 || stream >= kPoolStreams)
    throw std::invalid_argument("DevicePool::allocate: stream = " + std::to_string(stream) + " is not a stream");
  const auto [segment, offset] = state_->place(bytes, stream);
  std::shared_ptr<PoolAllocation> a(new PoolAllocation());
  a->state_ = state_;
  a->segment_ = segment;
  a->offset_ = offset;
  a->bytes_ = bytes;
  a->ptr_ = static_cast<char*>(state_->segments[segment].base) + offset;
  a->mark_used(stream);
  state_->live += PoolArena::round_up(bytes);
  state_->peak = std::max(state_->peak, state_->live);
  return a;
}

int64_t DevicePool::live_bytes() const { return state_->live; }
int64_t DevicePool::peak_bytes() const { return state_->peak; }
void DevicePool::reset_peak() { state_->peak = state_->live; }
int64_t DevicePool::capacity() const { return state_->capacity(); }

}  // namespace tandem::cuda
