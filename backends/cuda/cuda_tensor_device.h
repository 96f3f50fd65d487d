#pragma once
// The CUDA implementation of exec::Device: fp32 tensors in device memory from one pool
// (cuda_pool.h), work issued on one cudaStream_t per program stream (StreamKind), program
// events as cudaEvent_t, kernels from backends/cuda/ops_*.cuh (one file pair per op family).
//
// Numerics: storage is fp32 (parameters are the fp32 master weights). GEMMs and attention
// round their operands to bf16 and accumulate in fp32, as Megatron's bf16 runs do; every
// other kernel computes in fp32 with the math shared with the CPU backend (backends/kernel_math).
//
// Which file implements what (the class is one, its definition is spread by op family):
//   cuda_device_core.cpp    construction, memory, upload/download, streams/events, synchronize
//   cuda_device_ops_a.cpp   elementwise, reductions, dropout, embedding, norms, activations,
//                           RoPE, cross-entropy, AdamW
//   cuda_device_ops_b*.cpp  GEMMs (cuBLASLt), grouped GEMMs, attention, QKV split/merge,
//                           router, permute/unpermute, gather/scatter rows
//
// This header is host C++: it includes only the CUDA runtime and cuBLASLt API headers.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "backends/executor/device.h"

namespace tandem::cuda {

class DevicePool;   // cuda_pool.h

struct CudaDeviceOptions {
  int device = 0;                 // CUDA device index (node-local rank modulo visible devices)
  double pool_bytes = 0;          // 0: grow on demand (cudaMalloc per allocation)
};

class CudaDevice final : public exec::Device {
 public:
  explicit CudaDevice(CudaDeviceOptions options = {});
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;
  const char* name() const override { return "cuda"; }

  exec::DeviceTensor empty(exec::Shape shape) override;
  void upload(std::span<const float> host, const exec::DeviceTensor& dst) override;
  void download(const exec::DeviceTensor& src, std::span<float> host) override;
  float* address(const exec::DeviceTensor& t) override;
  MemoryStats memory_stats() const override;
  void reset_peak() override;

  void set_stream(StreamKind stream) override;
  void record_event(int32_t event) override;
  void wait_event(int32_t event) override;
  void synchronize() override;

  void fill(const exec::DeviceTensor& t, float value) override;
  void copy(const exec::DeviceTensor& src, const exec::DeviceTensor& dst) override;
  void add(const exec::DeviceTensor& a, const exec::DeviceTensor& b, const exec::DeviceTensor& out) override;
  void axpy(float alpha, const exec::DeviceTensor& x, const exec::DeviceTensor& y) override;
  void scale(const exec::DeviceTensor& x, float factor) override;
  void add_row_vector(const exec::DeviceTensor& x, const exec::DeviceTensor& bias) override;
  void column_sums_accumulate(const exec::DeviceTensor& x, const exec::DeviceTensor& out) override;
  void copy_columns(const exec::DeviceTensor& src, int64_t begin, const exec::DeviceTensor& dst) override;
  void dropout(const exec::DeviceTensor& x, float p, uint64_t key, std::span<const int64_t> row_ids) override;
  double sum_of_squares(const exec::DeviceTensor& x) override;
  double sum(const exec::DeviceTensor& x) override;

  void gemm_forward(const exec::DeviceTensor& x, const exec::DeviceTensor& w, const exec::DeviceTensor& bias,
                    exec::WeightLayout layout, const exec::DeviceTensor& y) override;
  void gemm_grad_input(const exec::DeviceTensor& dy, const exec::DeviceTensor& w, exec::WeightLayout layout,
                       const exec::DeviceTensor& dx) override;
  void gemm_grad_weight(const exec::DeviceTensor& x, const exec::DeviceTensor& dy, exec::WeightLayout layout,
                        const exec::DeviceTensor& dw, const exec::DeviceTensor& dbias) override;
  void grouped_gemm_forward(const exec::DeviceTensor& x, const exec::DeviceTensor& w, std::span<const int64_t> counts,
                            const exec::DeviceTensor& y) override;
  void grouped_gemm_grad_input(const exec::DeviceTensor& dy, const exec::DeviceTensor& w,
                               std::span<const int64_t> counts, const exec::DeviceTensor& dx) override;
  void grouped_gemm_grad_weight(const exec::DeviceTensor& x, const exec::DeviceTensor& dy,
                                std::span<const int64_t> counts, const exec::DeviceTensor& dw) override;

  void embedding_forward(std::span<const int32_t> ids, const exec::DeviceTensor& table, int64_t vocab_start,
                         const exec::DeviceTensor& out) override;
  void embedding_backward(std::span<const int32_t> ids, const exec::DeviceTensor& d_out, int64_t vocab_start,
                          const exec::DeviceTensor& d_table) override;
  void norm_forward(exec::NormKind kind, const exec::DeviceTensor& x, const exec::DeviceTensor& gamma,
                    const exec::DeviceTensor& beta, float eps, const exec::DeviceTensor& y,
                    const exec::DeviceTensor& mean, const exec::DeviceTensor& rstd) override;
  void norm_backward(exec::NormKind kind, const exec::DeviceTensor& x, const exec::DeviceTensor& gamma,
                     const exec::DeviceTensor& mean, const exec::DeviceTensor& rstd, const exec::DeviceTensor& dy,
                     const exec::DeviceTensor& dx, const exec::DeviceTensor& dgamma,
                     const exec::DeviceTensor& dbeta) override;
  void activation_forward(exec::ActivationKind kind, const exec::DeviceTensor& x,
                          const exec::DeviceTensor& y) override;
  void activation_backward(exec::ActivationKind kind, const exec::DeviceTensor& x, const exec::DeviceTensor& dy,
                           const exec::DeviceTensor& dx) override;

  void rope_forward(const exec::DeviceTensor& x, std::span<const int32_t> positions, double base,
                    const exec::DeviceTensor& y) override;
  void rope_backward(const exec::DeviceTensor& dy, std::span<const int32_t> positions, double base,
                     const exec::DeviceTensor& dx) override;
  void attention_forward(const exec::DeviceTensor& q, const exec::DeviceTensor& k, const exec::DeviceTensor& v,
                         const exec::AttentionArgs& args, const exec::DeviceTensor& out,
                         const exec::DeviceTensor& lse) override;
  void attention_backward(const exec::DeviceTensor& q, const exec::DeviceTensor& k, const exec::DeviceTensor& v,
                          const exec::DeviceTensor& out, const exec::DeviceTensor& lse,
                          const exec::DeviceTensor& d_out, const exec::AttentionArgs& args,
                          const exec::DeviceTensor& dq, const exec::DeviceTensor& dk,
                          const exec::DeviceTensor& dv) override;
  void attention_backward_block(const exec::DeviceTensor& q, const exec::DeviceTensor& k, const exec::DeviceTensor& v,
                                const exec::DeviceTensor& out, const exec::DeviceTensor& lse,
                                const exec::DeviceTensor& d_out, const exec::AttentionArgs& args,
                                const exec::DeviceTensor& dq, const exec::DeviceTensor& dk,
                                const exec::DeviceTensor& dv) override;
  void attention_merge(const exec::DeviceTensor& out, const exec::DeviceTensor& lse, const exec::DeviceTensor& out_blk,
                       const exec::DeviceTensor& lse_blk, int64_t row0) override;
  void split_qkv(const exec::DeviceTensor& mixed, int64_t groups, int64_t qpg, int64_t d, const exec::DeviceTensor& q,
                 const exec::DeviceTensor& k, const exec::DeviceTensor& v) override;
  void merge_qkv(const exec::DeviceTensor& q, const exec::DeviceTensor& k, const exec::DeviceTensor& v, int64_t groups,
                 int64_t qpg, int64_t d, const exec::DeviceTensor& mixed) override;

  void cross_entropy_partials(const exec::DeviceTensor& logits, std::span<const int32_t> targets, int64_t vocab_start,
                              const exec::DeviceTensor& max, const exec::DeviceTensor& sum_exp,
                              const exec::DeviceTensor& target_logit) override;
  void rescale_sum_exp(const exec::DeviceTensor& sum_exp, const exec::DeviceTensor& local_max,
                       const exec::DeviceTensor& global_max) override;
  void cross_entropy_loss(const exec::DeviceTensor& max, const exec::DeviceTensor& sum_exp,
                          const exec::DeviceTensor& target_logit, const exec::DeviceTensor& loss) override;
  void cross_entropy_backward(const exec::DeviceTensor& logits, std::span<const int32_t> targets, int64_t vocab_start,
                              const exec::DeviceTensor& max, const exec::DeviceTensor& sum_exp,
                              const exec::DeviceTensor& d_loss, const exec::DeviceTensor& d_logits) override;

  exec::RoutingResult router_forward(const exec::DeviceTensor& logits, const exec::RouterArgs& args) override;
  void router_backward(const exec::DeviceTensor& logits, const exec::RoutingResult& routing,
                       const exec::DeviceTensor& d_probs, double aux_coeff, std::span<const int64_t> routed_per_expert,
                       int64_t total_tokens, double d_aux, const exec::DeviceTensor& d_logits) override;
  double router_aux_loss(const exec::RoutingResult& routing, double aux_coeff,
                         std::span<const int64_t> routed_per_expert, int64_t total_tokens) override;
  void permute_forward(const exec::DeviceTensor& tokens, const exec::PermutationPlan& plan,
                       const exec::DeviceTensor& out) override;
  void permute_backward(const exec::DeviceTensor& d_out, const exec::PermutationPlan& plan,
                        const exec::DeviceTensor& d_tokens) override;
  void unpermute_forward(const exec::DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                         const exec::DeviceTensor& probs, const exec::DeviceTensor& y) override;
  void unpermute_backward(const exec::DeviceTensor& expert_out, const exec::PermutationPlan& plan,
                          const exec::DeviceTensor& probs, const exec::DeviceTensor& d_y,
                          const exec::DeviceTensor& d_expert_out, const exec::DeviceTensor& d_probs) override;
  void gather_rows(const exec::DeviceTensor& in, std::span<const int64_t> index, const exec::DeviceTensor& out) override;
  void scatter_add_rows(const exec::DeviceTensor& in, std::span<const int64_t> index,
                        const exec::DeviceTensor& out) override;

  void adamw_step(const exec::DeviceTensor& param, const exec::DeviceTensor& grad, const exec::DeviceTensor& exp_avg,
                  const exec::DeviceTensor& exp_avg_sq, float lr, float beta1, float beta2, float eps,
                  float weight_decay, int64_t step, float grad_scale) override;

  // ---- for the kernel files (not part of exec::Device)
  cudaStream_t stream() const { return current_; }        // the current stream
  int device_index() const { return options_.device; }
  // Device pointer of a tensor's first element (const for inputs).
  const float* in(const exec::DeviceTensor& t) { return address(t); }
  // cuBLASLt handle and its workspace (created on first use, cuda_device_ops_b.cpp).
  cublasLtHandle_t cublaslt();
  void* gemm_workspace(size_t* bytes);
  // Scratch bytes on the device for one call's temporaries (bf16 copies, partial sums); freed
  // when the returned handle dies. The stream ordering keeps reuse safe.
  std::shared_ptr<void> scratch(size_t bytes);

 private:
  void release_gemm_resources();   // cuda_device_ops_b.cpp

  CudaDeviceOptions options_;
  std::unique_ptr<DevicePool> pool_;
  std::array<cudaStream_t, 8> streams_{};   // indexed by StreamKind
  cudaStream_t current_ = nullptr;
  std::unordered_map<int32_t, cudaEvent_t> events_;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  size_t lt_workspace_bytes_ = 0;
};

}  // namespace tandem::cuda
