// CUDA attention against the CPU device and against the baseline kernels (materialised
// scores): flash forward, backward, block backward (context parallelism), merge, GQA, explicit
// positions, fully masked rows, dropout with the layout-independent mask. Skipped without a
// CUDA device.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <numeric>

#include "backends/cuda/ops_attention.cuh"
#include "tests/cuda/kernels_b_util.h"

namespace tandem::cuda::testing {
namespace {

struct AttnCase {
  const char* name;
  int64_t s_q, s_kv, b, hq, hkv, d;
  int32_t q_pos0, kv_pos0;   // positions are consecutive from these (CP-like shifts)
  float dropout;
};

constexpr AttnCase kCases[] = {
    {"gqa odd sizes", 37, 37, 2, 4, 2, 40, 0, 0, 0.0f},
    {"d 128 mqa", 64, 64, 1, 2, 1, 128, 0, 0, 0.0f},
    {"d 200 padded", 33, 33, 1, 2, 2, 200, 0, 0, 0.0f},
    {"shifted queries", 24, 56, 1, 2, 2, 32, 16, 0, 0.0f},
    {"keys in the future of some queries", 24, 32, 1, 2, 1, 16, 0, 10, 0.0f},
    {"dropout", 45, 45, 2, 4, 4, 24, 0, 0, 0.1f},
};

std::vector<int32_t> consecutive(int64_t n, int32_t first) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), first);
  return p;
}

// Device copy of host data for the baseline launchers (freed with the owner).
template <typename T>
std::shared_ptr<T> device_copy(const std::vector<T>& host) {
  void* ptr = nullptr;
  if (cudaMalloc(&ptr, std::max<size_t>(1, host.size() * sizeof(T))) != cudaSuccess) throw std::bad_alloc();
  if (!host.empty()) cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return std::shared_ptr<T>(static_cast<T*>(ptr), [](T* p) { cudaFree(p); });
}

class AttentionBTest : public KernelsBTest {
 protected:
  // Inputs of one case on both devices, and the args (spans into this object).
  struct Inputs {
    Pair q, k, v;
    std::vector<int32_t> q_pos, kv_pos;
    std::vector<int64_t> samples;
    exec::AttentionArgs args;
  };

  Inputs make_inputs(const AttnCase& c) {
    Inputs in;
    in.q = random_pair({c.s_q, c.b, c.hq, c.d});
    in.k = random_pair({c.s_kv, c.b, c.hkv, c.d});
    in.v = random_pair({c.s_kv, c.b, c.hkv, c.d});
    in.q_pos = consecutive(c.s_q, c.q_pos0);
    in.kv_pos = consecutive(c.s_kv, c.kv_pos0);
    for (int64_t b = 0; b < c.b; ++b) in.samples.push_back(3 + 5 * b);
    return in;
  }

  static void bind_args(Inputs& in, const AttnCase& c) {
    in.args = exec::AttentionArgs{};
    in.args.q_positions = in.q_pos;
    in.args.kv_positions = in.kv_pos;
    in.args.dropout = c.dropout;
    in.args.dropout_key = 0x5eedULL;
    in.args.head_offset = 2;
    in.args.samples = in.samples;
  }

  // The baseline kernels' problem for the GPU tensors of `in` (device arrays kept in `keep`).
  AttentionProblem baseline_problem(const AttnCase& c, const Inputs& in, std::vector<std::shared_ptr<void>>& keep) {
    AttentionProblem p;
    p.s_q = c.s_q;
    p.s_kv = c.s_kv;
    p.b = c.b;
    p.hq = c.hq;
    p.hkv = c.hkv;
    p.d = c.d;
    p.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    auto qp = device_copy(in.q_pos), kp = device_copy(in.kv_pos);
    auto sm = device_copy(in.samples);
    keep.insert(keep.end(), {qp, kp, sm});
    p.q_pos = qp.get();
    p.kv_pos = kp.get();
    p.dropout = c.dropout;
    p.dropout_key = in.args.dropout_key;
    p.head_offset = in.args.head_offset;
    p.samples = sm.get();
    return p;
  }

  // A GPU-only comparison of two GPU tensors (flash vs baseline): same rounding, fp32 order only.
  void expect_same_on_gpu(const DeviceTensor& a, const DeviceTensor& b, const std::string& what) {
    const std::vector<float> x = gpu_->to_host(a), y = gpu_->to_host(b);
    ASSERT_EQ(x.size(), y.size());
    float scale = 0;
    for (float v : y)
      if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isinf(y[i])) {
        ASSERT_EQ(x[i], y[i]) << what << "[" << i << "]";
        continue;
      }
      ASSERT_NEAR(x[i], y[i], 1e-4f * scale + 1e-6f) << what << "[" << i << "]";
    }
  }
};

TEST_F(AttentionBTest, ForwardMatchesTheCpuAndTheBaseline) {
  SCOPED_TRACE(seed_text());
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(c.name);
    Inputs in = make_inputs(c);
    bind_args(in, c);
    const Pair out = poisoned(in.q.cpu.shape), lse = poisoned({c.b, c.hq, c.s_q});
    cpu_.attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, in.args, out.cpu, lse.cpu);
    gpu_->attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, in.args, out.gpu, lse.gpu);
    expect_bf16(out, "out");
    expect_bf16(lse, "lse");
    // Baseline kernels on the same inputs.
    std::vector<std::shared_ptr<void>> keep;
    const AttentionProblem p = baseline_problem(c, in, keep);
    const DeviceTensor ref_out = gpu_->empty(in.q.gpu.shape), ref_lse = gpu_->empty({c.b, c.hq, c.s_q});
    const DeviceTensor scratch = gpu_->empty({static_cast<int64_t>(attention_reference_forward_scratch(p)) + 1});
    launch_attention_forward_reference(p, gpu_->in(in.q.gpu), gpu_->in(in.k.gpu), gpu_->in(in.v.gpu),
                                       gpu_->address(ref_out), gpu_->address(ref_lse), gpu_->address(scratch),
                                       gpu_->stream());
    expect_same_on_gpu(out.gpu, ref_out, "out vs baseline");
    expect_same_on_gpu(lse.gpu, ref_lse, "lse vs baseline");
  }
}

TEST_F(AttentionBTest, BackwardMatchesTheCpuAndTheBaseline) {
  SCOPED_TRACE(seed_text());
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(c.name);
    Inputs in = make_inputs(c);
    bind_args(in, c);
    const Pair out0 = poisoned(in.q.cpu.shape), lse0 = poisoned({c.b, c.hq, c.s_q});
    cpu_.attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, in.args, out0.cpu, lse0.cpu);
    // Both backwards read the CPU's forward results: only the backward is compared.
    const Pair out = both(out0.cpu.shape, cpu_.to_host(out0.cpu)), lse = both(lse0.cpu.shape, cpu_.to_host(lse0.cpu));
    const Pair d_out = random_pair(in.q.cpu.shape);
    const Pair dq = poisoned(in.q.cpu.shape), dk = poisoned(in.k.cpu.shape), dv = poisoned(in.v.cpu.shape);
    cpu_.attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, out.cpu, lse.cpu, d_out.cpu, in.args, dq.cpu, dk.cpu, dv.cpu);
    gpu_->attention_backward(in.q.gpu, in.k.gpu, in.v.gpu, out.gpu, lse.gpu, d_out.gpu, in.args, dq.gpu, dk.gpu,
                             dv.gpu);
    expect_bf16(dq, "dq");
    expect_bf16(dk, "dk");
    expect_bf16(dv, "dv");
    std::vector<std::shared_ptr<void>> keep;
    const AttentionProblem p = baseline_problem(c, in, keep);
    const DeviceTensor rq = gpu_->empty(in.q.gpu.shape), rk = gpu_->empty(in.k.gpu.shape), rv = gpu_->empty(in.v.gpu.shape);
    const DeviceTensor scratch = gpu_->empty({static_cast<int64_t>(attention_reference_backward_scratch(p)) + 1});
    launch_attention_backward_reference(p, gpu_->in(in.q.gpu), gpu_->in(in.k.gpu), gpu_->in(in.v.gpu),
                                        gpu_->in(out.gpu), gpu_->in(lse.gpu), gpu_->in(d_out.gpu), gpu_->address(rq),
                                        gpu_->address(rk), gpu_->address(rv), gpu_->address(scratch), gpu_->stream());
    expect_same_on_gpu(dq.gpu, rq, "dq vs baseline");
    expect_same_on_gpu(dk.gpu, rk, "dk vs baseline");
    expect_same_on_gpu(dv.gpu, rv, "dv vs baseline");
  }
}

// Context parallelism: the keys split in two blocks; each block's backward with the full out and
// lse, the dq shares summed, equal the CPU's block backward (and so the full backward).
TEST_F(AttentionBTest, BlockBackwardOverAKeyBlock) {
  SCOPED_TRACE(seed_text());
  for (float dropout : {0.0f, 0.1f}) {
    const AttnCase full{"ring", 40, 40, 2, 4, 2, 32, 0, 0, dropout};
    Inputs in = make_inputs(full);
    bind_args(in, full);
    const Pair out0 = poisoned(in.q.cpu.shape), lse0 = poisoned({full.b, full.hq, full.s_q});
    cpu_.attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, in.args, out0.cpu, lse0.cpu);
    const Pair out = both(out0.cpu.shape, cpu_.to_host(out0.cpu)), lse = both(lse0.cpu.shape, cpu_.to_host(lse0.cpu));
    const Pair d_out = random_pair(in.q.cpu.shape);
    // Key block: rows [8, 30) with their global positions.
    const int64_t begin = 8, end = 30, width = end - begin;
    const std::vector<float> k_all = cpu_.to_host(in.k.cpu), v_all = cpu_.to_host(in.v.cpu);
    const int64_t row = full.b * full.hkv * full.d;
    const Pair kb = both({width, full.b, full.hkv, full.d},
                         std::vector<float>(k_all.begin() + begin * row, k_all.begin() + end * row));
    const Pair vb = both({width, full.b, full.hkv, full.d},
                         std::vector<float>(v_all.begin() + begin * row, v_all.begin() + end * row));
    const std::vector<int32_t> block_pos = consecutive(width, static_cast<int32_t>(begin));
    in.args.kv_positions = block_pos;
    const Pair dq = poisoned(in.q.cpu.shape), dk = poisoned(kb.cpu.shape), dv = poisoned(vb.cpu.shape);
    cpu_.attention_backward_block(in.q.cpu, kb.cpu, vb.cpu, out.cpu, lse.cpu, d_out.cpu, in.args, dq.cpu, dk.cpu,
                                  dv.cpu);
    gpu_->attention_backward_block(in.q.gpu, kb.gpu, vb.gpu, out.gpu, lse.gpu, d_out.gpu, in.args, dq.gpu, dk.gpu,
                                   dv.gpu);
    expect_bf16(dq, "block dq");
    expect_bf16(dk, "block dk");
    expect_bf16(dv, "block dv");
  }
}

TEST_F(AttentionBTest, MergeOfPartialResults) {
  SCOPED_TRACE(seed_text());
  const int64_t s_q = 21, b = 2, hq = 3, d = 19, s_blk = 9, row0 = 7;
  const Pair out = random_pair({s_q, b, hq, d}), lse = random_pair({b, hq, s_q}, 3.0f);
  const Pair out_blk = random_pair({s_blk, b, hq, d}), lse_blk = random_pair({b, hq, s_blk}, 3.0f);
  cpu_.attention_merge(out.cpu, lse.cpu, out_blk.cpu, lse_blk.cpu, row0);
  gpu_->attention_merge(out.gpu, lse.gpu, out_blk.gpu, lse_blk.gpu, row0);
  expect_fp32(out, "merged out");
  expect_fp32(lse, "merged lse");
}

}  // namespace
}  // namespace tandem::cuda::testing
