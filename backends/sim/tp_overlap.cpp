#include "backends/sim/tp_overlap.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

namespace tandem::sim {

namespace {

bool is_tp_collective(const Instruction& x, OpKind kind) {
  return x.kind == kind && x.group == ParallelGroup::Tp && x.stream == StreamKind::TpComm;
}

// Transformer Engine's linear layers inside decoder layers; the output layer (layer -1) is
// Megatron's own column-parallel linear without userbuffers.
bool is_split_gemm(const Instruction& x) {
  return (x.kind == OpKind::Gemm || x.kind == OpKind::GemmGradInput) && x.layer >= 0;
}

// Which instructions form pipelined pairs (indices of the lowered program; -1: none).
struct Pairs {
  std::vector<int32_t> gemm_of_gather;    // [all-gather] the GEMM that consumes it
  std::vector<int32_t> gather_of_gemm;    // [GEMM] its all-gather
  std::vector<int32_t> scatter_of_gemm;   // [GEMM] the reduce-scatter of its output
  std::vector<int32_t> gemm_of_scatter;   // [reduce-scatter] its GEMM
};

Pairs find_pairs(const RankProgram& program, int64_t chunks) {
  const auto& ins = program.instructions;
  const size_t n = ins.size();
  Pairs p{std::vector<int32_t>(n, -1), std::vector<int32_t>(n, -1), std::vector<int32_t>(n, -1),
          std::vector<int32_t>(n, -1)};
  // Candidate GEMM consumers of each TP all-gather; -2 when there is more than one.
  std::vector<int32_t> consumer(n, -1);
  for (size_t j = 0; j < n; ++j) {
    if (!is_split_gemm(ins[j]) || ins[j].m < chunks) continue;
    for (int32_t d : ins[j].deps) {
      if (!is_tp_collective(ins[static_cast<size_t>(d)], OpKind::AllGather)) continue;
      int32_t& c = consumer[static_cast<size_t>(d)];
      c = c == -1 ? static_cast<int32_t>(j) : -2;
    }
  }
  for (size_t a = 0; a < n; ++a) {
    const int32_t g = consumer[a];
    if (g < 0 || p.gather_of_gemm[static_cast<size_t>(g)] >= 0) continue;
    p.gemm_of_gather[a] = g;
    p.gather_of_gemm[static_cast<size_t>(g)] = static_cast<int32_t>(a);
  }
  for (size_t r = 0; r < n; ++r) {
    if (!is_tp_collective(ins[r], OpKind::ReduceScatter)) continue;
    for (int32_t g : ins[r].deps) {
      const auto gu = static_cast<size_t>(g);
      if (ins[gu].kind != OpKind::Gemm || ins[gu].layer < 0 || ins[gu].m < chunks || p.gather_of_gemm[gu] >= 0 ||
          p.scatter_of_gemm[gu] >= 0)
        continue;
      p.scatter_of_gemm[gu] = static_cast<int32_t>(r);
      p.gemm_of_scatter[r] = g;
      break;
    }
  }
  return p;
}

// Chunk c of `chunks` of a GEMM split along m (its rows: tokens). Its note: it costs its share of
// the unsplit GEMM (TE runs the chunks on several streams), not the time of a small GEMM.
Instruction gemm_chunk(const Instruction& g, int64_t chunks, int64_t c) {
  Instruction x = g;
  x.m = g.m / chunks + (c < g.m % chunks ? 1 : 0);
  const double m = double(g.m), mc = double(x.m), kn = double(g.k) * double(g.n), side = double(g.k) + double(g.n);
  x.flops = g.flops * mc / m;
  x.bytes = g.bytes * (mc * side + kn) / (m * side + kn);  // the weight is read by every chunk
  x.deps.clear();
  auto note = std::make_shared<CostNote>();
  note->piece = static_cast<int16_t>(c);
  note->share = mc / m;
  note->whole_m = g.m;
  note->whole_flops = g.flops;
  note->whole_bytes = g.bytes;
  x.cost = std::move(note);
  return x;
}

// Piece c of a pipelined TP exchange: pieces after the first pay no latency of their own.
std::shared_ptr<const CostNote> exchange_piece(int64_t c) {
  auto note = std::make_shared<CostNote>();
  note->piece = static_cast<int16_t>(c);
  note->continues_exchange = c > 0;
  return note;
}

class Rewriter {
 public:
  Rewriter(const RankProgram& program, const Pairs& pairs, int64_t chunks)
      : in_(program.instructions), pairs_(pairs), chunks_(chunks), last_(in_.size(), -1), first_(in_.size(), -1) {}


  std::vector<Instruction> run() {
    for (size_t i = 0; i < in_.size(); ++i) {
      const auto ii = static_cast<int32_t>(i);
      first_[i] = static_cast<int32_t>(out_.size());
      if (pairs_.gemm_of_gather[i] >= 0) emit_gather(in_[i]);
      else if (pairs_.gather_of_gemm[i] >= 0) emit_gathered_gemm(ii);
      else if (pairs_.scatter_of_gemm[i] >= 0) emit_gemm_chunks(in_[i], remap(in_[i].deps, -1));
      else if (pairs_.gemm_of_scatter[i] >= 0) emit_scatter(ii);
      else emit(in_[i], remap(in_[i].deps, -1));
      last_[i] = static_cast<int32_t>(out_.size()) - 1;
    }
    return std::move(out_);
  }

 private:
  // Old deps -> new indices (the last piece of a split instruction), without `skip`.
  std::vector<int32_t> remap(const std::vector<int32_t>& deps, int32_t skip) const {
    std::vector<int32_t> out;
    for (int32_t d : deps)
      if (d != skip) out.push_back(last_[static_cast<size_t>(d)]);
    return out;
  }

  void emit(Instruction x, std::vector<int32_t> deps) {
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    x.deps = std::move(deps);
    out_.push_back(std::move(x));
  }

  // The ring exchange: chunks - 1 steps, each passing one shard (bytes / chunks) to the next rank;
  // as all-gathers of bytes / (chunks - 1) they move the same (chunks - 1) / chunks x bytes.
  void emit_gather(const Instruction& a) {
    for (int64_t c = 0; c + 1 < chunks_; ++c) {
      Instruction x = a;
      x.bytes = a.bytes / double(chunks_ - 1);
      x.cost = exchange_piece(c);
      emit(std::move(x), c == 0 ? remap(a.deps, -1) : std::vector<int32_t>{});
    }
  }

  // Chunk 0 on the local rows (the all-gather's input), chunk c after exchange step c - 1.
  void emit_gathered_gemm(int32_t g) {
    const Instruction& gemm = in_[static_cast<size_t>(g)];
    const int32_t a = pairs_.gather_of_gemm[static_cast<size_t>(g)];
    std::vector<int32_t> deps0 = remap(gemm.deps, a);
    for (int32_t d : remap(in_[static_cast<size_t>(a)].deps, -1)) deps0.push_back(d);
    for (int64_t c = 0; c < chunks_; ++c)
      emit_chunk(gemm, c,
                 c == 0 ? deps0 : std::vector<int32_t>{first_[static_cast<size_t>(a)] + static_cast<int32_t>(c - 1)});
  }

  void emit_gemm_chunks(const Instruction& gemm, const std::vector<int32_t>& deps) {
    for (int64_t c = 0; c < chunks_; ++c) emit_chunk(gemm, c, c == 0 ? deps : std::vector<int32_t>{});
  }

  void emit_chunk(const Instruction& gemm, int64_t c, std::vector<int32_t> deps) {
    emit(gemm_chunk(gemm, chunks_, c), std::move(deps));
  }

  // Reduce-scatter chunk c after GEMM chunk c: t reduce-scatters of bytes / t move the same bytes.
  void emit_scatter(int32_t r) {
    const Instruction& rs = in_[static_cast<size_t>(r)];
    const int32_t g = pairs_.gemm_of_scatter[static_cast<size_t>(r)];
    const std::vector<int32_t> others = remap(rs.deps, g);
    for (int64_t c = 0; c < chunks_; ++c) {
      Instruction x = rs;
      x.bytes = rs.bytes / double(chunks_);
      x.cost = exchange_piece(c);
      std::vector<int32_t> deps = c == 0 ? others : std::vector<int32_t>{};
      deps.push_back(first_[static_cast<size_t>(g)] + static_cast<int32_t>(c));
      emit(std::move(x), std::move(deps));
    }
  }

  const std::vector<Instruction>& in_;
  const Pairs& pairs_;
  const int64_t chunks_;
  std::vector<int32_t> last_;   // [old] new index of its last piece
  std::vector<int32_t> first_;  // [old] new index of its first piece
  std::vector<Instruction> out_;
};

}  // namespace

TpOverlapResult pipeline_tp_overlap(RankProgram& program, int64_t chunks) {
  TpOverlapResult result;
  if (chunks < 2) return result;
  const Pairs pairs = find_pairs(program, chunks);
  for (int32_t g : pairs.gemm_of_gather) result.gathers += g >= 0;
  for (int32_t g : pairs.gemm_of_scatter) result.scatters += g >= 0;
  if (result.gathers + result.scatters == 0) return result;
  Rewriter rewriter(program, pairs, chunks);
  program.instructions = rewriter.run();
  return result;
}

}  // namespace tandem::sim
