#pragma once
// The CPU implementation of exec::Device: host memory, every call synchronous (streams and
// events are accepted and need nothing), kernels from backends/cpu/ops_*.h. Operands are checked
// with the shape rules shared with the CUDA device (backends/executor/shape_rules.h): a shape
// violation throws exec::ShapeError.
#include <memory>

#include "backends/executor/device.h"

namespace tandem::cpu {

class CpuDevice final : public exec::Device {
 public:
  CpuDevice();
  const char* name() const override { return "cpu"; }

  exec::DeviceTensor empty(exec::Shape shape) override;
  void upload(std::span<const float> host, const exec::DeviceTensor& dst) override;
  void download(const exec::DeviceTensor& src, std::span<float> host) override;
  float* address(const exec::DeviceTensor& t) override;
  MemoryStats memory_stats() const override;
  void reset_peak() override;

  void set_stream(StreamKind stream) override { (void)stream; }
  void record_event(int32_t event) override { (void)event; }
  void wait_event(int32_t event) override { (void)event; }
  void synchronize() override {}

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

  struct Counter {
    double live = 0, peak = 0;
  };

 private:
  std::shared_ptr<Counter> counter_;   // shared with every allocation, which outlives nothing it needs
};

}  // namespace tandem::cpu
