// CudaDevice, part B: GEMMs (cuBLASLt), grouped expert GEMMs, attention, QKV split/merge (the
// MoE methods are in cuda_device_ops_b_moe.cpp). Each method checks the tensor shapes as the CPU
// device does (backends/executor/shape_rules.h, exec::ShapeError on a mismatch) and calls the launchers of
// ops_gemm / ops_flash_attention / ops_attention / ops_qkv / ops_moe on the current stream.
//
// Host C++ (compiled by the host compiler): only launchers and the CUDA runtime API are used.
// Host data the kernels need (positions, index maps, routing decisions) is copied into scratch
// with cudaMemcpyAsync from pageable memory, which stages the bytes before it returns.
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/device_arrays.h"
#include "backends/cuda/ops_attention.cuh"
#include "backends/cuda/ops_convert.cuh"
#include "backends/cuda/ops_flash_attention.cuh"
#include "backends/cuda/ops_gemm.cuh"
#include "backends/cuda/ops_qkv.cuh"
#include "backends/cuda/gemm_mapping.h"
#include "backends/executor/shape_rules.h"

namespace tandem::cuda {
namespace {

using exec::DeviceTensor;

constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;   // 32 MiB

// A bf16 copy of a tensor (GEMM operands).
DeviceArray<uint16_t> to_bf16(CudaDevice& dev, const DeviceTensor& t) {
  DeviceArray<uint16_t> a = device_array<uint16_t>(dev, static_cast<size_t>(t.numel()));
  if (a.ptr) launch_fp32_to_bf16(dev.in(t), a.ptr, t.numel(), dev.stream());
  return a;
}

void run_gemm(CudaDevice& dev, const LtGemm& g) {
  size_t workspace_bytes = 0;
  void* workspace = dev.gemm_workspace(&workspace_bytes);
  lt_matmul(dev.cublaslt(), workspace, workspace_bytes, g, dev.stream());
}

std::vector<int32_t> positions_of(std::span<const int32_t> given, int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = given.empty() ? static_cast<int32_t>(i) : given[i];
  return p;
}

// Everything the attention kernels read besides the tensors, uploaded for one call.
struct AttentionSetup {
  AttentionProblem problem;
  FlashTileBounds tiles;
  DeviceArray<int32_t> q_pos, kv_pos, q_tile_max, kv_tile_min;
  DeviceArray<int64_t> samples;
};

AttentionSetup attention_setup(CudaDevice& dev, const exec::AttentionShape& a, const exec::AttentionArgs& args) {
  AttentionSetup s;
  const std::vector<int32_t> qp = positions_of(args.q_positions, a.s_q), kp = positions_of(args.kv_positions, a.s_kv);
  s.q_pos = upload_array(dev, qp);
  s.kv_pos = upload_array(dev, kp);
  s.q_tile_max = upload_array(dev, tile_max_positions(qp, kFlashRows));
  s.kv_tile_min = upload_array(dev, tile_min_positions(kp, kFlashCols));
  AttentionProblem& p = s.problem;
  p.s_q = a.s_q;
  p.s_kv = a.s_kv;
  p.b = a.b;
  p.hq = a.hq;
  p.hkv = a.hkv;
  p.d = a.d;
  p.scale = resolved_softmax_scale(args, a.d);
  p.q_pos = s.q_pos.ptr;
  p.kv_pos = s.kv_pos.ptr;
  if (args.dropout > 0.0f) {
    s.samples = upload_array(dev, std::vector<int64_t>(args.samples.begin(), args.samples.end()));
    p.dropout = args.dropout;
    p.dropout_key = args.dropout_key;
    p.head_offset = args.head_offset;
    p.samples = s.samples.ptr;
  }
  s.tiles = FlashTileBounds{s.q_tile_max.ptr, s.kv_tile_min.ptr};
  return s;
}

// The block backward of the flash kernels (the full backward is the block with every key).
void flash_backward(CudaDevice& dev, const char* op, const DeviceTensor& q, const DeviceTensor& k,
                    const DeviceTensor& v, const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                    const exec::AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                    const DeviceTensor& dv) {
  const exec::AttentionShape a = exec::check_attention_backward(op, q.shape, k.shape, v.shape, out.shape, lse.shape,
                                                                d_out.shape, args, dq.shape, dk.shape, dv.shape);
  const AttentionSetup s = attention_setup(dev, a, args);
  DeviceArray<float> delta = device_array<float>(dev, static_cast<size_t>(a.b * a.hq * a.s_q));
  launch_flash_attention_backward(s.problem, s.tiles, dev.in(q), dev.in(k), dev.in(v), dev.in(out), dev.in(lse),
                                  dev.in(d_out), dev.address(dq), dev.address(dk), dev.address(dv), delta.ptr,
                                  dev.stream());
}

}  // namespace

// ---- cuBLASLt resources: one handle and one 32 MiB workspace (cudaMalloc, outside the pool),
// created on first use. GEMMs are compute instructions, issued on the Compute stream only, so
// one workspace is never used by two GEMMs at once.

cublasLtHandle_t CudaDevice::cublaslt() {
  if (lt_ == nullptr) TANDEM_CUBLAS_CHECK(cublasLtCreate(&lt_));
  return lt_;
}

void* CudaDevice::gemm_workspace(size_t* bytes) {
  if (lt_workspace_ == nullptr) {
    TANDEM_CUDA_CHECK(cudaMalloc(&lt_workspace_, kGemmWorkspaceBytes));
    lt_workspace_bytes_ = kGemmWorkspaceBytes;
  }
  *bytes = lt_workspace_bytes_;
  return lt_workspace_;
}

void CudaDevice::release_gemm_resources() {
  if (lt_ != nullptr) {
    lt_cache_release(lt_);
    cublasLtDestroy(lt_);
    lt_ = nullptr;
  }
  if (lt_workspace_ != nullptr) {
    cudaFree(lt_workspace_);
    lt_workspace_ = nullptr;
    lt_workspace_bytes_ = 0;
  }
}

// ---- linear layers: bf16 copies of both operands, fp32 output.

void CudaDevice::gemm_forward(const DeviceTensor& x, const DeviceTensor& w, const DeviceTensor& bias,
                              exec::WeightLayout layout, const DeviceTensor& y) {
  const exec::LinearDims d = exec::check_gemm_forward(x.shape, w.shape, bias.defined() ? &bias.shape : nullptr, layout, y.shape);
  const DeviceArray<uint16_t> xb = to_bf16(*this, x), wb = to_bf16(*this, w);
  LtGemm g = linear_forward_gemm(d, layout);
  g.a = xb.ptr;
  g.b = wb.ptr;
  g.c = address(y);
  g.bias = bias.defined() ? in(bias) : nullptr;   // CUBLASLT_EPILOGUE_BIAS
  run_gemm(*this, g);
}

void CudaDevice::gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w, exec::WeightLayout layout,
                                 const DeviceTensor& dx) {
  const exec::LinearDims d = exec::check_gemm_grad_input(dy.shape, w.shape, layout, dx.shape);
  const DeviceArray<uint16_t> dyb = to_bf16(*this, dy), wb = to_bf16(*this, w);
  LtGemm g = linear_grad_input_gemm(d, layout);
  g.a = dyb.ptr;
  g.b = wb.ptr;
  g.c = address(dx);
  run_gemm(*this, g);
}

// dW accumulates (beta = 1). dbias += column sums of dy in fp32 from the unrounded dy, through
// column_sums_accumulate: cuBLASLt's BGRAD epilogues overwrite their output and sum the bf16
// operand, while the contract here is an accumulation matching the CPU's.
void CudaDevice::gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy, exec::WeightLayout layout,
                                  const DeviceTensor& dw, const DeviceTensor& dbias) {
  const exec::LinearDims d =
      exec::check_gemm_grad_weight(x.shape, dy.shape, layout, dw.shape, dbias.defined() ? &dbias.shape : nullptr);
  const DeviceArray<uint16_t> xb = to_bf16(*this, x), dyb = to_bf16(*this, dy);
  LtGemm g = linear_grad_weight_gemm(d, layout);
  const bool in_out = layout == exec::WeightLayout::InOut;
  g.a = in_out ? xb.ptr : dyb.ptr;
  g.b = in_out ? dyb.ptr : xb.ptr;
  g.c = address(dw);
  run_gemm(*this, g);
  if (dbias.defined() && d.m > 0) column_sums_accumulate(dy, dbias);
}

// ---- grouped GEMMs: one cuBLASLt call per non-empty expert (the expert sizes are host data;
// a grouped/batched kernel would save the per-call launch cost, not change the results).

void CudaDevice::grouped_gemm_forward(const DeviceTensor& x, const DeviceTensor& w, std::span<const int64_t> counts,
                                      const DeviceTensor& y) {
  const exec::LinearDims d = exec::check_grouped_forward(x.shape, w.shape, counts, y.shape);
  const DeviceArray<uint16_t> xb = to_bf16(*this, x), wb = to_bf16(*this, w);
  float* out = d.m > 0 ? address(y) : nullptr;
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] > 0) {
      LtGemm g = linear_forward_gemm(exec::LinearDims{counts[e], d.n, d.k}, exec::WeightLayout::InOut);
      g.a = xb.ptr + offset * d.k;
      g.b = wb.ptr + static_cast<int64_t>(e) * d.k * d.n;
      g.c = out + offset * d.n;
      run_gemm(*this, g);
    }
    offset += counts[e];
  }
}

void CudaDevice::grouped_gemm_grad_input(const DeviceTensor& dy, const DeviceTensor& w,
                                         std::span<const int64_t> counts, const DeviceTensor& dx) {
  const exec::LinearDims d = exec::check_grouped_grad_input(dy.shape, w.shape, counts, dx.shape);
  const DeviceArray<uint16_t> dyb = to_bf16(*this, dy), wb = to_bf16(*this, w);
  float* out = d.m > 0 ? address(dx) : nullptr;
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] > 0) {
      LtGemm g = linear_grad_input_gemm(exec::LinearDims{counts[e], d.n, d.k}, exec::WeightLayout::InOut);
      g.a = dyb.ptr + offset * d.n;
      g.b = wb.ptr + static_cast<int64_t>(e) * d.k * d.n;
      g.c = out + offset * d.k;
      run_gemm(*this, g);
    }
    offset += counts[e];
  }
}

void CudaDevice::grouped_gemm_grad_weight(const DeviceTensor& x, const DeviceTensor& dy,
                                          std::span<const int64_t> counts, const DeviceTensor& dw) {
  const exec::LinearDims d = exec::check_grouped_grad_weight(x.shape, dy.shape, counts, dw.shape);
  if (d.m == 0) return;   // every expert empty: nothing accumulates
  const DeviceArray<uint16_t> xb = to_bf16(*this, x), dyb = to_bf16(*this, dy);
  float* out = address(dw);
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] > 0) {
      LtGemm g = linear_grad_weight_gemm(exec::LinearDims{counts[e], d.n, d.k}, exec::WeightLayout::InOut);
      g.a = xb.ptr + offset * d.k;
      g.b = dyb.ptr + offset * d.n;
      g.c = out + static_cast<int64_t>(e) * d.k * d.n;
      run_gemm(*this, g);
    }
    offset += counts[e];
  }
}

// ---- attention (flash kernels)

void CudaDevice::attention_forward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                   const exec::AttentionArgs& args, const DeviceTensor& out, const DeviceTensor& lse) {
  const char* op = "attention_forward";
  const exec::AttentionShape a = exec::check_attention_inputs(op, q.shape, k.shape, v.shape, args);
  exec::check_attention_outputs(op, a, q.shape, out.shape, lse.shape);
  const AttentionSetup s = attention_setup(*this, a, args);
  launch_flash_attention_forward(s.problem, s.tiles, in(q), in(k), in(v), address(out), address(lse), stream());
}

void CudaDevice::attention_backward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                    const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                    const exec::AttentionArgs& args, const DeviceTensor& dq, const DeviceTensor& dk,
                                    const DeviceTensor& dv) {
  flash_backward(*this, "attention_backward", q, k, v, out, lse, d_out, args, dq, dk, dv);
}

void CudaDevice::attention_backward_block(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                          const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& d_out,
                                          const exec::AttentionArgs& args, const DeviceTensor& dq,
                                          const DeviceTensor& dk, const DeviceTensor& dv) {
  flash_backward(*this, "attention_backward_block", q, k, v, out, lse, d_out, args, dq, dk, dv);
}

void CudaDevice::attention_merge(const DeviceTensor& out, const DeviceTensor& lse, const DeviceTensor& out_blk,
                                 const DeviceTensor& lse_blk, int64_t row0) {
  exec::check_attention_merge(out.shape, lse.shape, out_blk.shape, lse_blk.shape, row0);
  if (out_blk.numel() == 0 && lse_blk.numel() == 0) return;
  launch_attention_merge(address(out), address(lse), in(out_blk), in(lse_blk), out.dim(0), out.dim(1), out.dim(2),
                         out.dim(3), out_blk.dim(0), row0, stream());
}

void CudaDevice::split_qkv(const DeviceTensor& mixed, int64_t groups, int64_t qpg, int64_t d, const DeviceTensor& q,
                           const DeviceTensor& k, const DeviceTensor& v) {
  const int64_t rows = exec::check_qkv_shapes("split_qkv", mixed.shape, groups, qpg, d, q.shape, k.shape, v.shape);
  if (mixed.numel() == 0) return;
  launch_split_qkv(in(mixed), QkvDims{rows, groups, qpg, d}, address(q), address(k), address(v), stream());
}

void CudaDevice::merge_qkv(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v, int64_t groups,
                           int64_t qpg, int64_t d, const DeviceTensor& mixed) {
  const int64_t rows = exec::check_qkv_shapes("merge_qkv", mixed.shape, groups, qpg, d, q.shape, k.shape, v.shape);
  if (mixed.numel() == 0) return;
  launch_merge_qkv(in(q), in(k), in(v), QkvDims{rows, groups, qpg, d}, address(mixed), stream());
}

}  // namespace tandem::cuda
