#pragma once
// The compute model: how long one compute instruction takes on one GPU, in seconds.
//
// Physics, with every constant in the job's software stack (clusters/stacks/<stack>.json, format in
// stack.h: the sections below; the generic stack when neither the job, its cluster nor its GPU kind
// names one, which describe() says). Tensor-core kernels (16-bit and FP8 GEMMs, flash attention)
// run at their fractions x tensor_clock_factor (training vs the short benchmarks the fractions are
// quoted at):
//
//  GEMM  The output is cut into tiles (tm x tn, e.g. 128 x 256 on H100); one CTA per SM computes
//        one tile by walking K in steps of tile_k. Time = waves x time of one tile, where
//          waves     = ceil(CTAs / SMs)                      (wave quantisation: a partial last
//                                                             wave costs a whole wave)
//          CTAs      = sum over groups of ceil(m/tm) ceil(n/tn) x split_k   (tile quantisation;
//                                                             grouped expert GEMMs share waves)
//          tile time = 2 tm tn (ceil(K/split_k to tile_k) + k_overhead)
//                      / (peak(precision) / SMs x fraction(precision) x tile efficiency)
//        k_overhead is the pipeline fill and epilogue of a tile, in K elements: small-k GEMMs are
//        less efficient. The candidate tiles and split-K factors (1, 2, 4, .. max_split_k; the
//        split-K partial sums cost an fp32 read+write pass and one launch) are tried and the
//        fastest kept, as cuBLAS's heuristics do. The result is max(that, HBM bytes / bandwidth).
//  Flash attention  The kernel's real work, not the FLOP convention: a causal kernel computes
//        only the (bq x bkv) score blocks on or below the diagonal (queries aligned to the end of
//        the keys), 4 d FLOPs per computed score element forward and backward_work_ratio (2.5)
//        times that backward, at forward/backward_fraction of the 16-bit peak for head dim 128,
//        scaled by d / (d + head_dim_overhead) (softmax work per score does not shrink with d),
//        by c / (c + kv_overhead) with c the mean keys per query block (per-CTA prologue and
//        epilogue), and by the wave efficiency of its b x heads x ceil(s_q / bq) CTAs. With
//        attention dropout the kernel draws a Philox random number per computed score (again in
//        the backward): throughput x dropout_forward_factor / dropout_backward_factor.
//  Unfused attention (GPUs without a flash kernel, or --attention-backend unfused): batched
//        GEMMs over the full s_q x s_kv square plus softmax / dropout passes over the scores.
//  Memory-bound ops  bytes / (HBM bandwidth x copy_fraction x op efficiency).
//  Every op  launches x launch_overhead of host time (op_time: kernels and launches apart). The
//        host issues kernels ahead of the GPU: the simulator's executor keeps a host clock per rank
//        and a kernel starts no earlier than its launch is issued, so launches cost GPU time only
//        where the host falls behind (many short kernels). time() is the per-op version of that,
//        max(kernels, launches), for callers without a host clock.
//  FP8   When the job trains in fp8 (core/job.h has no FP8 DType: the model is told through
//        ComputeOptions::fp8), the GEMM kinds run at peak_flops_fp8 x fraction_fp8 and pay one
//        memory-bound cast of their activation operand; attention, the router and the output layer
//        (logits: Megatron-Core's ColumnParallelLinear, not a Transformer Engine module) stay 16-bit.
//
// Instruction shapes read per kind (program/program.h):
//   Gemm            [m, k] x [k, n]: output m x n, reduction k, `batch` groups (experts)
//   GemmGradInput   dX [m, k] = dY [m, n] x W^T: output m x k, reduction n
//   GemmGradWeight  dW [k, n] = X^T [k, m] x dY [m, n]: output k x n, reduction m
//   Router          [m tokens, k = h] x [h, n = experts] GEMM + bytes of softmax/top-k work
//   RouterGrad      its input gradient dX [m, k] = dLogits [m, n] x W^T + bytes (the router's
//                   weight gradient is a GemmGradWeight)
//   Attention(Grad) m = s_q, n = s_kv, k = head dim, batch = micro-batch x heads (the value head
//                   dim is taken equal to k: MLA's smaller one is not in the Instruction)
//   others          memory-bound over Instruction::bytes (if 0: 2 m n batch elements, read+write)
// Instruction::bytes, when set, is the HBM traffic the lowering counted; when 0 the model
// estimates it from the shape. Communication and memory kinds are not modelled here (CHECK).
//
// Stack sections (every number a parameter {"value", "meaning", "bounds", "prior", "fitted_by"?},
// kernel structure {"value", "derivation"}; stack.h):
// {
//   "tensor_clock_factor",
//   "gemm": {"fraction_bf16", "fraction_fp8", "fraction_fp32",         fractions of the peak
//            "tiles": {"value": [{"m": 128, "n": 256, "efficiency": 1.0}, ...]},
//            "tile_k", "k_overhead", "max_split_k", "fp8_cast_bytes_per_element"},
//   "attention": {"flash_supported" (bool), "forward_fraction", "backward_fraction",
//                 "backward_work_ratio", "block_q", "block_kv", "head_dim_overhead",
//                 "kv_overhead", "softmax_efficiency", "dropout_forward_factor",
//                 "dropout_backward_factor"},
//   "memory": {"copy_fraction", "ops": {"value": {"Norm": {"efficiency": 0.85, "launches": 1}, ..}}},
//             (ops lists every compute kind but the three GEMM kinds; unknown keys are errors)
//   "launch_overhead_us",
//   "communication": {"nvlink_efficiency", "nic_efficiency"   achieved NCCL bus bandwidth as a
//             fraction of the raw NVLink / NIC bandwidth of clusters/*.json (platform.h),
//             "collective_base_latency_us",   fixed cost per collective (collectives.h)
//             "nccl_sm_fraction"}   share of the SMs a collective across the network holds (one
//             CTA per NCCL channel); compute overlapping it runs 1 / (1 - fraction) slower
// }
//
// Measured profile (`--profile FILE`, written by `tandem calibrate` on a real backend):
//   [ {"op": "Gemm", "m": 4096, "n": 12288, "k": 4096, "batch": 1, "dtype": "bf16",
//      "seconds": 1.02e-3, "bytes": 0}, ... ]
// or {"gpu": "H100-SXM5-80GB", "entries": [ ... ]} (then the GPU must match the model's).
//   op     the OpKind enumerator name of a compute kind ("Gemm", "AttentionGrad", "Norm", ...)
//   m n k batch  the Instruction's shape; dtype "fp32" | "fp16" | "bf16" | "fp8" (GEMM kinds run
//          in fp8 when ComputeOptions::fp8); seconds > 0; bytes optional (HBM bytes, as lowered).
// Lookup: an entry with the same op, m, n, k, batch and dtype gives the time; otherwise the
// analytical time is scaled by measured / analytical at the nearest entry of the same op
// (same dtype preferred; distance = sum of |ln| ratios of m, n, k, batch; ties: first in file).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/job.h"
#include "program/program.h"

namespace tandem::sim {

// Arithmetic a GEMM runs in.
enum class GemmPrecision : std::uint8_t { Fp32, Half, Fp8 };   // Half: BF16 or FP16 tensor cores

struct GemmTile {
  int64_t m = 128, n = 128;      // output elements per CTA
  double efficiency = 1.0;       // main-loop throughput relative to the best tile, (0, 1]
};

// Memory-bound kernel class: throughput relative to a copy, and kernels launched per op.
struct MemoryOpModel {
  double efficiency = 1.0;
  int launches = 1;
};

inline constexpr int kOpKindCount = static_cast<int>(OpKind::Free) + 1;

// The per-GPU-kind constants of the model (units in the names; fractions are of the peak).
struct GpuEfficiency {
  std::string gpu;               // GPU kind the constants describe
  std::string file;              // data file they came from
  std::string stack;             // name of the software stack (clusters/stacks/<stack>.json)
  bool generic = false;          // true: no file for this GPU, generic.json used
  // Tensor-core kernels (16-bit and FP8 GEMMs, flash attention) in training run at this factor of
  // the throughput their fractions below are quoted at (short benchmarks): sustained clock under
  // the power limit, host and synchronisation gaps the model leaves out.
  double tensor_clock_factor = 1.0;
  // GEMM
  double gemm_fraction_half = 0, gemm_fraction_fp8 = 0, gemm_fraction_fp32 = 0;
  std::vector<GemmTile> tiles;
  int64_t tile_k = 64;           // elements of K per main-loop step
  double k_overhead = 0;         // elements of K: per-tile fill + epilogue cost
  int64_t max_split_k = 1;
  double fp8_cast_bytes_per_element = 0;
  // Attention
  bool flash_supported = true;
  double attention_forward_fraction = 0, attention_backward_fraction = 0;  // head dim 128
  double attention_backward_work_ratio = 2.5;
  int64_t attention_block_q = 128, attention_block_kv = 128;
  double attention_head_dim_overhead = 0;   // elements of head dim
  double attention_kv_overhead = 0;         // keys per query block
  double attention_softmax_efficiency = 1;  // unfused softmax passes, relative to a copy
  // Flash kernels with attention dropout: throughput with / without (Philox RNG per score)
  double attention_dropout_forward = 1, attention_dropout_backward = 1;
  // Memory-bound ops
  double copy_fraction = 0;                 // achieved copy bandwidth / HBM bandwidth
  std::array<MemoryOpModel, kOpKindCount> ops{};   // indexed by OpKind
  double launch_overhead_s = 0;
  // Communication: achieved NCCL bandwidth / raw link bandwidth (platform.h scales its links)
  double nvlink_efficiency = 1.0;           // NVLink/NVSwitch, per direction
  double nic_efficiency = 1.0;              // the node's NICs and the fabric behind them
  double collective_base_latency_s = 0;     // NCCL's fixed cost of one collective (launch, setup)
  double nccl_sm_fraction = 0;              // SMs a network collective's kernel holds while it runs
  // Mixture of experts (stack "moe", optional): expert GEMM throughput relative to a dense GEMM of
  // the same shape, and GPU time lost per MoE layer in each forward (the dispatcher's host sync).
  double moe_expert_gemm_efficiency = 1.0;
  double moe_forward_overhead_s = 0;
};

// What the job decides beyond the GPU.
struct ComputeOptions {
  bool fp8 = false;                  // GEMM kinds in fp8 (job.training.fp8_format != None)
  bool flash_attention = true;       // false: unfused attention (s x s scores in HBM)
  double attention_dropout = 0.0;    // unfused attention only: dropout passes over the scores
};
ComputeOptions compute_options_for(const Job& job);

// The efficiencies of the GPU kind's default stack (stack.h; generic = true for the generic one).
GpuEfficiency load_gpu_efficiency(const std::string& gpu_name);
// Reads one stack file; UserError naming the file, field and value on any bad entry.
GpuEfficiency load_gpu_efficiency_file(const std::string& path);

// One GEMM problem: `group_m` rows per group (experts); all groups share n and k.
struct GemmProblem {
  std::vector<int64_t> group_m;  // rows of each group's output
  int64_t n = 0, k = 0;          // output columns, reduction length
  GemmPrecision precision = GemmPrecision::Half;
  double bytes = 0;              // HBM bytes; 0: estimated from the shape
  bool accumulate_fp32 = false;  // output is an fp32 gradient read and written (weight grads)
};

// The plan the model chose for a GEMM, for tests and reports.
struct GemmPlan {
  GemmTile tile;
  int64_t split_k = 1;
  int64_t ctas = 0, waves = 0;
  double compute_s = 0, memory_s = 0, time_s = 0;   // time_s includes launches
  double flops = 0;                                  // 2 m n k summed over groups
};

struct ProfileEntry {
  OpKind op = OpKind::Gemm;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  std::string dtype;             // "fp32" | "fp16" | "bf16" | "fp8"
  double seconds = 0;
  double bytes = 0;
};

// One compute instruction: GPU time of its kernels, and host time to launch them (s).
struct OpTime {
  double kernels = 0;
  double launches = 0;
};

class ComputeModel {
 public:
  ComputeModel(GpuSpec gpu, GpuEfficiency efficiency, ComputeOptions options = {});
  // The GPU kind's default stack and the options.
  static ComputeModel for_gpu(const GpuSpec& gpu, ComputeOptions options = {});
  static ComputeModel for_job(const Job& job);   // the job's stack (stack_for_job)

  // Seconds one compute instruction takes: max(kernels, launches) of op_time. CHECK-fails for
  // communication and memory kinds.
  double time(const Instruction& ins) const;
  // Kernel and launch seconds apart (a measured profile entry is kernel time, launches 0).
  OpTime op_time(const Instruction& ins) const;
  // The analytical model alone (no profile).
  double analytical_time(const Instruction& ins) const;
  OpTime analytical_op_time(const Instruction& ins) const;

  GemmPlan plan_gemm(const GemmProblem& problem) const;
  // Real FLOPs a flash-attention kernel performs (forward; backward is ratio x this).
  double attention_kernel_flops(const Instruction& ins) const;

  // Measured per-op times that override the analytical model (format in the header comment).
  void load_profile(const std::string& path);
  const std::vector<ProfileEntry>& profile() const { return profile_; }

  const GpuSpec& gpu() const { return gpu_; }
  const GpuEfficiency& efficiency() const { return eff_; }
  const ComputeOptions& options() const { return options_; }
  bool generic() const { return eff_.generic; }
  std::string describe() const;   // one line: GPU, stack and its file, fallback or not, profile size

 private:
  double peak(GemmPrecision p) const;
  double fraction(GemmPrecision p) const;
  GemmPrecision gemm_precision(const Instruction& ins) const;
  std::string dtype_name(const Instruction& ins) const;
  double gemm_kind_time(const Instruction& ins) const;
  double router_time(const Instruction& ins) const;
  double flash_attention_time(const Instruction& ins, bool backward) const;
  double unfused_attention_time(const Instruction& ins, bool backward) const;
  double memory_time(double bytes, double efficiency) const;
  double memory_op_time(const Instruction& ins) const;
  std::optional<double> profiled_time(const Instruction& ins) const;

  double kernel_time(const Instruction& ins) const;   // kernels + launches at launch_s_

  GpuSpec gpu_;
  GpuEfficiency eff_;
  ComputeOptions options_;
  // Launch cost per kernel the kind functions add: the stack's, or 0 while analytical_op_time
  // separates kernel time from launch time (single-threaded use, as everywhere in the simulator).
  mutable double launch_s_ = 0;
  std::vector<ProfileEntry> profile_;
  std::string profile_file_;
};

// The OpKind enumerator name ("Gemm", "AttentionGrad", ...), as profiles and data files spell it.
const char* op_kind_name(OpKind kind);
std::optional<OpKind> op_kind_from_name(const std::string& name);   // case-insensitive
bool is_compute_kind(OpKind kind);

}  // namespace tandem::sim
