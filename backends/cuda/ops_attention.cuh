#pragma once
// Causal attention with grouped-query attention over explicit global positions: the problem
// description shared by the kernels, and the baseline (reference) kernels. Host-includable.
//
// Layouts (sequence-first, as Megatron and backends/cpu/ops_attention.h):
//   q, out, d_out, dq [s_q, b, hq, d];  k, v, dk, dv [s_kv, b, hkv, d];  lse [b, hq, s_q].
// Query head h reads kv head h / (hq / hkv). Key j is visible to query i iff
// kv_pos[j] <= q_pos[i]. Scores are scale * q . k with q, k, v rounded to bf16 when loaded;
// softmax and accumulation are fp32. A query that sees no key gets out = 0 and lse = -inf.
// Dropout (p > 0) multiplies the probabilities by the keep mask of
// kmath::attention_dropout_keep(key, samples[b], head_offset + h, q_pos, kv_pos) / (1 - p);
// the lse is the softmax's (before dropout).
//
// The baseline materialises the scores [b, hq, s_q, s_kv] in scratch: simple and obviously
// right, it is the second reference of the GPU tests; CudaDevice runs the flash kernels
// (ops_flash_attention.cuh).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tandem::cuda {

struct AttentionProblem {
  int64_t s_q = 0, s_kv = 0, b = 0, hq = 0, hkv = 0, d = 0;
  float scale = 0.0f;                 // resolved softmax scale (> 0)
  const int32_t* q_pos = nullptr;     // device [s_q]
  const int32_t* kv_pos = nullptr;    // device [s_kv]
  float dropout = 0.0f;               // 0: none
  uint64_t dropout_key = 0;
  int64_t head_offset = 0;            // global index of local query head 0
  const int64_t* samples = nullptr;   // device [b], global sample of each batch element (dropout)
};

// Throws std::invalid_argument "<op>: <field> = <value> ..." unless sizes are non-negative,
// hkv divides hq, the scale is positive and finite, 0 <= dropout < 1, and the position
// (and, with dropout, sample) arrays are present for non-empty sizes.
void check_attention_problem(const char* op, const AttentionProblem& p);

// Scratch floats the baseline needs: forward s (scores), backward 2 s + rows (P, dS, delta),
// s = b * hq * s_q * s_kv, rows = b * hq * s_q.
size_t attention_reference_forward_scratch(const AttentionProblem& p);
size_t attention_reference_backward_scratch(const AttentionProblem& p);

// q, k, v -> out, lse (overwritten). scratch: attention_reference_forward_scratch floats.
void launch_attention_forward_reference(const AttentionProblem& p, const float* q, const float* k, const float* v,
                                        float* out, float* lse, float* scratch, cudaStream_t stream);

// The block backward (flash attention's form, exact for a block of the keys when out and lse
// are the queries' full results): D_i = d_out_i . out_i, P = exp(s - lse),
// dS = scale P (dP - D) -> dq (this block's share), dk, dv (all overwritten).
void launch_attention_backward_reference(const AttentionProblem& p, const float* q, const float* k, const float* v,
                                         const float* out, const float* lse, const float* d_out, float* dq, float* dk,
                                         float* dv, float* scratch, cudaStream_t stream);

// out [s_q, b, hq, d], lse [b, hq, s_q] merged with a partial result over query rows
// [row0, row0 + s_blk): out_blk [s_blk, b, hq, d], lse_blk [b, hq, s_blk] (kmath::lse_merge_weights).
void launch_attention_merge(float* out, float* lse, const float* out_blk, const float* lse_blk, int64_t s_q,
                            int64_t b, int64_t hq, int64_t d, int64_t s_blk, int64_t row0, cudaStream_t stream);

}  // namespace tandem::cuda
