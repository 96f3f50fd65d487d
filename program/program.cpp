// Program: names, sums, symmetry classes and traces (program.h).
#include "program/program.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem {

bool is_compute(OpKind kind) { return kind <= OpKind::OptimizerStep; }
bool is_communication(OpKind kind) { return kind >= OpKind::Send && kind <= OpKind::AllToAllV; }
bool is_collective(OpKind kind) { return kind >= OpKind::AllReduce && kind <= OpKind::AllToAllV; }
bool is_memory(OpKind kind) { return kind == OpKind::Alloc || kind == OpKind::Free; }

const char* to_string(OpKind kind) {
  switch (kind) {
    case OpKind::Embedding: return "Embedding";
    case OpKind::EmbeddingGrad: return "EmbeddingGrad";
    case OpKind::Norm: return "Norm";
    case OpKind::NormGrad: return "NormGrad";
    case OpKind::Gemm: return "Gemm";
    case OpKind::GemmGradInput: return "GemmGradInput";
    case OpKind::GemmGradWeight: return "GemmGradWeight";
    case OpKind::Attention: return "Attention";
    case OpKind::AttentionGrad: return "AttentionGrad";
    case OpKind::Rope: return "Rope";
    case OpKind::RopeGrad: return "RopeGrad";
    case OpKind::Activation: return "Activation";
    case OpKind::ActivationGrad: return "ActivationGrad";
    case OpKind::Elementwise: return "Elementwise";
    case OpKind::CrossEntropy: return "CrossEntropy";
    case OpKind::CrossEntropyGrad: return "CrossEntropyGrad";
    case OpKind::Router: return "Router";
    case OpKind::RouterGrad: return "RouterGrad";
    case OpKind::Permute: return "Permute";
    case OpKind::PermuteGrad: return "PermuteGrad";
    case OpKind::Unpermute: return "Unpermute";
    case OpKind::UnpermuteGrad: return "UnpermuteGrad";
    case OpKind::OptimizerStep: return "OptimizerStep";
    case OpKind::Send: return "Send";
    case OpKind::Recv: return "Recv";
    case OpKind::AllReduce: return "AllReduce";
    case OpKind::ReduceScatter: return "ReduceScatter";
    case OpKind::AllGather: return "AllGather";
    case OpKind::AllToAllV: return "AllToAllV";
    case OpKind::Alloc: return "Alloc";
    case OpKind::Free: return "Free";
  }
  return "?";
}

const char* to_string(StreamKind kind) {
  switch (kind) {
    case StreamKind::Compute: return "compute";
    case StreamKind::TpComm: return "tp";
    case StreamKind::CpComm: return "cp";
    case StreamKind::EpComm: return "ep";
    case StreamKind::PpSend: return "pp-send";
    case StreamKind::PpRecv: return "pp-recv";
    case StreamKind::DpComm: return "dp";
  }
  return "?";
}

const char* to_string(Phase phase) {
  switch (phase) {
    case Phase::Setup: return "setup";
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::WeightGrad: return "weight-grad";
    case Phase::GradSync: return "grad-sync";
    case Phase::Optimizer: return "optimizer";
    case Phase::ParamSync: return "param-sync";
  }
  return "?";
}

const char* to_string(BufferRole role) {
  switch (role) {
    case BufferRole::Parameter: return "parameter";
    case BufferRole::Gradient: return "gradient";
    case BufferRole::OptimizerState: return "optimizer-state";
    case BufferRole::Activation: return "activation";
    case BufferRole::Workspace: return "workspace";
    case BufferRole::Message: return "message";
  }
  return "?";
}

const char* to_string(BufferPart part) {
  switch (part) {
    case BufferPart::Layer: return "layer";
    case BufferPart::Input: return "input";
    case BufferPart::Replay: return "replay";
    case BufferPart::Embedding: return "embedding";
    case BufferPart::Head: return "head";
  }
  return "?";
}

std::string Buffer::name() const {
  std::string out;
  if (role == BufferRole::Activation) {
    out = std::string("act/") + to_string(part);
    if (layer >= 0) out += "/L" + std::to_string(layer);
    out += "/mb" + std::to_string(microbatch);
  } else {
    const char* prefix = role == BufferRole::Parameter ? "param/" : role == BufferRole::Gradient ? "grad/"
                         : role == BufferRole::OptimizerState ? "optim/" : "";
    out = prefix + (layer >= 0 ? "L" + std::to_string(layer) : std::string(to_string(part)));
    if (experts) out += "/experts";
  }
  if (chunk >= 0) out += "/c" + std::to_string(chunk);
  return out;
}

bool Instruction::operator==(const Instruction& o) const {
  return kind == o.kind && stream == o.stream && phase == o.phase && m == o.m && n == o.n && k == o.k &&
         batch == o.batch && dtype == o.dtype && flops == o.flops && bytes == o.bytes && group == o.group &&
         peer == o.peer && tag == o.tag && buffer == o.buffer && deps == o.deps && layer == o.layer &&
         microbatch == o.microbatch && chunk == o.chunk && ring_step == o.ring_step && bucket == o.bucket &&
         recompute == o.recompute && routed == o.routed && site == o.site &&
         (cost == o.cost || (cost && o.cost && *cost == *o.cost));
}

bool CostNote::operator==(const CostNote& o) const {
  return piece == o.piece && share == o.share && whole_m == o.whole_m && whole_flops == o.whole_flops &&
         whole_bytes == o.whole_bytes && continues_exchange == o.continues_exchange && expert_rows == o.expert_rows &&
         (peer_bytes == o.peer_bytes || (peer_bytes && o.peer_bytes && *peer_bytes == *o.peer_bytes));
}

double RankProgram::total_flops() const {
  double sum = 0;
  for (const Instruction& ins : instructions)
    if (is_compute(ins.kind)) sum += ins.flops;
  return sum;
}

double RankProgram::peak_bytes() const {
  double live = 0, peak = 0;
  for (const Instruction& ins : instructions) {
    if (ins.kind == OpKind::Alloc) live += buffers[static_cast<size_t>(ins.buffer)].bytes;
    else if (ins.kind == OpKind::Free) live -= buffers[static_cast<size_t>(ins.buffer)].bytes;
    peak = std::max(peak, live);
  }
  return peak;
}

double RankProgram::persistent_bytes() const {
  double sum = 0;
  for (const Buffer& b : buffers)
    if (is_persistent(b.role)) sum += b.bytes;
  return sum;
}

int64_t symmetry_class(const Job& job, const ParallelGrid& grid, int64_t rank) {
  (void)job;
  return grid.dense_coord(rank).pp;
}

std::vector<int64_t> class_representatives(const Job& job, const ParallelGrid& grid) {
  (void)job;
  std::vector<int64_t> out;
  for (int64_t pp = 0; pp < grid.pp_size(); ++pp) out.push_back(grid.dense_rank(DenseCoord{0, 0, 0, pp}));
  return out;
}

bool equal_up_to_peers(const RankProgram& a, const RankProgram& b) {
  if (a.instructions.size() != b.instructions.size() || a.buffers != b.buffers) return false;
  for (size_t i = 0; i < a.instructions.size(); ++i) {
    Instruction x = a.instructions[i];
    x.peer = b.instructions[i].peer;
    if (!(x == b.instructions[i])) return false;
  }
  return true;
}

namespace {

void append_provenance(std::string& out, const Instruction& ins) {
  if (ins.layer >= 0) out += " L" + std::to_string(ins.layer);
  if (ins.microbatch >= 0) out += " mb" + std::to_string(ins.microbatch);
  if (ins.chunk >= 0) out += " c" + std::to_string(ins.chunk);
  // One text for both: " s<n>" (a CP ring step or a DP bucket; an instruction has at most one).
  if (ins.ring_step >= 0) out += " s" + std::to_string(ins.ring_step);
  if (ins.bucket >= 0) out += " s" + std::to_string(ins.bucket);
  if (ins.recompute) out += " recompute";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

std::string op_trace_line(const Instruction& ins) {
  std::string out = std::string(to_string(ins.kind)) + " " + to_string(ins.site);
  append_provenance(out, ins);
  if (is_compute(ins.kind)) {
    out += " m=" + std::to_string(ins.m) + " n=" + std::to_string(ins.n) + " k=" + std::to_string(ins.k) +
           " batch=" + std::to_string(ins.batch);
  } else if (is_communication(ins.kind)) {
    out += " group=" + to_string(ins.group);
    if (ins.peer >= 0) out += " peer=" + std::to_string(ins.peer) + " tag=" + std::to_string(ins.tag);
  } else {
    out += " buffer=" + std::to_string(ins.buffer);
  }
  return out + " bytes=" + number(ins.bytes);
}

nlohmann::json program_to_json(const RankProgram& program) {
  nlohmann::json buffers = nlohmann::json::array();
  for (const Buffer& b : program.buffers)
    buffers.push_back({{"role", to_string(b.role)}, {"name", b.name()}, {"bytes", b.bytes}});
  nlohmann::json list = nlohmann::json::array();
  for (const Instruction& ins : program.instructions) {
    nlohmann::json j = {{"kind", to_string(ins.kind)}, {"label", to_string(ins.site)}, {"stream", to_string(ins.stream)},
                        {"phase", to_string(ins.phase)}, {"bytes", ins.bytes}};
    if (is_compute(ins.kind))
      j.update({{"m", ins.m}, {"n", ins.n}, {"k", ins.k}, {"batch", ins.batch}, {"flops", ins.flops},
                {"dtype", to_string(ins.dtype)}});
    if (is_communication(ins.kind)) j["group"] = to_string(ins.group);
    if (ins.peer >= 0) j.update({{"peer", ins.peer}, {"tag", ins.tag}});
    if (ins.buffer >= 0) j["buffer"] = ins.buffer;
    if (!ins.deps.empty()) j["deps"] = ins.deps;
    if (ins.layer >= 0) j["layer"] = ins.layer;
    if (ins.microbatch >= 0) j["microbatch"] = ins.microbatch;
    if (ins.chunk >= 0) j["chunk"] = ins.chunk;
    if (ins.ring_step >= 0) j["ring_step"] = ins.ring_step;
    if (ins.bucket >= 0) j["bucket"] = ins.bucket;
    if (ins.recompute) j["recompute"] = true;
    if (ins.routed) j["routed"] = true;
    list.push_back(std::move(j));
  }
  return {{"rank", program.rank}, {"pipeline_rank", program.pipeline_rank},
          {"total_flops", program.total_flops()}, {"peak_bytes", program.peak_bytes()}, {"buffers", buffers},
          {"instructions", list}};
}

}  // namespace tandem
