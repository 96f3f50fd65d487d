#pragma once
// Device memory of the CUDA backend: one pool per device, sized from the rank's program.
//
//   PoolArena    host bookkeeping of one contiguous region of bytes: offsets only, no CUDA.
//                Best fit over a free list (ties: lowest offset), 256-byte alignment, free
//                blocks coalesce with free neighbours, live and peak bytes. Testable anywhere.
//   size_pool    the pool size of a program: its Alloc/Free walk re-counted in the device's
//                fp32 storage, plus a stated margin for what the program does not name.
//   DevicePool   the device side: cudaMalloc'ed segments managed by arenas. Fixed size (one
//                segment of the predicted size; exhaustion throws PoolExhausted) or growing
//                (pool_bytes 0: a new segment whenever nothing fits).
//
// Streams and reuse. A block's memory may still be read by kernels when its tensor dies on
// the host, so a freed block is reusable at once only by the stream that last used it (stream
// order protects it): an allocation records which streams touched it (mark_used, called for
// every address handed to a kernel or a communicator), and on release an event is recorded
// on each of those streams. A block used by one stream returns to the arena tagged with that
// stream and becomes free for every stream once the event has completed; a block used by
// several streams stays held until all its events have completed. Nothing waits on the GPU
// from the host except when the pool is full (then the pool polls the events, for at most
// kPoolWaitSeconds, before it reports exhaustion).
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>

#include "core/check.h"
#include "core/job.h"
#include "program/program.h"

namespace tandem::cuda {

inline constexpr int kPoolStreams = 8;            // StreamKind values (CudaDevice::streams_)
inline constexpr double kPoolWaitSeconds = 30.0;  // longest wait for in-flight frees when full

// ---- host bookkeeping

class PoolArena {
 public:
  static constexpr int64_t kAlignment = 256;   // bytes; every block starts and ends on it
  static constexpr int kAnyStream = -1;        // free-block tag: usable by every stream

  explicit PoolArena(int64_t capacity);         // bytes, a multiple of kAlignment (> 0)

  // Bytes a request occupies: rounded up to kAlignment, at least kAlignment (a zero-byte
  // tensor still gets a distinct address).
  static int64_t round_up(int64_t bytes);

  // Offset of a new block of round_up(bytes), from the smallest free block that fits and is
  // usable by `stream` (tagged kAnyStream or `stream`); nullopt when none fits.
  std::optional<int64_t> allocate(int64_t bytes, int stream = kAnyStream);
  // Returns the block at `offset` (from allocate) to the free list, tagged with the stream
  // that may reuse it at once (kAnyStream: everyone) and that stream's fence number.
  void release(int64_t offset, int tag = kAnyStream, uint64_t fence = 0);
  // Free blocks tagged `stream` whose fence is <= `completed` become usable by every stream.
  void retire(int stream, uint64_t completed);

  int64_t capacity() const { return capacity_; }
  int64_t used_bytes() const { return used_; }          // allocated blocks
  int64_t peak_used_bytes() const { return peak_; }     // max of used_bytes since reset_peak
  void reset_peak() { peak_ = used_; }
  int64_t free_bytes() const { return capacity_ - used_; }
  int64_t largest_free_block() const;                   // any tag
  size_t free_blocks() const { return free_.size(); }
  size_t live_blocks() const { return allocated_.size(); }
  int64_t block_bytes(int64_t offset) const;            // of an allocated block

 private:
  struct FreeBlock {
    int64_t bytes = 0;
    int tag = kAnyStream;
    uint64_t fence = 0;
  };
  using FreeIt = std::map<int64_t, FreeBlock>::iterator;
  void insert_free(int64_t offset, FreeBlock block);
  void erase_free(FreeIt it);
  FreeIt merge_around(FreeIt it);   // coalesces with equally tagged neighbours

  int64_t capacity_ = 0, used_ = 0, peak_ = 0;
  std::map<int64_t, FreeBlock> free_;                   // offset -> block
  std::set<std::tuple<int64_t, int64_t>> by_size_;      // (bytes, offset) of free blocks
  std::unordered_map<int64_t, int64_t> allocated_;      // offset -> bytes
};

// ---- sizing

// What a pool must hold for one rank's program. The program counts buffers in the job's dtype
// (bf16 activations, 2 + 4 + 12 bytes per parameter ...); the device stores every tensor in
// fp32: 4 bytes per activation element, 4 per parameter and per gradient, 8 per parameter of
// optimizer state (Adam's two moments, over the distributed-optimizer shard).
// The margin covers what the program does not name: the executor's temporaries (measured
// 5-12% above the program's peak on the CPU device), the kernels' scratch (bf16 operand
// copies of GEMMs and attention) and alignment: kPoolMarginFraction of the fp32 peak plus
// kPoolMarginBytes.
inline constexpr double kPoolMarginFraction = 0.25;
inline constexpr double kPoolMarginBytes = 256.0 * 1024 * 1024;

struct PoolSizing {
  double program_peak_bytes = 0;   // RankProgram::peak_bytes(), in the job's dtype
  double fp32_peak_bytes = 0;      // the same Alloc/Free walk in fp32 storage
  double margin_bytes = 0;
  double pool_bytes = 0;           // fp32 peak + margin, rounded up to PoolArena::kAlignment
};

// `training`: the job's training settings (the program's element type and gradient-buffer dtype
// decide how many program bytes a buffer's fp32 storage takes); `dtype` alone: no bf16 gradients.
PoolSizing size_pool(const RankProgram& program, const TrainingConfig& training);
PoolSizing size_pool(const RankProgram& program, DType dtype);

// Bytes the device may not give the pool: the CUDA context, NCCL's buffers, cuBLASLt's
// workspace and plans live outside it.
inline constexpr double kReservedDeviceBytes = 1024.0 * 1024 * 1024;

// The pool for a rank: `sizing` (from its program), unless `override_text` (the value of
// $TANDEM_CUDA_POOL_BYTES, empty when unset) says otherwise: a byte count, or 0 to grow on
// demand. Capped by the device's free bytes less kReservedDeviceBytes; UserError when even the
// program's fp32 peak does not fit there, or when the override is not a number.
double choose_pool_bytes(const PoolSizing& sizing, double free_device_bytes, const std::string& override_text);

// ---- device side

// Thrown when a fixed pool cannot place an allocation (a user-level error: the job is too big
// for the predicted memory, or the prediction is off).
class PoolExhausted : public UserError {
 public:
  using UserError::UserError;
};

struct PoolUsage {
  int device = 0;
  int64_t pool_bytes = 0;        // capacity of all segments
  int64_t requested_bytes = 0;   // the allocation that failed
  int64_t live_bytes = 0;        // held by live tensors
  int64_t free_bytes = 0;        // in the arena, any tag
  int64_t largest_free = 0;
};
// "CUDA memory pool exhausted on device 0: ..." naming the sizes and what to do.
std::string pool_exhausted_message(const PoolUsage& usage);

// Bytes as "12.3 MiB", for sizing and exhaustion messages.
std::string mib_text(double bytes);

class DevicePool;
struct PoolState;   // cuda_pool.cpp

// One live allocation; returns its block to the pool when destroyed.
class PoolAllocation {
 public:
  ~PoolAllocation();
  PoolAllocation(const PoolAllocation&) = delete;
  PoolAllocation& operator=(const PoolAllocation&) = delete;
  void* data() const { return ptr_; }
  int64_t bytes() const { return bytes_; }            // as requested
  void mark_used(int stream) { used_streams_ |= 1u << static_cast<unsigned>(stream); }

 private:
  friend class DevicePool;
  PoolAllocation() = default;
  std::shared_ptr<PoolState> state_;   // keeps the segments alive while a tensor lives
  size_t segment_ = 0;
  int64_t offset_ = 0, bytes_ = 0;
  void* ptr_ = nullptr;
  unsigned used_streams_ = 0;          // bit s: stream s touched the memory
};

class DevicePool {
 public:
  // pool_bytes > 0: one segment of that size now; 0: segments are added on demand.
  // `streams`: the device's streams, indexed like the stream numbers given to allocate.
  DevicePool(int device, int64_t pool_bytes, const std::array<cudaStream_t, kPoolStreams>& streams);
  ~DevicePool();   // after this, live allocations only give back their bookkeeping
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // `bytes` of device memory for work issued on `stream` (marked used by it).
  std::shared_ptr<PoolAllocation> allocate(int64_t bytes, int stream);

  int64_t live_bytes() const;   // rounded sizes of live allocations
  int64_t peak_bytes() const;   // max of live_bytes since reset_peak
  void reset_peak();
  int64_t capacity() const;     // bytes of device memory the pool holds

 private:
  std::shared_ptr<PoolState> state_;
};

}  // namespace tandem::cuda
