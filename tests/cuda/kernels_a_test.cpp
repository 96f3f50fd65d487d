// GPU tests of the part A kernels: every CudaDevice method of cuda_device_ops_a.cpp against the
// CPU device (the reference) on fresh random inputs (the seed is printed through SCOPED_TRACE for
// replay), outputs poisoned with NaN before each call, odd sizes, vocab ranges, accumulation vs
// overwrite; plus the launchers the device does not reach (AdamW's bf16 copy, the ranges'
// sum of squares) and run-to-run determinism. Skips without a device.
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_tensor_device.h"
#include "backends/cuda/ops_optimizer.cuh"
#include "backends/cuda/ops_reduce.cuh"
#include "backends/kernel_math/bf16_math.h"
#include "tests/cuda/kernels_b_util.h"

namespace tandem::cuda {
namespace {

using exec::ActivationKind;
using exec::DeviceTensor;
using exec::NormKind;
using exec::Shape;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using testing::Pair;

// The part-B fixture (CPU and CUDA devices side by side, seeded inputs, NaN-poisoned outputs,
// comparisons) with the integer draws the part-A tests need.
class KernelsATest : public testing::KernelsBTest {
 protected:
  int64_t uniform_int(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  std::vector<int32_t> random_ids(int64_t n, int64_t lo, int64_t hi) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = static_cast<int32_t>(uniform_int(lo, hi));
    return ids;
  }
};

TEST_F(KernelsATest, FillCopyAddAxpyScale) {
  SCOPED_TRACE(seed_text());
  const Shape s{37, 129};
  Pair t = poisoned(s);
  cpu_.fill(t.cpu, 1.25f);
  gpu_->fill(t.gpu, 1.25f);
  expect_equal(t, "fill");
  Pair a = random_pair(s), b = random_pair(s), out = poisoned(s);
  cpu_.copy(a.cpu, out.cpu);
  gpu_->copy(a.gpu, out.gpu);
  expect_equal(out, "copy");
  cpu_.add(a.cpu, b.cpu, out.cpu);
  gpu_->add(a.gpu, b.gpu, out.gpu);
  expect_equal(out, "add");
  cpu_.add(a.cpu, b.cpu, a.cpu);   // out aliases a
  gpu_->add(a.gpu, b.gpu, a.gpu);
  expect_equal(a, "add in place");
  cpu_.axpy(-0.37f, b.cpu, out.cpu);
  gpu_->axpy(-0.37f, b.gpu, out.gpu);
  expect_fp32(out, "axpy accumulates");
  cpu_.scale(out.cpu, 0.3f);
  gpu_->scale(out.gpu, 0.3f);
  expect_fp32(out, "scale");
}

TEST_F(KernelsATest, CopyBetweenOverlappingViewsOfOneStorage) {
  SCOPED_TRACE(seed_text());
  Pair buf = random_pair({301});
  for (auto* dev : {static_cast<exec::Device*>(&cpu_), static_cast<exec::Device*>(gpu_.get())}) {
    const DeviceTensor& t = dev == &cpu_ ? buf.cpu : buf.gpu;
    dev->copy(t.slice(0, {200}), t.slice(50, {200}));
  }
  expect_equal(buf, "overlapping copy");
}

TEST_F(KernelsATest, RowVectorsColumnSumsAndColumnCopies) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 1003, cols = 45;
  Pair x = random_pair({rows, cols}), bias = random_pair({cols});
  cpu_.add_row_vector(x.cpu, bias.cpu);
  gpu_->add_row_vector(x.gpu, bias.gpu);
  expect_equal(x, "add_row_vector");
  Pair sums = random_pair({cols});   // accumulated into
  cpu_.column_sums_accumulate(x.cpu, sums.cpu);
  gpu_->column_sums_accumulate(x.gpu, sums.gpu);
  expect_fp32(sums, "column_sums_accumulate");
  Pair narrow = poisoned({rows, 17});
  cpu_.copy_columns(x.cpu, 21, narrow.cpu);
  gpu_->copy_columns(x.gpu, 21, narrow.gpu);
  expect_equal(narrow, "copy_columns");
}

TEST_F(KernelsATest, DropoutDrawsTheCpuMask) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 67, cols = 333;
  std::vector<int64_t> row_ids(rows);
  for (int64_t r = 0; r < rows; ++r) row_ids[r] = uniform_int(0, 1 << 20);
  const uint64_t key = (static_cast<uint64_t>(rng_()) << 32) | rng_();
  for (float p : {0.0f, 0.1f, 0.5f}) {
    Pair x = random_pair({rows, cols});
    cpu_.dropout(x.cpu, p, key, row_ids);
    gpu_->dropout(x.gpu, p, key, row_ids);
    expect_equal(x, "dropout p = " + std::to_string(p));
  }
}

TEST_F(KernelsATest, SumsInDouble) {
  SCOPED_TRACE(seed_text());
  for (int64_t n : {1, 255, 100003, 3000017}) {
    Pair x = random_pair({n});
    const double c2 = cpu_.sum_of_squares(x.cpu), g2 = gpu_->sum_of_squares(x.gpu);
    EXPECT_NEAR(g2, c2, 1e-9 * c2) << n;
    const double c1 = cpu_.sum(x.cpu), g1 = gpu_->sum(x.gpu);
    EXPECT_NEAR(g1, c1, 1e-9 * std::sqrt(c2) * std::sqrt(static_cast<double>(n)) + 1e-12) << n;
    EXPECT_EQ(gpu_->sum_of_squares(x.gpu), g2) << "run-to-run " << n;
  }
}

TEST_F(KernelsATest, SumOfSquaresOverRangesInOneLaunch) {
  SCOPED_TRACE(seed_text());
  std::vector<Pair> parts;
  double expected = 0;
  for (int64_t n : {0, 1, 511, 70001, 33}) {
    parts.push_back(random_pair({n}));
    expected += cpu_.sum_of_squares(parts.back().cpu);
  }
  std::vector<FloatRange> ranges;
  for (const Pair& p : parts) ranges.push_back({p.gpu.numel() ? gpu_->in(p.gpu) : nullptr, p.gpu.numel()});
  const size_t bytes = sum_of_squares_ranges_scratch_bytes(ranges.data(), static_cast<int64_t>(ranges.size()));
  std::shared_ptr<void> scratch = gpu_->scratch(bytes), result = gpu_->scratch(sizeof(double));
  auto* dev_result = static_cast<double*>(result.get());
  launch_sum_of_squares_ranges(ranges.data(), static_cast<int64_t>(ranges.size()), dev_result, scratch.get(), bytes,
                               gpu_->stream());
  double got = 0;
  ASSERT_EQ(cudaMemcpyAsync(&got, dev_result, sizeof got, cudaMemcpyDeviceToHost, gpu_->stream()), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(gpu_->stream()), cudaSuccess);
  EXPECT_NEAR(got, expected, 1e-9 * expected);
}

TEST_F(KernelsATest, EmbeddingForwardAndAccumulatingBackwardOverAVocabRange) {
  SCOPED_TRACE(seed_text());
  const int64_t v_local = 53, h = 37, tokens = 211, vocab_start = 100;
  // Ids around this rank's rows [100, 153): some outside (zero rows / skipped), many repeated.
  const std::vector<int32_t> ids = random_ids(tokens, 80, 170);
  Pair table = random_pair({v_local, h}), out = poisoned({tokens, h});
  cpu_.embedding_forward(ids, table.cpu, vocab_start, out.cpu);
  gpu_->embedding_forward(ids, table.gpu, vocab_start, out.gpu);
  expect_equal(out, "embedding_forward");
  Pair d_out = random_pair({tokens, h}), d_table = random_pair({v_local, h});
  cpu_.embedding_backward(ids, d_out.cpu, vocab_start, d_table.cpu);
  gpu_->embedding_backward(ids, d_out.gpu, vocab_start, d_table.gpu);
  expect_fp32(d_table, "embedding_backward accumulates");
}

TEST_F(KernelsATest, NormsForwardAndBackwardBothKinds) {
  SCOPED_TRACE(seed_text());
  for (NormKind kind : {NormKind::LayerNorm, NormKind::RMSNorm}) {
    for (int64_t h : {7, 129, 1000, 4099}) {
      const int64_t rows = 77;
      const bool layer = kind == NormKind::LayerNorm;
      SCOPED_TRACE((layer ? "layernorm h = " : "rmsnorm h = ") + std::to_string(h));
      std::vector<float> xv = random(rows * h, 2.0f);
      for (float& v : xv) v += 0.5f;   // a non-zero mean
      Pair x = both({rows, h}, xv), gamma = random_pair({h}), beta = random_pair({h});
      Pair y = poisoned({rows, h}), mean = poisoned({rows}), rstd = poisoned({rows});
      const DeviceTensor none;
      cpu_.norm_forward(kind, x.cpu, gamma.cpu, layer ? beta.cpu : none, 1e-5f, y.cpu, layer ? mean.cpu : none, rstd.cpu);
      gpu_->norm_forward(kind, x.gpu, gamma.gpu, layer ? beta.gpu : none, 1e-5f, y.gpu, layer ? mean.gpu : none,
                         rstd.gpu);
      expect_fp32(y, "y");
      expect_fp32(rstd, "rstd");
      if (layer) expect_fp32(mean, "mean");
      Pair dy = random_pair({rows, h}), dx = poisoned({rows, h});
      Pair dgamma = random_pair({h}), dbeta = random_pair({h});   // accumulated into
      cpu_.norm_backward(kind, x.cpu, gamma.cpu, layer ? mean.cpu : none, rstd.cpu, dy.cpu, dx.cpu, dgamma.cpu,
                         layer ? dbeta.cpu : none);
      gpu_->norm_backward(kind, x.gpu, gamma.gpu, layer ? mean.gpu : none, rstd.gpu, dy.gpu, dx.gpu, dgamma.gpu,
                          layer ? dbeta.gpu : none);
      expect_close(dx, 2e-5f, 1e-4f, "dx");
      expect_fp32(dgamma, "dgamma");
      if (layer) expect_fp32(dbeta, "dbeta");
    }
  }
}

TEST_F(KernelsATest, NormBackwardIsByteIdenticalRunToRun) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 3001, h = 257;
  Pair x = random_pair({rows, h}), gamma = random_pair({h}), dy = random_pair({rows, h});
  Pair y = poisoned({rows, h}), mean = poisoned({rows}), rstd = poisoned({rows});
  gpu_->norm_forward(NormKind::LayerNorm, x.gpu, gamma.gpu, {}, 1e-5f, y.gpu, mean.gpu, rstd.gpu);
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceTensor dx = gpu_->empty({rows, h}), dgamma = gpu_->zeros({h}), dbeta = gpu_->zeros({h});
    gpu_->norm_backward(NormKind::LayerNorm, x.gpu, gamma.gpu, mean.gpu, rstd.gpu, dy.gpu, dx, dgamma, dbeta);
    std::vector<float> all = gpu_->to_host(dx), g = gpu_->to_host(dgamma), b = gpu_->to_host(dbeta);
    all.insert(all.end(), g.begin(), g.end());
    all.insert(all.end(), b.begin(), b.end());
    runs.push_back(std::move(all));
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0);
}

TEST_F(KernelsATest, ActivationsForwardAndBackward) {
  SCOPED_TRACE(seed_text());
  const int64_t rows = 131, f = 95;
  for (ActivationKind kind : {ActivationKind::GeluTanh, ActivationKind::GeluErf, ActivationKind::SwiGlu}) {
    const bool glu = kind == ActivationKind::SwiGlu;
    SCOPED_TRACE("activation " + std::to_string(static_cast<int>(kind)));
    const Shape in_shape{rows, glu ? 2 * f : f}, out_shape{rows, f};
    Pair x = random_pair(in_shape, 3.0f), y = poisoned(out_shape);
    cpu_.activation_forward(kind, x.cpu, y.cpu);
    gpu_->activation_forward(kind, x.gpu, y.gpu);
    expect_close(y, 1e-5f, 1e-5f, "forward");
    Pair dy = random_pair(out_shape), dx = poisoned(in_shape);
    cpu_.activation_backward(kind, x.cpu, dy.cpu, dx.cpu);
    gpu_->activation_backward(kind, x.gpu, dy.gpu, dx.gpu);
    expect_close(dx, 1e-5f, 1e-5f, "backward");
  }
}

TEST_F(KernelsATest, RopeWithAndWithoutPositions) {
  SCOPED_TRACE(seed_text());
  const int64_t s = 37, b = 3, heads = 5, d = 18;
  std::vector<int32_t> positions(s);
  const int32_t offset = static_cast<int32_t>(uniform_int(0, 4000));
  for (int64_t p = 0; p < s; ++p) positions[p] = offset + static_cast<int32_t>(p) * 2;   // a CP-like shard
  for (const std::vector<int32_t>& pos : {std::vector<int32_t>{}, positions}) {
    SCOPED_TRACE(pos.empty() ? "positions 0..s-1" : "explicit positions");
    Pair x = random_pair({s, b, heads, d}), y = poisoned({s, b, heads, d});
    cpu_.rope_forward(x.cpu, pos, 10000.0, y.cpu);
    gpu_->rope_forward(x.gpu, pos, 10000.0, y.gpu);
    expect_close(y, 1e-5f, 1e-5f, "rope_forward");
    Pair dx = poisoned({s, b, heads, d});
    cpu_.rope_backward(y.cpu, pos, 10000.0, dx.cpu);
    gpu_->rope_backward(y.gpu, pos, 10000.0, dx.gpu);
    expect_close(dx, 1e-5f, 1e-5f, "rope_backward");
    cpu_.rope_forward(x.cpu, pos, 500000.0, x.cpu);   // in place
    gpu_->rope_forward(x.gpu, pos, 500000.0, x.gpu);
    expect_close(x, 1e-5f, 1e-5f, "rope in place");
  }
}

TEST_F(KernelsATest, VocabParallelCrossEntropyChain) {
  SCOPED_TRACE(seed_text());
  const int64_t tokens = 29, v = 1031, vocab_start = 2000;
  // Targets inside this rank's rows [2000, 3031) and outside them.
  const std::vector<int32_t> targets = random_ids(tokens, 1500, 3500);
  Pair logits = random_pair({tokens, v}, 4.0f);
  Pair max = poisoned({tokens}), sum_exp = poisoned({tokens}), target_logit = poisoned({tokens});
  cpu_.cross_entropy_partials(logits.cpu, targets, vocab_start, max.cpu, sum_exp.cpu, target_logit.cpu);
  gpu_->cross_entropy_partials(logits.gpu, targets, vocab_start, max.gpu, sum_exp.gpu, target_logit.gpu);
  expect_equal(max, "max");
  expect_fp32(sum_exp, "sum_exp");
  expect_equal(target_logit, "target_logit");
  // Another rank's larger maximum.
  std::vector<float> gmax = cpu_.to_host(max.cpu);
  for (float& m : gmax) m += std::abs(random(1)[0]);
  Pair global_max = both({tokens}, gmax);
  cpu_.rescale_sum_exp(sum_exp.cpu, max.cpu, global_max.cpu);
  gpu_->rescale_sum_exp(sum_exp.gpu, max.gpu, global_max.gpu);
  expect_fp32(sum_exp, "rescale_sum_exp");
  Pair loss = poisoned({tokens});
  cpu_.cross_entropy_loss(global_max.cpu, sum_exp.cpu, target_logit.cpu, loss.cpu);
  gpu_->cross_entropy_loss(global_max.gpu, sum_exp.gpu, target_logit.gpu, loss.gpu);
  expect_fp32(loss, "cross_entropy_loss");
  Pair d_loss = random_pair({tokens}), d_logits = poisoned({tokens, v});
  cpu_.cross_entropy_backward(logits.cpu, targets, vocab_start, global_max.cpu, sum_exp.cpu, d_loss.cpu, d_logits.cpu);
  gpu_->cross_entropy_backward(logits.gpu, targets, vocab_start, global_max.gpu, sum_exp.gpu, d_loss.gpu,
                               d_logits.gpu);
  expect_close(d_logits, 1e-5f, 1e-4f, "cross_entropy_backward");
}

TEST_F(KernelsATest, AdamwSteps) {
  SCOPED_TRACE(seed_text());
  const int64_t n = 10007;
  Pair param = random_pair({n}), m = random_pair({n}, 0.01f);
  std::vector<float> vv = random(n, 0.001f);
  for (float& x : vv) x = x * x;   // second moments are non-negative
  Pair v = both({n}, vv);
  for (int64_t step = 1; step <= 3; ++step) {
    Pair grad = random_pair({n});
    cpu_.adamw_step(param.cpu, grad.cpu, m.cpu, v.cpu, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.7f);
    gpu_->adamw_step(param.gpu, grad.gpu, m.gpu, v.gpu, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.7f);
  }
  expect_fp32(param, "param");
  expect_fp32(m, "exp_avg");
  expect_fp32(v, "exp_avg_sq");
}

TEST_F(KernelsATest, AdamwLauncherWritesTheBf16Copy) {
  SCOPED_TRACE(seed_text());
  const int64_t n = 4099;
  Pair param = random_pair({n}), grad = random_pair({n}), m = random_pair({n}, 0.01f);
  std::vector<float> vv = random(n, 0.001f);
  for (float& x : vv) x = x * x;
  Pair v = both({n}, vv);
  const kmath::AdamWStep s = kmath::adamw_step_constants(3e-4, 0.9, 0.999, 1e-8, 0.01, 5);
  cpu_.adamw_step(param.cpu, grad.cpu, m.cpu, v.cpu, 3e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, 5, 1.0f);
  std::shared_ptr<void> bf16 = gpu_->scratch(static_cast<size_t>(n) * sizeof(__nv_bfloat16));
  ASSERT_EQ(cudaMemsetAsync(bf16.get(), 0xff, static_cast<size_t>(n) * 2, gpu_->stream()), cudaSuccess);   // NaN
  launch_adamw(gpu_->address(param.gpu), gpu_->in(grad.gpu), gpu_->address(m.gpu), gpu_->address(v.gpu), n, s, 1.0f,
               static_cast<__nv_bfloat16*>(bf16.get()), gpu_->stream());
  expect_fp32(param, "param");
  std::vector<uint16_t> bits(static_cast<size_t>(n));
  ASSERT_EQ(cudaMemcpyAsync(bits.data(), bf16.get(), bits.size() * 2, cudaMemcpyDeviceToHost, gpu_->stream()),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(gpu_->stream()), cudaSuccess);
  const std::vector<float> p = gpu_->to_host(param.gpu);   // the bf16 copy rounds the GPU's own fp32 result
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(bits[i], kmath::float_to_bf16_bits(p[i])) << "bf16 copy [" << i << "] of " << p[i];
}

}  // namespace
}  // namespace tandem::cuda
