// cuBLASLt GEMMs with bf16 operands and fp32 accumulation (ops_gemm.cuh).
#include "backends/cuda/ops_gemm.cuh"

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch_config.h"

namespace tandem::cuda {

void check_cublas(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt error in ") + what + " at " + file + ":" + std::to_string(line) +
                             ": " + cublasLtGetStatusString(status));
}

namespace {

// What a cached plan depends on.
struct PlanKey {
  cublasLtHandle_t handle;
  bool trans_a, trans_b, bias, accumulate;
  int64_t m, n, k;
  uint32_t align_a, align_b, align_c;
  auto tie() const {
    return std::tie(handle, trans_a, trans_b, bias, accumulate, m, n, k, align_a, align_b, align_c);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// Descriptors and the chosen algorithm of one shape.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {   // destructors never throw: statuses are ignored here
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// Shapes repeat every micro-batch; MoE expert sizes vary, so the map is bounded (cleared when full).
constexpr size_t kMaxPlans = 512;

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}
std::map<PlanKey, std::unique_ptr<Plan>>& cache() {
  static std::map<PlanKey, std::unique_ptr<Plan>> c;
  return c;
}

// c [m, n] = bias [n] on every row (the empty-reduction case and the no-epilogue fallback).
__global__ void broadcast_rows_kernel(const float* __restrict__ bias, float* __restrict__ c, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    c[i] = bias[i % n];
}

void broadcast_rows(const float* bias, float* c, int64_t m, int64_t n, cudaStream_t stream) {
  const LaunchConfig cfg = grid_1d(m * n);
  if (cfg.empty()) return;
  broadcast_rows_kernel<<<static_cast<unsigned>(cfg.grid), cfg.block, 0, stream>>>(bias, c, m, n);
  TANDEM_CHECK_LAUNCH("broadcast_rows_kernel");
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

std::unique_ptr<Plan> make_plan(const PlanKey& key, size_t workspace_bytes) {
  auto plan = std::make_unique<Plan>();
  const ColumnMajorGemm g = to_column_major(key.trans_a, key.trans_b, key.m, key.n, key.k);
  TANDEM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  if (key.bias) {
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CUDA_R_32F);
  }
  TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, g.rows_a, g.cols_a, static_cast<int64_t>(g.ld_a)));
  TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, g.rows_b, g.cols_b, static_cast<int64_t>(g.ld_b)));
  TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32F, g.rows_c, g.cols_c, static_cast<int64_t>(g.ld_c)));
  cublasLtMatmulPreference_t pref = nullptr;
  TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes;
  // cuBLAS's A is our B and its B our A: the alignments swap with them.
  const uint32_t align_a = key.align_b, align_b = key.align_a, align_c = key.align_c;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(key.handle, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result,
                                        &found);
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED from the heuristic means no algorithm fits, like found == 0.
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found < 1))
    return nullptr;   // the caller decides (bias fallback or error)
  TANDEM_CUBLAS_CHECK(st);
  plan->algo = result.algo;
  plan->workspace = result.workspaceSize;
  return plan;
}

// The cached plan of `key` (nullptr when cuBLASLt offers no algorithm for it).
const Plan* find_plan(const PlanKey& key, size_t workspace_bytes) {
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto& c = cache();
  auto it = c.find(key);
  if (it != c.end()) return it->second.get();
  if (c.size() >= kMaxPlans) c.clear();
  auto plan = make_plan(key, workspace_bytes);
  const Plan* raw = plan.get();
  c.emplace(key, std::move(plan));
  return raw;
}

void check_gemm_args(const LtGemm& g) {
  check_size("gemm", "m", g.m);
  check_size("gemm", "n", g.n);
  check_size("gemm", "k", g.k);
  if (g.m > 0 && g.n > 0 && g.c == nullptr) throw std::invalid_argument("gemm: null output for a non-empty product");
  if (g.m > 0 && g.n > 0 && g.k > 0 && (g.a == nullptr || g.b == nullptr))
    throw std::invalid_argument("gemm: null operand for k = " + std::to_string(g.k));
  if (g.beta != 0.0f && g.beta != 1.0f)
    throw std::invalid_argument("gemm: beta = " + std::to_string(g.beta) + " (only 0 or 1)");
  if (g.bias != nullptr && g.beta != 0.0f) throw std::invalid_argument("gemm: bias with beta = 1 is not supported");
}

void issue(cublasLtHandle_t handle, void* workspace, const Plan& plan, const LtGemm& g, cudaStream_t stream) {
  const float alpha = 1.0f, beta = g.beta;
  if (g.bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  // cuBLAS's A is our B, its B our A (column-major transpose of the row-major product).
  TANDEM_CUBLAS_CHECK(cublasLtMatmul(handle, plan.desc, &alpha, g.b, plan.a, g.a, plan.b, &beta, g.c, plan.c, g.c,
                                     plan.c, &plan.algo, workspace, plan.workspace, stream));
}

}  // namespace

void lt_matmul(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes, const LtGemm& g,
               cudaStream_t stream) {
  check_gemm_args(g);
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {   // empty reduction: C = beta C (+ bias)
    if (g.beta == 0.0f)
      TANDEM_CUDA_CHECK(cudaMemsetAsync(g.c, 0, static_cast<size_t>(g.m * g.n) * sizeof(float), stream));
    if (g.bias) broadcast_rows(g.bias, g.c, g.m, g.n, stream);
    return;
  }
  PlanKey key{handle, g.trans_a, g.trans_b, g.bias != nullptr, g.beta != 0.0f, g.m, g.n, g.k,
              pointer_alignment(g.a), pointer_alignment(g.b), pointer_alignment(g.c)};
  const Plan* plan = find_plan(key, workspace_bytes);
  if (plan == nullptr && g.bias != nullptr) {
    // No bias-epilogue algorithm for this shape: C = bias on every row, then C += A B.
    broadcast_rows(g.bias, g.c, g.m, g.n, stream);
    LtGemm acc = g;
    acc.bias = nullptr;
    acc.beta = 1.0f;
    return lt_matmul(handle, workspace, workspace_bytes, acc, stream);
  }
  if (plan == nullptr)
    throw std::runtime_error("gemm: cuBLASLt has no algorithm for m = " + std::to_string(g.m) + ", n = " +
                             std::to_string(g.n) + ", k = " + std::to_string(g.k));
  issue(handle, workspace, *plan, g, stream);
}

void lt_cache_release(cublasLtHandle_t handle) {
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto& c = cache();
  for (auto it = c.begin(); it != c.end();) it = it->first.handle == handle ? c.erase(it) : std::next(it);
}

size_t lt_cache_size() {
  std::lock_guard<std::mutex> lock(cache_mutex());
  return cache().size();
}

}  // namespace tandem::cuda
