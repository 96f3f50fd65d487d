#pragma once
// MoE kernels (host-includable): the top-k router, permutation of token rows to expert-major
// order and back, row gathers and deterministic scatter-adds. Backward passes that sum several
// rows into one never use float atomics: the host builds the inverse map as segments (CSR:
// destination row r sums source rows items[offsets[r] .. offsets[r + 1])) in increasing source
// order, so the GPU adds in the CPU's order and results are reproducible run to run.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace tandem::cuda {

// ---- host-side index plans (tested without a device)

// Segments of a many-to-one row map: `dest_rows` [R] rows written, `offsets` [R + 1],
// `items` [M] source rows (increasing inside a segment).
struct RowSegments {
  std::vector<int64_t> dest_rows;
  std::vector<int64_t> offsets;
  std::vector<int64_t> items;
};

// Source row j goes to destination target[j] (0 <= target < dest_count; throws
// std::invalid_argument "<op>: index[j] = v ..." otherwise). every_row: one segment per
// destination row 0..dest_count-1 (empty ones included, they are written as 0); otherwise only
// rows that receive something.
RowSegments make_row_segments(const char* op, const std::vector<int64_t>& target, int64_t dest_count,
                              bool every_row);

// Capacity dropping of the router (the CPU's rule): per expert, the routed selections beyond
// `capacity` with the smallest weights (stable: lower selection index first among equal weights)
// get kept = 0 and probs = 0. expert [T * k], probs [T * k], kept [T * k] updated in place.
void apply_expert_capacity(const std::vector<int32_t>& expert, int64_t experts, int64_t capacity,
                           std::vector<float>& probs, std::vector<uint8_t>& kept);

// ceil(T * k / E * capacity_factor) as the CPU computes it.
int64_t expert_capacity(int64_t tokens, int64_t topk, int64_t experts, double capacity_factor);

// ---- launchers (device pointers; sizes checked, std::invalid_argument on bad ones)

// logits [T, E] -> scores [T, E] softmax, expert [T, k] top-k (decreasing logit, ties to the
// lower index), probs [T, k] (pre_softmax: scores of the chosen; else softmax of chosen logits).
void launch_router_forward(const float* logits, int64_t tokens, int64_t experts, int64_t topk, bool pre_softmax,
                           float* scores, int32_t* expert, float* probs, cudaStream_t stream);

// d_logits [T, E] from scores [T, E], logits [T, E], expert/kept [T, k], d_probs [T, k] and the
// aux-loss gradient per expert aux_grad [E] (nullptr: none).
void launch_router_backward(const float* logits, const float* scores, const int32_t* expert, const uint8_t* kept,
                            const float* d_probs, const float* aux_grad, int64_t tokens, int64_t experts,
                            int64_t topk, bool pre_softmax, float* d_logits, cudaStream_t stream);

// col_sums [E] (double) = sum over tokens of scores [T, E] (the aux loss's input).
void launch_score_column_sums(const float* scores, int64_t tokens, int64_t experts, double* col_sums,
                              cudaStream_t stream);

// out [n, cols] row j = in [.., cols] row src_rows[j].
void launch_gather_rows(const float* in, const int64_t* src_rows, int64_t n, int64_t cols, float* out,
                        cudaStream_t stream);

// out[dest_rows[r]] (= or +=) sum over i in [offsets[r], offsets[r+1]) of w_i * in[items[i]],
// w_i = weights[weight_index[i]] (weights nullptr: 1). R segments, cols columns.
struct SegmentSum {
  const float* in = nullptr;
  const int64_t* dest_rows = nullptr;   // [R]
  const int64_t* offsets = nullptr;     // [R + 1]
  const int64_t* items = nullptr;       // [M]
  const float* weights = nullptr;       // optional
  const int64_t* weight_index = nullptr;   // [M] when weights
  int64_t segments = 0, cols = 0;
  bool accumulate = false;
  float* out = nullptr;
};
void launch_segment_sum(const SegmentSum& s, cudaStream_t stream);

// Unpermute backward for N permuted rows: d_expert_out[j] = probs[sel[j]] * d_y[tok[j]],
// d_probs[sel[j]] = d_y[tok[j]] . expert_out[j] (double accumulation). d_probs must be zeroed
// before (selections without a row keep 0).
void launch_unpermute_backward(const float* expert_out, const float* probs, const float* d_y, const int64_t* sel,
                               const int64_t* tok, int64_t n, int64_t cols, float* d_expert_out, float* d_probs,
                               cudaStream_t stream);

}  // namespace tandem::cuda
