// CudaDevice: construction, memory, upload/download, streams and events (cuda_tensor_device.h).
// Host code only (the CUDA runtime API); the kernels live in cuda_device_ops_a/b.cu.
#include <cuda_runtime_api.h>

#include <string>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_pool.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "core/check.h"

namespace tandem::cuda {
namespace {

using exec::DeviceTensor;

constexpr size_t kStreamKinds = static_cast<size_t>(StreamKind::DpComm) + 1;   // streams in use
static_assert(kStreamKinds <= kPoolStreams, "every StreamKind needs a slot in the pool's stream table");

// One tensor allocation: a pool block of `elements` fp32 values.
class CudaStorage final : public exec::DeviceStorage {
 public:
  CudaStorage(std::shared_ptr<PoolAllocation> block, int64_t elements)
      : block_(std::move(block)), elements_(elements) {}
  int64_t size() const override { return elements_; }
  float* data() const { return static_cast<float*>(block_->data()); }
  void mark_used(int stream) { block_->mark_used(stream); }

 private:
  std::shared_ptr<PoolAllocation> block_;
  int64_t elements_ = 0;
};

}  // namespace

CudaDevice::CudaDevice(CudaDeviceOptions options) : options_(options) {
  int count = 0;
  TANDEM_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (options_.device < 0 || options_.device >= count)
    throw_field_error("device", options_.device, "is not one of the " + std::to_string(count) + " visible CUDA devices");
  if (options_.pool_bytes < 0) throw_field_error("pool_bytes", options_.pool_bytes, "must be 0 (grow) or positive");
  TANDEM_CUDA_CHECK(cudaSetDevice(options_.device));
  try {
    for (size_t s = 0; s < kStreamKinds; ++s)
      TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&streams_[s], cudaStreamNonBlocking));
    current_ = streams_[static_cast<size_t>(StreamKind::Compute)];
    pool_ = std::make_unique<DevicePool>(options_.device, static_cast<int64_t>(options_.pool_bytes), streams_);
  } catch (...) {
    for (cudaStream_t& s : streams_)
      if (s != nullptr) cudaStreamDestroy(s);
    throw;
  }
}

CudaDevice::~CudaDevice() {
  // No throwing from here: errors of earlier asynchronous work were reported by the calls
  // that synchronised; what is left is released as well as the runtime allows.
  cudaSetDevice(options_.device);
  for (cudaStream_t s : streams_)
    if (s != nullptr) cudaStreamSynchronize(s);
  try {
    release_gemm_resources();
  } catch (...) {
  }
  pool_.reset();   // tensors still alive keep their memory; they no longer record on our streams
  for (auto& [index, event] : events_) cudaEventDestroy(event);
  for (cudaStream_t s : streams_)
    if (s != nullptr) cudaStreamDestroy(s);
  cudaGetLastError();
}

namespace {

int stream_slot(const std::array<cudaStream_t, 8>& streams, cudaStream_t current) {
  for (size_t s = 0; s < streams.size(); ++s)
    if (streams[s] == current) return static_cast<int>(s);
  TANDEM_CHECK_MSG(false, "the current stream is not one of the device's streams");
  return 0;
}

CudaStorage& storage_of(const DeviceTensor& t) {
  TANDEM_CHECK_MSG(t.defined(), "an undefined tensor handed to the CUDA device");
  auto* s = dynamic_cast<CudaStorage*>(t.storage.get());
  TANDEM_CHECK_MSG(s != nullptr, "tensor of another device handed to the CUDA device");
  TANDEM_CHECK_MSG(t.offset >= 0 && t.offset + t.numel() <= s->size(),
                   "view [" << t.offset << ", " << t.offset + t.numel() << ") of a storage of " << s->size());
  return *s;
}

}  // namespace

DeviceTensor CudaDevice::empty(exec::Shape shape) {
  for (int64_t d : shape) TANDEM_CHECK_MSG(d >= 0, "negative dimension " << d << " of a CUDA tensor");
  const int64_t n = exec::numel_of(shape);
  auto block = pool_->allocate(n * static_cast<int64_t>(sizeof(float)), stream_slot(streams_, current_));
  return DeviceTensor{std::make_shared<CudaStorage>(std::move(block), n), 0, std::move(shape)};
}

void CudaDevice::upload(std::span<const float> host, const DeviceTensor& dst) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(host.size()) == dst.numel(), "upload of " << host.size() << " into " << dst.numel());
  float* ptr = address(dst);
  if (host.empty()) return;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(ptr, host.data(), host.size_bytes(), cudaMemcpyHostToDevice, current_));
  // The caller may drop its host buffer as soon as we return.
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(current_));
}

void CudaDevice::download(const DeviceTensor& src, std::span<float> host) {
  TANDEM_CHECK_MSG(static_cast<int64_t>(host.size()) == src.numel(), "download of " << src.numel() << " into " << host.size());
  const float* ptr = address(src);
  if (host.empty()) return;
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(host.data(), ptr, host.size_bytes(), cudaMemcpyDeviceToHost, current_));
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(current_));
}

float* CudaDevice::address(const DeviceTensor& t) {
  CudaStorage& s = storage_of(t);
  // Whoever asks for an address issues work on the current stream: the pool must let that
  // stream finish before it hands the memory to another one.
  s.mark_used(stream_slot(streams_, current_));
  return s.data() + t.offset;
}

exec::Device::MemoryStats CudaDevice::memory_stats() const {
  return {static_cast<double>(pool_->live_bytes()), static_cast<double>(pool_->peak_bytes())};
}

void CudaDevice::reset_peak() { pool_->reset_peak(); }

void CudaDevice::set_stream(StreamKind stream) {
  const size_t s = static_cast<size_t>(stream);
  TANDEM_CHECK_MSG(s < kStreamKinds, "stream " << s << " is not a StreamKind");
  current_ = streams_[s];
}

void CudaDevice::record_event(int32_t event) {
  auto it = events_.find(event);
  if (it == events_.end()) {
    cudaEvent_t e = nullptr;
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    it = events_.emplace(event, e).first;
  }
  TANDEM_CUDA_CHECK(cudaEventRecord(it->second, current_));
}

void CudaDevice::wait_event(int32_t event) {
  auto it = events_.find(event);
  TANDEM_CHECK_MSG(it != events_.end(), "wait on event " << event << ", which was never recorded");
  TANDEM_CUDA_CHECK(cudaStreamWaitEvent(current_, it->second, 0));
}

void CudaDevice::synchronize() {
  for (size_t s = 0; s < kStreamKinds; ++s) TANDEM_CUDA_CHECK(cudaStreamSynchronize(streams_[s]));
}

std::shared_ptr<void> CudaDevice::scratch(size_t bytes) {
  std::shared_ptr<PoolAllocation> block =
      pool_->allocate(static_cast<int64_t>(bytes), stream_slot(streams_, current_));
  void* data = block->data();
  return std::shared_ptr<void>(std::move(block), data);
}

}  // namespace tandem::cuda
