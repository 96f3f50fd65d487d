// Two full training steps of a tiny LLaMA (RMSNorm, SwiGLU, RoPE, GQA; two layers, sizes off
// the multiples of 32) on one GPU through train_on_cuda (pool sized from the program, NCCL
// world of one), against the same job on the CPU device (train_on_cpu). Skipped without a GPU.
//
// Tolerances. The CUDA device rounds GEMM and attention operands to bf16 (8 significant bits:
// a relative rounding error up to 2^-9 ~ 2e-3 per operand) and accumulates in fp32; the CPU
// device computes in fp32. Over two layers and the head, logits differ by ~1e-3 relative, and
// the loss (~ln 250 = 5.5, averaged over 192 tokens) by less: 1e-2 relative. The gradient norm
// sums squares of gradients that passed through several bf16 GEMMs each way: 3e-2 relative.
// Step 2 runs after one AdamW update, whose first step moves each weight by about lr * sign(g);
// weights whose tiny gradients change sign under rounding move by 2 lr = 2e-3 differently,
// against weights of std 0.02: the step-2 loss stays within the same 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_train.h"
#include "backends/cpu/mpi_comm.h"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_train.h"
#include "tests/program_test_util.h"

namespace tandem::cuda {
namespace {

cpu::MpiSession& mpi() {
  static cpu::MpiSession session;   // one MPI rank; finalised at exit
  return session;
}

Job tiny_llama_job(uint32_t seed) {
  return testing::job_from_flags(
      {"--num-layers", "2", "--hidden-size", "96", "--ffn-hidden-size", "200", "--num-attention-heads", "6",
       "--group-query-attention", "--num-query-groups", "2", "--seq-length", "48", "--max-position-embeddings", "48",
       "--vocab-size", "250", "--make-vocab-size-divisible-by", "1", "--swiglu", "--normalization", "RMSNorm",
       "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights", "--disable-bias-linear",
       "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "2", "--lr", "1e-3",
       "--lr-warmup-iters", "0", "--clip-grad", "1.0", "--weight-decay", "0.1", "--init-method-std", "0.02",
       "--hidden-dropout", "0", "--attention-dropout", "0", "--mock-data", "--seed", std::to_string(seed)},
      1);
}

void expect_relative(double gpu, double cpu, double tolerance, const std::string& what) {
  EXPECT_TRUE(std::isfinite(gpu)) << what << " = " << gpu;
  EXPECT_LE(std::fabs(gpu - cpu), tolerance * std::fabs(cpu)) << what << ": cuda " << gpu << ", cpu " << cpu;
}

TEST(CudaTrainStep, TinyLlamaMatchesTheCpuDevice) {
  std::string why;
  if (visible_devices(&why).empty()) GTEST_SKIP() << "no CUDA device: " << why;
  ASSERT_EQ(mpi().size(), 1);
  const uint32_t seed = std::random_device{}() % 100000 + 1;
  SCOPED_TRACE("job --seed " + std::to_string(seed));
  const Job job = tiny_llama_job(seed);
  exec::TrainOptions options;
  options.trace_ops = true;
  const exec::TrainReport cpu_run = cpu::train_on_cpu(job, options);
  const exec::TrainReport gpu_run = train_on_cuda(job, options);

  ASSERT_EQ(cpu_run.losses.size(), 2u);
  ASSERT_EQ(gpu_run.losses.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    expect_relative(gpu_run.losses[i], cpu_run.losses[i], 1e-2, "loss of step " + std::to_string(i + 1));
    expect_relative(gpu_run.grad_norms[i], cpu_run.grad_norms[i], 3e-2, "grad norm of step " + std::to_string(i + 1));
    EXPECT_DOUBLE_EQ(gpu_run.lrs[i], cpu_run.lrs[i]);
  }
  // The step changed the weights on both devices alike (AdamW ran): the second loss moved.
  EXPECT_NE(gpu_run.losses[1], gpu_run.losses[0]);
  // The same program ran, instruction by instruction, and the device really held memory.
  EXPECT_EQ(gpu_run.op_trace, cpu_run.op_trace);
  EXPECT_DOUBLE_EQ(gpu_run.program_peak_bytes, cpu_run.program_peak_bytes);
  EXPECT_GT(gpu_run.device_peak_bytes, 0.5 * cpu_run.device_peak_bytes);
}

}  // namespace
}  // namespace tandem::cuda
