// GEMM throughput of tandem's CPU backend against the machine's OpenBLAS sgemm, on the shapes of
// a transformer layer's linear layers (forward, grad-input, grad-weight), and Eigen's own GEMM
// for reference. Reports FLOP/s per benchmark (2 m n k per product).
//
//   cmake --build build --target cpu_gemm_bench
//   OPENBLAS_NUM_THREADS=1 build/experiments/cpu_gemm_bench --benchmark_min_time=0.5
// (pass: 0 forward y = x W, 1 grad-input dx = dy W^T, 2 grad-weight dW += x^T dy.) FLOP/s are per
// CPU second (Google Benchmark's default), steadier than wall time on a shared machine.
//
// The bar: tandem's GEMMs reach >= 60% of OpenBLAS sgemm on the same shapes.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/tensor.h"

#if defined(TANDEM_CPU_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace {

using tandem::cpu::Tensor;
using tandem::cpu::WeightLayout;

// Which product of a linear layer y [m, n] = x [m, k] · W [k, n] is timed.
enum class Pass : int64_t { Forward = 0, GradInput = 1, GradWeight = 2 };

Tensor random_tensor(tandem::cpu::Shape shape, uint64_t seed) {
  Tensor t(std::move(shape));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : t.data) v = dist(rng);
  return t;
}

struct Operands {
  int64_t m, n, k;
  Tensor x, w, y, dy, dx, dw;
  Operands(int64_t m_, int64_t n_, int64_t k_)
      : m(m_), n(n_), k(k_), x(random_tensor({m_, k_}, 1)), w(random_tensor({k_, n_}, 2)), y({m_, n_}),
        dy(random_tensor({m_, n_}, 3)), dx({m_, k_}), dw({k_, n_}) {}
};

void set_counters(benchmark::State& state, const Operands& o) {
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(o.m * o.n * o.k),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void BM_tandem(benchmark::State& state) {
  Operands o(state.range(0), state.range(1), state.range(2));
  const auto pass = static_cast<Pass>(state.range(3));
  for (auto _ : state) {
    if (pass == Pass::Forward) {
      tandem::cpu::gemm_forward(o.x, o.w, {}, WeightLayout::InOut, o.y);
    } else if (pass == Pass::GradInput) {
      tandem::cpu::gemm_grad_input(o.dy, o.w, WeightLayout::InOut, o.dx);
    } else {
      tandem::cpu::gemm_grad_weight(o.x, o.dy, WeightLayout::InOut, o.dw, {});
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, o);
  state.SetLabel(tandem::cpu::gemm_backend_name());
}

// The same three products through `gemm` (signature of tandem::cpu::sgemm).
template <typename Gemm>
void run_raw(benchmark::State& state, Gemm gemm) {
  Operands o(state.range(0), state.range(1), state.range(2));
  const auto pass = static_cast<Pass>(state.range(3));
  for (auto _ : state) {
    if (pass == Pass::Forward) {
      gemm(false, false, o.m, o.n, o.k, o.x.data.data(), o.k, o.w.data.data(), o.n, 0.0f, o.y.data.data(), o.n);
    } else if (pass == Pass::GradInput) {
      gemm(false, true, o.m, o.k, o.n, o.dy.data.data(), o.n, o.w.data.data(), o.n, 0.0f, o.dx.data.data(), o.k);
    } else {
      gemm(true, false, o.k, o.n, o.m, o.x.data.data(), o.k, o.dy.data.data(), o.n, 1.0f, o.dw.data.data(), o.n);
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, o);
}

void BM_eigen(benchmark::State& state) {
  run_raw(state, [](bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float beta, float* c, int64_t ldc) {
    tandem::cpu::sgemm_eigen(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  });
}

#if defined(TANDEM_CPU_HAVE_OPENBLAS)
void BM_openblas(benchmark::State& state) {
  run_raw(state, [](bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float beta, float* c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
  });
  state.SetLabel(openblas_get_config());
}
#endif

// (m = tokens, n, k): QKV (h -> 3h), MLP up (h -> 4h) and down (4h -> h) at h = 1024 on 512
// tokens, and a small h = 256 layer on 2048 tokens; each with the three passes. The
// implementations run interleaved per shape, so a change of machine load hits them alike.
void register_benchmarks() {
  const std::vector<std::vector<int64_t>> mnk = {{512, 3072, 1024}, {512, 4096, 1024}, {512, 1024, 4096},
                                                 {2048, 256, 256}};
  std::vector<std::pair<const char*, void (*)(benchmark::State&)>> impls = {{"tandem", BM_tandem}};
#if defined(TANDEM_CPU_HAVE_OPENBLAS)
  impls.push_back({"openblas", BM_openblas});
#endif
  impls.push_back({"eigen", BM_eigen});
  for (const auto& s : mnk) {
    for (int64_t pass = 0; pass < 3; ++pass) {
      for (const auto& [name, fn] : impls) {
        benchmark::RegisterBenchmark(name, fn)
            ->ArgNames({"m", "n", "k", "pass"})
            ->Args({s[0], s[1], s[2], pass})
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
