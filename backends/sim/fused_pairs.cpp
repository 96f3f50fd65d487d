// DualPipe's F&B pairs cut at their expert-parallel communication and merged (fused_pairs.h).
#include "backends/sim/fused_pairs.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace tandem::sim {
namespace {

// One compute action of a pair: which instructions it owns.
struct Part {
  Phase phase = Phase::Forward;
  int microbatch = 0;
  int chunk = 0;
};

bool is_compute_action(ActionKind k) {
  return k == ActionKind::Forward || k == ActionKind::Backward || k == ActionKind::BackwardWeight;
}

Phase phase_of(ActionKind k) {
  return k == ActionKind::Forward ? Phase::Forward : k == ActionKind::Backward ? Phase::Backward : Phase::WeightGrad;
}

// The fused pairs of a rank, in issue order: (first action, second action).
std::vector<std::pair<Part, Part>> pairs_of(const Schedule& schedule, int64_t pipeline_rank) {
  std::vector<std::pair<Part, Part>> out;
  const auto& actions = schedule.actions[static_cast<size_t>(pipeline_rank)];
  for (size_t i = 0; i < actions.size(); ++i) {
    if (!actions[i].fused_with_next || !is_compute_action(actions[i].kind)) continue;
    size_t j = i + 1;
    while (j < actions.size() && !is_compute_action(actions[j].kind)) ++j;
    if (j == actions.size()) continue;
    out.push_back({{phase_of(actions[i].kind), actions[i].microbatch, actions[i].chunk},
                   {phase_of(actions[j].kind), actions[j].microbatch, actions[j].chunk}});
  }
  return out;
}

bool owned(const Instruction& x, const Part& p) {
  return x.phase == p.phase && x.microbatch == p.microbatch && x.chunk == p.chunk &&
         x.stream != StreamKind::PpSend && x.stream != StreamKind::PpRecv;
}

// Pieces of a sequence of instruction indices, each ending after an expert-parallel communication.
std::vector<std::vector<int32_t>> cut(const std::vector<int32_t>& seq, const RankProgram& program) {
  std::vector<std::vector<int32_t>> pieces(1);
  for (int32_t i : seq) {
    pieces.back().push_back(i);
    if (program.instructions[static_cast<size_t>(i)].stream == StreamKind::EpComm) pieces.emplace_back();
  }
  if (pieces.back().empty()) pieces.pop_back();
  return pieces;
}

// The merged order of the block [lo, hi] of one pair, or nothing when the pair is not a block of
// the first action's instructions followed by the second's.
std::optional<std::vector<int32_t>> merged_block(const RankProgram& program, const Part& a, const Part& b,
                                                 int32_t* lo, int64_t* pieces) {
  const auto& ins = program.instructions;
  int32_t first_a = -1, last_a = -1, first_b = -1, last_b = -1;
  for (int32_t i = 0; i < static_cast<int32_t>(ins.size()); ++i) {
    if (owned(ins[static_cast<size_t>(i)], a)) {
      if (first_a < 0) first_a = i;
      last_a = i;
    }
    if (owned(ins[static_cast<size_t>(i)], b)) {
      if (first_b < 0) first_b = i;
      last_b = i;
    }
  }
  if (first_a < 0 || first_b < 0 || first_b < last_a) return std::nullopt;
  std::vector<int32_t> seq_a, seq_b;   // what lies between belongs to the sequence whose run it is in
  for (int32_t i = first_a; i <= last_b; ++i) (i <= last_a ? seq_a : seq_b).push_back(i);
  const auto pa = cut(seq_a, program), pb = cut(seq_b, program);
  if (pa.size() < 2 && pb.size() < 2) return std::nullopt;   // no communication to hide
  std::vector<int32_t> order;
  for (size_t k = 0; k < std::max(pa.size(), pb.size()); ++k) {
    if (k < pa.size()) order.insert(order.end(), pa[k].begin(), pa[k].end());
    if (k < pb.size()) order.insert(order.end(), pb[k].begin(), pb[k].end());
  }
  *lo = first_a;
  *pieces = static_cast<int64_t>(pa.size() + pb.size());
  return order;
}

// Applies the block's new order; false (program unchanged) if some dependency would point forward.
bool apply(RankProgram& program, int32_t lo, const std::vector<int32_t>& order) {
  auto& ins = program.instructions;
  std::vector<int32_t> new_index(ins.size());
  for (int32_t i = 0; i < static_cast<int32_t>(ins.size()); ++i) new_index[static_cast<size_t>(i)] = i;
  for (size_t k = 0; k < order.size(); ++k) new_index[static_cast<size_t>(order[k])] = lo + static_cast<int32_t>(k);
  for (size_t k = 0; k < order.size(); ++k)
    for (int32_t d : ins[static_cast<size_t>(order[k])].deps)
      if (new_index[static_cast<size_t>(d)] >= lo + static_cast<int32_t>(k)) return false;
  std::vector<Instruction> block;
  block.reserve(order.size());
  for (int32_t i : order) block.push_back(std::move(ins[static_cast<size_t>(i)]));
  for (size_t k = 0; k < block.size(); ++k) ins[static_cast<size_t>(lo) + k] = std::move(block[k]);
  for (Instruction& x : ins)
    for (int32_t& d : x.deps) d = new_index[static_cast<size_t>(d)];
  return true;
}

}  // namespace

FusedPairsResult interleave_fused_pairs(RankProgram& program, const Schedule& schedule) {
  FusedPairsResult out;
  for (const auto& [a, b] : pairs_of(schedule, program.pipeline_rank)) {
    int32_t lo = 0;
    int64_t pieces = 0;
    const std::optional<std::vector<int32_t>> order = merged_block(program, a, b, &lo, &pieces);
    if (!order || !apply(program, lo, *order)) continue;
    ++out.pairs;
    out.pieces += pieces;
  }
  return out;
}

}  // namespace tandem::sim
