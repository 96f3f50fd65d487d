// The analytical compute model; see compute_model.h for the physics and the data-file format.
#include "backends/sim/compute_model.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "backends/sim/stack.h"
#include "core/check.h"

namespace tandem::sim {
namespace {

constexpr double kReferenceHeadDim = 128;   // head dim the attention fractions are quoted at

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

double element_bytes(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::Fp32: return 4;
    case GemmPrecision::Half: return 2;
    case GemmPrecision::Fp8: return 1;
  }
  return 2;
}

double element_bytes(DType d) { return d == DType::FP32 ? 4 : 2; }

bool is_gemm_kind(OpKind k) {
  return k == OpKind::Gemm || k == OpKind::GemmGradInput || k == OpKind::GemmGradWeight;
}

// Output rows/cols and reduction length of a GEMM-kind instruction (see the header's table).
struct GemmDims {
  int64_t rows = 0, cols = 0, reduction = 0;
};

GemmDims gemm_dims(const Instruction& ins) {
  switch (ins.kind) {
    case OpKind::GemmGradInput: return {ins.m, ins.k, ins.n};
    case OpKind::GemmGradWeight: return {ins.k, ins.n, ins.m};
    default: return {ins.m, ins.n, ins.k};
  }
}

}  // namespace

ComputeOptions compute_options_for(const Job& job) {
  ComputeOptions o;
  o.fp8 = job.training.fp8_format != Fp8Format::None;
  o.flash_attention = uses_flash_attention(job.training.attention_backend);
  o.attention_dropout = job.training.attention_dropout;
  return o;
}

ComputeModel::ComputeModel(GpuSpec gpu, GpuEfficiency efficiency, ComputeOptions options)
    : gpu_(std::move(gpu)), eff_(std::move(efficiency)), options_(options), launch_s_(eff_.launch_overhead_s) {
  TANDEM_CHECK_MSG(gpu_.sm_count > 0 && gpu_.peak_flops_bf16 > 0 && gpu_.hbm_bandwidth > 0,
                   "GPU '" << gpu_.name << "' needs SMs, a 16-bit peak and an HBM bandwidth");
  TANDEM_CHECK_MSG(!eff_.tiles.empty(), "efficiency data for '" << eff_.gpu << "' has no GEMM tiles");
  if (options_.fp8 && gpu_.peak_flops_fp8 <= 0)
    throw UserError(field_message("fp8_format", "fp8", "GPU " + gpu_.name +
                                  " has no FP8 tensor cores (its peak_tflops.fp8 is 0)"));
  if (options_.fp8 && eff_.gemm_fraction_fp8 <= 0)
    throw UserError(eff_.file + ": " + field_message("gemm.fraction_fp8", eff_.gemm_fraction_fp8,
                                                     "must be positive for a job that trains in fp8"));
}

ComputeModel ComputeModel::for_gpu(const GpuSpec& gpu, ComputeOptions options) {
  return ComputeModel(gpu, load_gpu_efficiency(gpu.name), options);
}

ComputeModel ComputeModel::for_job(const Job& job) {
  return ComputeModel(job.cluster.gpu, stack_for_job(job).efficiency, compute_options_for(job));
}

double ComputeModel::peak(GemmPrecision p) const {
  switch (p) {
    case GemmPrecision::Fp32:
      if (gpu_.peak_flops_fp32 <= 0)
        throw UserError(field_message("gpu.peak_tflops.fp32", 0, "fp32 GEMMs on " + gpu_.name + " need its FP32 peak"));
      return gpu_.peak_flops_fp32;
    case GemmPrecision::Half: return gpu_.peak_flops_bf16;
    case GemmPrecision::Fp8: return gpu_.peak_flops_fp8;
  }
  return gpu_.peak_flops_bf16;
}

double ComputeModel::fraction(GemmPrecision p) const {
  switch (p) {
    case GemmPrecision::Fp32: return eff_.gemm_fraction_fp32;
    case GemmPrecision::Half: return eff_.gemm_fraction_half * eff_.tensor_clock_factor;
    case GemmPrecision::Fp8: return eff_.gemm_fraction_fp8 * eff_.tensor_clock_factor;
  }
  return eff_.gemm_fraction_half * eff_.tensor_clock_factor;
}

GemmPrecision ComputeModel::gemm_precision(const Instruction& ins) const {
  if (ins.dtype == DType::FP32) return GemmPrecision::Fp32;
  // Megatron-Core builds the output layer as tensor_parallel.ColumnParallelLinear, not a Transformer
  // Engine module: the logits GEMMs stay 16-bit under --fp8-format.
  if (options_.fp8 && is_gemm_kind(ins.kind) && ins.site != Site::Output) return GemmPrecision::Fp8;
  return GemmPrecision::Half;
}

std::string ComputeModel::dtype_name(const Instruction& ins) const {
  if (gemm_precision(ins) == GemmPrecision::Fp8) return "fp8";
  return to_string(ins.dtype);
}

double ComputeModel::memory_time(double bytes, double efficiency) const {
  if (bytes <= 0) return 0;
  return bytes / (gpu_.hbm_bandwidth * eff_.copy_fraction * efficiency);
}

// Tiles x split-K candidates, fastest kept. Ties keep the earlier candidate (deterministic).
GemmPlan ComputeModel::plan_gemm(const GemmProblem& p) const {
  GemmPlan best;
  int64_t total_m = 0;
  for (int64_t m : p.group_m) total_m += std::max<int64_t>(m, 0);
  if (total_m == 0 || p.n <= 0 || p.k <= 0) {
    best.time_s = launch_s_;
    return best;
  }
  const double eb = element_bytes(p.precision);
  const double out_bytes = p.accumulate_fp32 ? 8.0 : (p.precision == GemmPrecision::Fp32 ? 4.0 : 2.0);
  const double mn = static_cast<double>(total_m) * static_cast<double>(p.n);
  const double bytes = p.bytes > 0 ? p.bytes
                                   : eb * (static_cast<double>(total_m) * p.k +
                                           static_cast<double>(p.group_m.size()) * p.k * p.n) + out_bytes * mn;
  const double per_sm = peak(p.precision) * fraction(p.precision) / static_cast<double>(gpu_.sm_count);
  const double memory_s = memory_time(bytes, 1.0);
  bool have = false;
  for (const GemmTile& tile : eff_.tiles) {
    int64_t tiles = 0;
    for (int64_t m : p.group_m)
      if (m > 0) tiles += ceil_div(m, tile.m) * ceil_div(p.n, tile.n);
    for (int64_t split = 1; split <= eff_.max_split_k; split *= 2) {
      const int64_t k_split = ceil_div(ceil_div(p.k, split), eff_.tile_k) * eff_.tile_k;
      if (split > 1 && k_split < 2 * eff_.tile_k) break;
      GemmPlan c;
      c.tile = tile;
      c.split_k = split;
      c.ctas = tiles * split;
      c.waves = ceil_div(c.ctas, gpu_.sm_count);
      const double tile_flops = 2.0 * tile.m * tile.n * (static_cast<double>(k_split) + eff_.k_overhead);
      c.compute_s = static_cast<double>(c.waves) * tile_flops / (per_sm * tile.efficiency);
      c.memory_s = memory_s;
      // Split-K: fp32 partial sums written and read back by a reduction kernel.
      const double reduce_s = split > 1 ? memory_time(2.0 * 4.0 * split * mn, 1.0) + launch_s_ : 0;
      c.time_s = std::max(c.compute_s, c.memory_s) + reduce_s + launch_s_;
      if (!have || c.time_s < best.time_s) {
        best = c;
        have = true;
      }
    }
  }
  best.flops = 2.0 * static_cast<double>(total_m) * p.n * p.k;
  return best;
}

double ComputeModel::gemm_kind_time(const Instruction& ins) const {
  const GemmDims d = gemm_dims(ins);
  TANDEM_CHECK_MSG(ins.flops == 0 || (d.rows > 0 && d.cols > 0 && d.reduction > 0),
                   op_kind_name(ins.kind) << " '" << to_string(ins.site) << "' has FLOPs but no shape");
  GemmProblem p;
  p.group_m.assign(static_cast<size_t>(std::max<int64_t>(ins.batch, 1)), d.rows);
  p.n = d.cols;
  p.k = d.reduction;
  p.precision = gemm_precision(ins);
  p.bytes = ins.bytes;
  p.accumulate_fp32 = ins.kind == OpKind::GemmGradWeight;
  double t = plan_gemm(p).time_s;
  // FP8: the activation operand (X forward, dY for dgrad) is cast (and transposed) first; the
  // weight-gradient GEMM reuses those copies.
  if (p.precision == GemmPrecision::Fp8 && ins.kind != OpKind::GemmGradWeight) {
    const double elems = static_cast<double>(std::max<int64_t>(ins.batch, 1)) * ins.m *
                         (ins.kind == OpKind::Gemm ? ins.k : ins.n);
    t += memory_time(elems * eff_.fp8_cast_bytes_per_element, 1.0) + launch_s_;
  }
  return t;
}

double ComputeModel::router_time(const Instruction& ins) const {
  const MemoryOpModel& op = eff_.ops[static_cast<size_t>(ins.kind)];
  GemmProblem p;
  p.group_m = {ins.m};
  p.precision = ins.dtype == DType::FP32 ? GemmPrecision::Fp32 : GemmPrecision::Half;
  if (ins.kind == OpKind::Router) {   // logits [m, E] = X [m, h] x W [h, E]
    p.n = ins.n;
    p.k = ins.k;
  } else {                             // dX [m, h] = dLogits [m, E] x W^T
    p.n = ins.k;
    p.k = ins.n;
  }
  const double t = plan_gemm(p).time_s;
  // Softmax, top-k, aux-loss: memory-bound over the lowering's bytes (or the logits).
  const double bytes = ins.bytes > 0 ? ins.bytes : 2.0 * element_bytes(ins.dtype) * ins.m * ins.n;
  return t + memory_time(bytes, op.efficiency) + op.launches * launch_s_;
}

double ComputeModel::attention_kernel_flops(const Instruction& ins) const {
  const int64_t bq = eff_.attention_block_q, bkv = eff_.attention_block_kv;
  const int64_t sq = ins.m, skv = ins.n;
  if (sq <= 0 || skv <= 0 || ins.k <= 0) return 0;
  // Causal, queries aligned to the end of the keys: query row r sees keys [0, skv - sq + r].
  double blocks = 0;
  for (int64_t qb = 0; qb < ceil_div(sq, bq); ++qb) {
    const int64_t last_row = std::min(sq, (qb + 1) * bq) - 1;
    const int64_t cols = std::clamp<int64_t>(skv - sq + last_row + 1, 0, skv);
    blocks += static_cast<double>(ceil_div(cols, bkv));
  }
  return 4.0 * static_cast<double>(ins.k) * blocks * bq * bkv * std::max<int64_t>(ins.batch, 1);
}

double ComputeModel::flash_attention_time(const Instruction& ins, bool backward) const {
  const int64_t bq = eff_.attention_block_q, bkv = eff_.attention_block_kv;
  const double work = attention_kernel_flops(ins);
  if (work <= 0) return launch_s_;
  const int64_t q_blocks = ceil_div(ins.m, bq);
  const int64_t batch = std::max<int64_t>(ins.batch, 1);
  // Mean keys a query block walks: blocks computed per query block x bkv.
  const double blocks = work / (4.0 * static_cast<double>(ins.k) * bq * bkv * batch);
  const double mean_keys = blocks * bkv / static_cast<double>(q_blocks);
  const double seq_eff = mean_keys / (mean_keys + eff_.attention_kv_overhead);
  const double c = eff_.attention_head_dim_overhead;
  const double d = static_cast<double>(ins.k);
  const double head_eff = (d / (d + c)) / (kReferenceHeadDim / (kReferenceHeadDim + c));
  const int64_t ctas = batch * q_blocks;
  const int64_t waves = ceil_div(ctas, gpu_.sm_count);
  const double wave_eff = static_cast<double>(ctas) / static_cast<double>(waves * gpu_.sm_count);
  double f = (backward ? eff_.attention_backward_fraction : eff_.attention_forward_fraction) * eff_.tensor_clock_factor;
  if (options_.attention_dropout > 0) f *= backward ? eff_.attention_dropout_backward : eff_.attention_dropout_forward;
  const double flops = backward ? work * eff_.attention_backward_work_ratio : work;
  const double compute = flops / (gpu_.peak_flops_bf16 * f * head_eff * seq_eff * wave_eff);
  const MemoryOpModel& op = eff_.ops[static_cast<size_t>(ins.kind)];
  return std::max(compute, memory_time(ins.bytes, 1.0)) + op.launches * launch_s_;
}

// Unfused: the full s_q x s_kv square through batched GEMMs, softmax/dropout passes in HBM.
double ComputeModel::unfused_attention_time(const Instruction& ins, bool backward) const {
  const int64_t sq = ins.m, skv = ins.n, d = ins.k;
  const int64_t batch = std::max<int64_t>(ins.batch, 1);
  if (sq <= 0 || skv <= 0 || d <= 0) return launch_s_;
  const GemmPrecision prec = ins.dtype == DType::FP32 ? GemmPrecision::Fp32 : GemmPrecision::Half;
  auto gemm = [&](int64_t rows, int64_t cols, int64_t red) {
    GemmProblem p;
    p.group_m.assign(static_cast<size_t>(batch), rows);
    p.n = cols;
    p.k = red;
    p.precision = prec;
    return plan_gemm(p).time_s;
  };
  const double scores = static_cast<double>(batch) * sq * skv * element_bytes(ins.dtype);
  const bool dropout = options_.attention_dropout > 0;
  double t = 0;
  double passes = 0;    // reads + writes of the score matrix, in score-matrix sizes
  int launches = 0;
  if (!backward) {
    t = gemm(sq, skv, d) + gemm(sq, d, skv);                       // Q K^T, P V
    passes = 2.0 + (dropout ? 2.5 : 0.0);                          // softmax; dropout + 1-byte mask
    launches = 1 + (dropout ? 1 : 0);
  } else {
    t = gemm(skv, d, sq) + gemm(sq, skv, d) + gemm(sq, d, skv) + gemm(skv, d, sq);  // dV dP dQ dK
    passes = 3.0 + (dropout ? 2.5 : 0.0);                          // softmax grad; dropout grad
    launches = 1 + (dropout ? 1 : 0);
  }
  return t + memory_time(passes * scores, eff_.attention_softmax_efficiency) + launches * launch_s_;
}

double ComputeModel::memory_op_time(const Instruction& ins) const {
  const MemoryOpModel& op = eff_.ops[static_cast<size_t>(ins.kind)];
  const double bytes = ins.bytes > 0 ? ins.bytes
                                     : 2.0 * element_bytes(ins.dtype) * static_cast<double>(ins.m) *
                                           static_cast<double>(ins.n) * std::max<int64_t>(ins.batch, 1);
  return memory_time(bytes, op.efficiency) + op.launches * launch_s_;
}

OpTime ComputeModel::analytical_op_time(const Instruction& ins) const {
  TANDEM_CHECK_MSG(is_compute_kind(ins.kind),
                   "the compute model times compute instructions only, not " << op_kind_name(ins.kind));
  const double with_launches = kernel_time(ins);
  if (launch_s_ <= 0) return {with_launches, 0.0};
  // Timed once more without launch costs to separate the two.
  launch_s_ = 0;
  const double kernels = kernel_time(ins);
  launch_s_ = eff_.launch_overhead_s;
  return {kernels, std::max(0.0, with_launches - kernels)};
}

double ComputeModel::analytical_time(const Instruction& ins) const {
  const OpTime t = analytical_op_time(ins);
  return std::max(t.kernels, t.launches);
}

OpTime ComputeModel::op_time(const Instruction& ins) const {
  if (!profile_.empty())
    if (std::optional<double> t = profiled_time(ins)) return {*t, 0.0};
  return analytical_op_time(ins);
}

double ComputeModel::kernel_time(const Instruction& ins) const {
  switch (ins.kind) {
    case OpKind::Gemm:
    case OpKind::GemmGradInput:
    case OpKind::GemmGradWeight: {
      const bool expert = ins.site == Site::ExpertFc1 || ins.site == Site::ExpertFc2;
      return expert ? gemm_kind_time(ins) / eff_.moe_expert_gemm_efficiency : gemm_kind_time(ins);
    }
    case OpKind::Router: return router_time(ins) + eff_.moe_forward_overhead_s;
    case OpKind::RouterGrad: return router_time(ins);
    case OpKind::Attention:
    case OpKind::AttentionGrad: {
      const bool backward = ins.kind == OpKind::AttentionGrad;
      return options_.flash_attention && eff_.flash_supported ? flash_attention_time(ins, backward)
                                                              : unfused_attention_time(ins, backward);
    }
    default: return memory_op_time(ins);
  }
}

double ComputeModel::time(const Instruction& ins) const {
  const OpTime t = op_time(ins);
  return std::max(t.kernels, t.launches);
}

std::string ComputeModel::describe() const {
  std::ostringstream os;
  os << gpu_.name << ": compute model from stack " << eff_.stack << " (" << eff_.file << ")";
  if (eff_.generic) os << " (generic fallback: no stack for " << gpu_.name << ")";
  if (options_.fp8) os << ", fp8 GEMMs";
  if (!(options_.flash_attention && eff_.flash_supported)) os << ", unfused attention";
  if (!profile_.empty()) os << ", " << profile_.size() << " measured ops from " << profile_file_;
  return os.str();
}

}  // namespace tandem::sim
