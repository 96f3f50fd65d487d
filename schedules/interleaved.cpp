// Interleaved 1F1B (Narayanan et al., "Efficient Large-Scale Language Model Training on GPU
// Clusters Using Megatron-LM", SC 2021; Megatron-LM's
// forward_backward_pipelining_with_interleaving). Each rank holds v chunks; chunk c of rank r is
// stage c*p + r, so a microbatch visits every rank v times.
//
// Order, as in Megatron's schedule table: microbatches are taken in groups of N (N =
// microbatch group size, default p); inside a group, chunk 0 of every microbatch of the group,
// then chunk 1, ... The k-th forward is table[k]; the k-th backward is the same microbatch on
// chunk v-1-c. Rank r runs min((p-r-1)*2 + (v-1)*N, m*v) warm-up forwards, then alternates
// forward and backward, then drains the backwards.
// Accepted (Megatron's rules): v >= 2, p <= N <= m, and the last group (m mod N) is empty or
// holds at least p microbatches. So m need not be a multiple of p when N is chosen, e.g. N = m.
// Unit costs (chunk = 1/v of a stage): makespan 3(m + (p-1)/v) when m is a multiple of p.
//
// Timeline, p = 4, m = 8 (chunks 2), unit costs F = B = W = 1 (`tandem schedule interleaved --pp 4 --microbatches 8`):
//   F forward, B full backward, number = microbatch; lower case = chunk 1; -- continues; . idle
//   rank 0 | F0 F1 F2 F3 f0 f1 f2 f3 F4 F5 F6 .  .  .  b0 -- F7 b1 -- .  f4 b2 -- f5 b3 -- f6 B0 -- f7 B1 -- B2 -- .  B3 -- .  b4 -- .  b5 -- .  b6 -- .  b7 -- B4 -- B5 -- B6 -- B7 --
//   rank 1 | .  F0 F1 F2 F3 f0 f1 f2 f3 F4 .  .  b0 -- F5 b1 -- F6 b2 -- F7 b3 -- f4 B0 -- f5 B1 -- f6 B2 -- f7 B3 -- .  b4 -- .  b5 -- .  b6 -- .  b7 -- B4 -- B5 -- B6 -- B7 -- .  .
//   rank 2 | .  .  F0 F1 F2 F3 f0 f1 f2 .  b0 -- f3 b1 -- F4 b2 -- F5 b3 -- F6 B0 -- F7 B1 -- f4 B2 -- f5 B3 -- f6 b4 -- f7 b5 -- .  b6 -- .  b7 -- B4 -- B5 -- B6 -- B7 -- .  .  .  .
//   rank 3 | .  .  .  F0 F1 F2 F3 f0 b0 -- f1 b1 -- f2 b2 -- f3 b3 -- F4 B0 -- F5 B1 -- F6 B2 -- F7 B3 -- f4 b4 -- f5 b5 -- f6 b6 -- f7 b7 -- B4 -- B5 -- B6 -- B7 -- .  .  .  .  .  .
//   makespan 28.5, bubble fraction 0.1579
#include <algorithm>
#include <utility>
#include <vector>

#include "schedules/schedule_util.h"

namespace tandem {
namespace {

int group_size_of(const ScheduleParams& p) { return p.group_size > 0 ? p.group_size : p.pp; }

// Megatron's get_schedule_table: (microbatch, chunk) of the k-th forward on every rank.
std::vector<std::pair<int, int>> forward_table(int m, int v, int group) {
  std::vector<std::pair<int, int>> table;
  for (int first = 0; first < m; first += group) {
    const int last = first + group >= m ? m : first + group;  // the last group takes the rest
    for (int c = 0; c < v; ++c)
      for (int mb = first; mb < last; ++mb) table.emplace_back(mb, c);
    if (last == m) break;
  }
  return table;
}

Schedule build_interleaved(const ScheduleParams& p) {
  const int m = p.microbatches, v = p.chunks, group = group_size_of(p);
  const auto table = forward_table(m, v, group);
  const int total = m * v;
  ComputeOrder order(p.pp);
  for (int r = 0; r < p.pp; ++r) {
    const int warmup = std::min((p.pp - r - 1) * 2 + (v - 1) * group, total);
    auto fwd = [&](int k) { return sched::fwd(table[k].first, table[k].second); };
    auto bwd = [&](int k) { return sched::bwd(table[k].first, v - 1 - table[k].second); };
    auto& out = order[r];
    for (int k = 0; k < warmup; ++k) out.push_back(fwd(k));
    for (int k = 0; k < total - warmup; ++k) {
      out.push_back(fwd(k + warmup));
      out.push_back(bwd(k));
    }
    for (int k = total - warmup; k < total; ++k) out.push_back(bwd(k));
  }
  return make_schedule("interleaved", interleaved_layout(p.pp, v, m), order);
}

void check_interleaved(const ScheduleParams& p) {
  sched::require_min_microbatches(
      p, p.pp, "interleaved needs at least pp = " + std::to_string(p.pp) + " microbatches");
  const int group = group_size_of(p);
  if (group < p.pp || group > p.microbatches)
    throw_field_error("group_size", group,
                      "the microbatch group size must lie in [pp, microbatches] = [" +
                          std::to_string(p.pp) + ", " + std::to_string(p.microbatches) + "]");
  const int rest = p.microbatches % group;
  if (rest > 0 && rest < p.pp)
    throw_field_error("microbatches", p.microbatches,
                      "with microbatch group size " + std::to_string(group) +
                          (p.group_size == 0 ? " (default = pp)" : "") + " the last group has " +
                          std::to_string(rest) + " microbatches, fewer than pp = " +
                          std::to_string(p.pp) +
                          "; use a multiple of the group size or a group size whose remainder is "
                          "0 or >= pp (e.g. group_size = microbatches)");
}

}  // namespace

ScheduleInfo interleaved_schedule_info() {
  return ScheduleInfo{"interleaved", "Megatron interleaved 1F1B (virtual pipeline, v chunks per rank)",
                      "Narayanan et al., SC 2021; Megatron-LM get_schedule_table",
                      ChunkRule{2, 1 << 16, 2}, check_interleaved, build_interleaved};
}

}  // namespace tandem
