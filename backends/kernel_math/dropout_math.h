#pragma once
// Deterministic dropout masks, shared by every backend: a keep decision is a pure function of a
// key and global coordinates, so every parallel layout, recompute and backend draws the same mask.
//
// Hidden dropout (embedding output, residual branches), element (row, col) of a [rows, cols] tensor:
//   row_seed = splitmix64(key ^ (row_id * 0xD1B54A32D192ED03))        row_id: global token row
//   u        = top 53 bits of splitmix64(row_seed + col * 0x9E3779B97F4A7C15), as a double in [0, 1)
//   keep     = u >= p,  kept values scaled by 1 / (1 - p)
// Attention dropout, probability of (sample, head, query position, key position):
//   state = key ^ sample * 0xD1B54A32D192ED03 ^ head * 0xA24BAED4963EE407 ^ (q_pos << 32) ^ kv_pos
//   u     = top 53 bits of splitmix64(state);  keep = u >= p
// splitmix64 adds 0x9E3779B97F4A7C15 to its state before mixing (Vigna's generator, one step).
#include "backends/kernel_math/kernel_math_common.h"

namespace tandem::kmath {

// One splitmix64 step: advances *state and returns the mixed value.
TANDEM_HD inline uint64_t splitmix64_step(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The top 53 bits of a 64-bit draw as a double in [0, 1) (exact).
TANDEM_HD inline double uniform53(uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// Seed of a row of hidden dropout (row_id: the global token row).
TANDEM_HD inline uint64_t hidden_dropout_row_seed(uint64_t key, int64_t row_id) {
  uint64_t state = key ^ (static_cast<uint64_t>(row_id) * 0xD1B54A32D192ED03ull);
  return splitmix64_step(&state);
}

// Whether column col of the row with seed row_seed is kept at drop probability p.
TANDEM_HD inline bool hidden_dropout_keep(uint64_t row_seed, int64_t col, float p) {
  uint64_t state = row_seed + static_cast<uint64_t>(col) * 0x9E3779B97F4A7C15ull;
  return uniform53(splitmix64_step(&state)) >= static_cast<double>(p);
}

// Whether the attention probability (sample, head, q_pos, kv_pos) is kept at drop probability p
// (all global indices: sample in the global batch, head = head offset + local head).
TANDEM_HD inline bool attention_dropout_keep(uint64_t key, int64_t sample, int64_t head, int64_t q_pos,
                                             int64_t kv_pos, float p) {
  uint64_t state = key ^ (static_cast<uint64_t>(sample) * 0xD1B54A32D192ED03ull) ^
                   (static_cast<uint64_t>(head) * 0xA24BAED4963EE407ull) ^ (static_cast<uint64_t>(q_pos) << 32) ^
                   static_cast<uint64_t>(kv_pos);
  return uniform53(splitmix64_step(&state)) >= static_cast<double>(p);
}

// The factor a dropout applies: 1 / (1 - p) where kept, 0 where dropped.
TANDEM_HD inline float dropout_factor(bool keep, float p) { return keep ? 1.0f / (1.0f - p) : 0.0f; }

}  // namespace tandem::kmath
