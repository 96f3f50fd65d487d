#pragma once
// The compute device a real backend executes a program on (CPU now, CUDA next).
//
// Tensors are fp32, dense, row-major. A DeviceTensor is a view: shared ownership of a device
// allocation (DeviceStorage, one per backend) + an element offset + a shape. Views of one
// storage alias; `rows`, `slice` and `reshaped` make views, never copies.
//
// Work is issued in order on the current stream (set_stream). Events name instructions: after
// an instruction the executor records its event on the instruction's stream, and before one it
// waits on the events of its deps. A CPU device runs everything synchronously, so streams and
// events are no-ops there; a CUDA device maps them to cudaStream_t / cudaEvent_t. Host results
// (sum_of_squares, router decisions, downloads) synchronise the current stream.
//
// Kernel conventions (as backends/cpu/ops_*.h): outputs are preallocated with the documented
// shape and fully written; gradients of parameters are ACCUMULATED (+=), gradients of
// activations overwritten; an undefined tensor means "absent" for optional arguments. Token rows
// are sequence-first: row = position * micro_batch + sample. Every implementation checks an op's
// shapes with the one set of rules in shape_rules.h before it computes: a violation throws
// exec::ShapeError naming the op, the operand's shape and the rule, on every device alike.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "program/program.h"

namespace tandem::exec {

using Shape = std::vector<int64_t>;
int64_t numel_of(const Shape& shape);

// One allocation on a device; backends derive from it.
class DeviceStorage {
 public:
  virtual ~DeviceStorage() = default;
  virtual int64_t size() const = 0;   // elements
};

struct DeviceTensor {
  std::shared_ptr<DeviceStorage> storage;
  int64_t offset = 0;   // elements into storage
  Shape shape;

  bool defined() const { return storage != nullptr; }
  int64_t numel() const { return numel_of(shape); }
  int64_t dim(size_t i) const { return shape.at(i); }
  // Rows [begin, end) of the first dimension (contiguous).
  DeviceTensor rows(int64_t begin, int64_t end) const;
  // numel(new_shape) elements from element `start` of this view.
  DeviceTensor slice(int64_t start, Shape new_shape) const;
  DeviceTensor reshaped(Shape new_shape) const;   // same elements, new shape
  DeviceTensor flat() const { return reshaped({numel()}); }
  bool same_memory(const DeviceTensor& other) const;   // overlapping ranges of one storage
};

enum class WeightLayout { InOut, OutIn };   // W [k, n] (program convention) or [n, k] (nn.Linear)
enum class NormKind { LayerNorm, RMSNorm };
enum class ActivationKind { GeluTanh, GeluErf, SwiGlu };

// Attention over sequence rows with explicit global positions (context parallelism).
struct AttentionArgs {
  float softmax_scale = 0.0f;              // 0: 1/sqrt(head_dim)
  std::span<const int32_t> q_positions;    // [s_q]; empty: 0..s_q-1
  std::span<const int32_t> kv_positions;   // [s_kv]; empty: 0..s_kv-1
  // Dropout of the probabilities (0: none). The keep mask is a function of (dropout_key, global
  // sample, global head = head_offset + local head, query position, key position).
  float dropout = 0.0f;
  uint64_t dropout_key = 0;
  int64_t head_offset = 0;
  std::span<const int64_t> samples;        // [b] global sample index of each batch element
};

// MoE routing decided on the device, returned to the host (token counts drive the all-to-all).
struct RoutingResult {
  int64_t tokens = 0, experts = 0, topk = 0;
  std::vector<int32_t> expert;              // [T, k]
  std::vector<uint8_t> kept;                // [T, k]
  std::vector<int64_t> routed_per_expert;   // [E] before capacity dropping
  std::vector<int64_t> tokens_per_expert;   // [E] kept
  DeviceTensor probs;                       // [T, k] routing weights (0 where dropped)
  DeviceTensor scores;                      // [T, E] softmax over all experts (sigmoid: the sigmoid)
  bool pre_softmax = false;
  bool sigmoid = false;                     // RouterArgs::sigmoid and scaling_factor the routing used
  double scaling_factor = 0.0;
};

// The router's options (backends/cpu/ops_router.h spells out the math).
struct RouterArgs {
  int64_t topk = 2;
  bool pre_softmax = false;
  double capacity_factor = 0.0;
  bool sigmoid = false;                     // --moe-router-score-function sigmoid
  std::span<const float> expert_bias;       // [E] on the choosing scores (host data); empty: none
  int64_t num_groups = 0, group_topk = 0;   // group-limited routing; 0: not grouped
  double scaling_factor = 0.0;              // --moe-router-topk-scaling-factor; 0: none
};

// Column blocks of a row-major copy: for every row r, block j < blocks and c < width,
//   dst[r, dst_offset + j * dst_stride + c] (+)= src[r, src_offset + j * src_stride + c].
// A stride of 0 repeats one block (src: broadcast, dst with accumulate: sum of the blocks).
// Multi-latent attention splits and joins its per-head [no-RoPE | RoPE] channels with it.
struct ColumnBlocks {
  int64_t blocks = 1, width = 0;
  int64_t src_offset = 0, src_stride = 0;
  int64_t dst_offset = 0, dst_stride = 0;
};

// Permutation of token copies to expert-major order (see backends/cpu/ops_permute.h).
struct PermutationPlan {
  int64_t tokens = 0, topk = 0;
  std::vector<int64_t> source;              // [N] selection index t * k + slot of permuted row j
  std::vector<int64_t> tokens_per_expert;   // [E]
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const char* name() const = 0;

  // ---- memory
  virtual DeviceTensor empty(Shape shape) = 0;   // contents undefined
  DeviceTensor zeros(Shape shape);
  virtual void upload(std::span<const float> host, const DeviceTensor& dst) = 0;
  virtual void download(const DeviceTensor& src, std::span<float> host) = 0;
  std::vector<float> to_host(const DeviceTensor& src);
  // Address of the first element, for communicators (host pointer on CPU, device pointer on GPU).
  virtual float* address(const DeviceTensor& t) = 0;
  // Bytes of live allocations now and at most since reset_peak() (what the run really holds,
  // to set beside the program's symbolic peak).
  struct MemoryStats {
    double live_bytes = 0, peak_bytes = 0;
  };
  virtual MemoryStats memory_stats() const = 0;
  virtual void reset_peak() = 0;

  // ---- streams and events (instruction indices name events)
  virtual void set_stream(StreamKind stream) = 0;
  virtual void record_event(int32_t event) = 0;
  virtual void wait_event(int32_t event) = 0;
  virtual void synchronize() = 0;

  // ---- elementwise and reductions; outputs may alias inputs of the same shape
  virtual void fill(const DeviceTensor& t, float value) = 0;
  virtual void copy(const DeviceTensor& src, const DeviceTensor& dst) = 0;        // equal numel
  virtual void add(const DeviceTensor& a, const DeviceTensor& b, const DeviceTensor& out) = 0;
  virtual void axpy(float alpha, const DeviceTensor& x, const DeviceTensor& y) = 0;   // y += alpha x
  virtual void scale(const DeviceTensor& x, float factor) = 0;
  // x [rows, c] += bias [c] on every row.
  virtual void add_row_vector(const DeviceTensor& x, const DeviceTensor& bias) = 0;
  // out [c] += column sums of x [rows, c].
  virtual void column_sums_accumulate(const DeviceTensor& x, const DeviceTensor& out) = 0;
  // src [R, C] -> dst [R, w] = columns [begin, begin + w).
  virtual void copy_columns(const DeviceTensor& src, int64_t begin, const DeviceTensor& dst) = 0;
  // src [R, Cs] -> dst [R, Cd] block by block (ColumnBlocks); columns of dst outside the blocks
  // keep their values. The default goes through host memory (correct on every device, fast on
  // the CPU); a device may override it with a kernel.
  virtual void copy_column_blocks(const DeviceTensor& src, const DeviceTensor& dst, const ColumnBlocks& blocks,
                                  bool accumulate);
  // x [rows, cols] *= keep / (1 - p), keep[r, c] = hash(key, row_ids[r], c) >= p (a uniform draw).
  virtual void dropout(const DeviceTensor& x, float p, uint64_t key, std::span<const int64_t> row_ids) = 0;
  virtual double sum_of_squares(const DeviceTensor& x) = 0;   // accumulated in double
  virtual double sum(const DeviceTensor& x) = 0;

  // ---- linear layers and grouped (expert) GEMMs; bias/dbias may be undefined
  virtual void gemm_forward(const DeviceTensor& x, const DeviceTensor& w, const DeviceTensor& bias,
                            WeightLayout layout, const DeviceTensor& y) = 0;
  virtual void gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, WeightLayout layout,
                               const DeviceTensor& dx) = 0;
  virtual void gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy, WeightLayout layout,
                                const DeviceTensor& dw, const DeviceTensor& dbias) = 0;
  virtual void grouped_gemm_forward(const DeviceTensor& x, const DeviceTensor& w, std::span<const int64_t> counts,
                                    const DeviceTensor& y) = 0;
  virtual void grouped_gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w,
                                       std::span<const int64_t> counts, const DeviceTensor& dx) = 0;
  virtual void grouped_gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy,
                                        std::span<const int64_t> counts, const DeviceTensor& dw) = 0;

  // ---- embeddings (ids are host data; vocab_start: first row held by this rank)
  virtual void embedding_forward(std::span<const int32_t> ids, const DeviceTensor& table, int64_t vocab_start,
                                 const DeviceTensor& out) = 0;
  virtual void embedding_backward(std::span<const int32_t> ids, const DeviceTensor& d_out, int64_t vocab_start,
                                  const DeviceTensor& d_table) = 0;

  // ---- norms: stats [rows] (LayerNorm: mean then rstd; RMSNorm: rstd only, mean undefined)
  virtual void norm_forward(NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma, const DeviceTensor& beta,
                            float eps, const DeviceTensor& y, const DeviceTensor& mean, const DeviceTensor& rstd) = 0;
  virtual void norm_backward(NormKind kind, const DeviceTensor& x, const DeviceTensor& gamma, const DeviceTensor& mean,
                             const DeviceTensor& rstd, const DeviceTensor& dy, const DeviceTensor& dx,
                             const DeviceTensor& dgamma, const DeviceTensor& dbeta) = 0;

  // ---- activations: GeLU [rows, f] -> [rows, f]; SwiGLU [rows, 2f] -> [rows, f]
  virtual void activation_forward(ActivationKind kind, const DeviceTensor& x, const DeviceTensor& y) = 0;
  virtual void activation_backward(ActivationKind kind, const DeviceTensor& x, const DeviceTensor& dy,
                                   const DeviceTensor& dx) = 0;

  // ---- attention: q [s_q, b, hq, d], k/v [s_kv, b, hkv, d], out like q, lse [b, hq, s_q]
  virtual void rope_forward(const DeviceTensor& x, std::span<const int32_t> positions, double base,
                            const DeviceTensor& y) = 0;
  virtual void rope_backward(const DeviceTensor& dy, std::span<const int32_t> positions, double base,
                             const DeviceTensor& dx) = 0;
  virtual void attention_forward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                 const AttentionArgs& args, const DeviceTensor& out, const DeviceTensor& lse) = 0;
  virtual void attention_backward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                  const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                  const AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                                  const DeviceTensor& dv) = 0;
  // The same over one block of the keys (context parallelism): out and lse are the queries'
  // full results, so the block's dq share and its dk, dv are exact.
  virtual void attention_backward_block(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                        const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                        const AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                                        const DeviceTensor& dv) = 0;
  // Merges a partial result over query rows [row0, row0 + s_blk) into a running one:
  // out [s_q, b, hq, d], lse [b, hq, s_q] <- log-sum-exp weighted combination with
  // out_blk [s_blk, b, hq, d], lse_blk [b, hq, s_blk].
  virtual void attention_merge(const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& out_blk,
                               const DeviceTensor& lse_blk, int64_t row0) = 0;
  // Megatron's fused QKV [rows, groups * (qpg + 2) * d] <-> q, k, v.
  virtual void split_qkv(const DeviceTensor& mixed, int64_t groups, int64_t qpg, int64_t d, const DeviceTensor& q,
                         const DeviceTensor& k, const DeviceTensor& v) = 0;
  virtual void merge_qkv(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t groups,
                         int64_t qpg, int64_t d, const DeviceTensor& mixed) = 0;

  // ---- vocabulary-parallel cross-entropy (targets are global ids, host data)
  // logits [T, V_local] -> max [T], sum_exp [T] relative to that max, raw target logit [T] (0 when
  // the target is not in this rank's rows).
  virtual void cross_entropy_partials(const DeviceTensor& logits, std::span<const int32_t> targets,
                                      int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                      const DeviceTensor& target_logit) = 0;
  // sum_exp [T] *= exp(local_max - global_max).
  virtual void rescale_sum_exp(const DeviceTensor& sum_exp, const DeviceTensor& local_max,
                               const DeviceTensor& global_max) = 0;
  // loss [T] = log(sum_exp) + max - target_logit (all global).
  virtual void cross_entropy_loss(const DeviceTensor& max, const DeviceTensor& sum_exp,
                                  const DeviceTensor& target_logit, const DeviceTensor& loss) = 0;
  // d_logits [T, V_local] = d_loss[t] * (softmax - onehot).
  virtual void cross_entropy_backward(const DeviceTensor& logits, std::span<const int32_t> targets,
                                      int64_t vocab_start, const DeviceTensor& max, const DeviceTensor& sum_exp,
                                      const DeviceTensor& d_loss, const DeviceTensor& d_logits) = 0;

  // ---- MoE
  virtual RoutingResult router_forward(const DeviceTensor& logits, const RouterArgs& args) = 0;
  // d_probs [T, k] (+ aux loss gradient: coeff, global routed counts and tokens, scale) -> d_logits [T, E].
  virtual void router_backward(const DeviceTensor& logits, const RoutingResult& routing, const DeviceTensor& d_probs,
                               double aux_coeff, std::span<const int64_t> routed_per_expert, int64_t total_tokens,
                               double d_aux, const DeviceTensor& d_logits) = 0;
  virtual double router_aux_loss(const RoutingResult& routing, double aux_coeff,
                                 std::span<const int64_t> routed_per_expert, int64_t total_tokens) = 0;
  virtual void permute_forward(const DeviceTensor& tokens, const PermutationPlan& plan, const DeviceTensor& out) = 0;
  virtual void permute_backward(const DeviceTensor& d_out, const PermutationPlan& plan,
                                const DeviceTensor& d_tokens) = 0;
  virtual void unpermute_forward(const DeviceTensor& expert_out, const PermutationPlan& plan,
                                 const DeviceTensor& probs, const DeviceTensor& y) = 0;
  virtual void unpermute_backward(const DeviceTensor& expert_out, const PermutationPlan& plan,
                                  const DeviceTensor& probs, const DeviceTensor& d_y,
                                  const DeviceTensor& d_expert_out, const DeviceTensor& d_probs) = 0;
  // Gathers rows: out[j] = in[index[j]] (index host data); backward scatter-adds.
  virtual void gather_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) = 0;
  virtual void scatter_add_rows(const DeviceTensor& in, std::span<const int64_t> index, const DeviceTensor& out) = 0;

  // ---- optimizer over flat ranges
  virtual void adamw_step(const DeviceTensor& param, const DeviceTensor& grad, const DeviceTensor& exp_avg,
                          const DeviceTensor& exp_avg_sq, float lr, float beta1, float beta2, float eps,
                          float weight_decay, int64_t step, float grad_scale) = 0;
};

}  // namespace tandem::exec
