// Program: names, sums, the job's schedule, lower_rank, symmetry classes and traces (program.h).
#include "program/program.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "program/lower_context.h"
#include "schedules/registry.h"

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

bool Instruction::operator==(const Instruction& o) const {
  return kind == o.kind && stream == o.stream && phase == o.phase && m == o.m && n == o.n && k == o.k &&
         batch == o.batch && dtype == o.dtype && flops == o.flops && bytes == o.bytes && group == o.group &&
         peer == o.peer && tag == o.tag && buffer == o.buffer && deps == o.deps && layer == o.layer &&
         microbatch == o.microbatch && chunk == o.chunk && step == o.step && recompute == o.recompute &&
         routed == o.routed && std::string_view(label) == std::string_view(o.label);
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

namespace {

// Interleaved stage numbering (stage c*p + r on rank r, chunk c): Megatron's layer split applies.
bool interleaved_numbering(const Schedule& s) {
  for (int r = 0; r < s.num_ranks(); ++r)
    for (int c = 0; c < s.num_chunks(); ++c)
      if (s.stage_of(r, c) != c * s.num_ranks() + r) return false;
  return true;
}

int to_int(int64_t v, const char* field) {
  if (v < 0 || v > (int64_t{1} << 30)) throw_field_error(field, v, "out of range for a schedule");
  return static_cast<int>(v);
}

}  // namespace

Schedule schedule_for_job(const Job& job) {
  const auto& par = job.parallel;
  const int64_t v = std::max<int64_t>(1, par.virtual_pipeline_model_parallel_size);
  const std::string name = !par.pipeline_schedule.empty() ? par.pipeline_schedule : (v > 1 ? "interleaved" : "1f1b");
  ScheduleParams params;
  params.pp = to_int(std::max<int64_t>(1, par.pipeline_model_parallel_size), "pipeline_model_parallel_size");
  params.microbatches = to_int(std::max<int64_t>(1, job.training.num_microbatches), "num_microbatches");
  params.chunks = v > 1 ? to_int(v, "virtual_pipeline_model_parallel_size") : 0;
  Schedule s = build_schedule(name, params);
  const int layers = to_int(job.model.num_layers, "num_layers");
  const int first = params.pp > 1 ? to_int(par.decoder_first_pipeline_num_layers, "decoder_first_pipeline_num_layers") : 0;
  const int last = params.pp > 1 ? to_int(par.decoder_last_pipeline_num_layers, "decoder_last_pipeline_num_layers") : 0;
  if (par.account_for_embedding_in_pipeline_split || par.account_for_loss_in_pipeline_split)
    assign_layers(s, accounted_split_layers(layers, s.num_stages(), par.account_for_embedding_in_pipeline_split,
                                            par.account_for_loss_in_pipeline_split));
  else if (s.num_chunks() > 1 && interleaved_numbering(s))
    assign_layers(s, megatron_split_layers(layers, s.num_ranks(), s.num_chunks(), first, last));
  else
    assign_layers(s, split_layers(layers, s.num_stages(), first, last));
  return s;
}

RankProgram lower_rank(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank) {
  TANDEM_CHECK_MSG(schedule.num_ranks() == grid.pp_size(),
                   "schedule has " << schedule.num_ranks() << " ranks, grid PP = " << grid.pp_size());
  TANDEM_CHECK_MSG(static_cast<int>(schedule.stage_layers.size()) == schedule.num_stages(),
                   "schedule without layer assignment (assign_layers)");
  RankProgram program;
  program.rank = rank;
  const DenseCoord dense = grid.dense_coord(rank);
  program.pipeline_rank = dense.pp;
  const lower::Dims dims = lower::dims_for_job(job, grid);
  lower::Emitter em(program, dims.dtype);
  lower::Context ctx{job, grid, schedule, rank, static_cast<int>(dense.pp), dense, dims, em};
  ctx.tp = grid.tp_size();
  ctx.cp = grid.cp_size();
  ctx.ep = grid.ep_size();
  ctx.etp = grid.expert_tp_size();
  ctx.dp_cp = grid.dp_size() * grid.cp_size();
  ctx.edp = grid.expert_dp_size();
  ctx.tp_ep = ctx.etp * ctx.ep;
  if (ctx.cp > 1) {
    const GroupMembership m = grid.group_of(rank, ParallelGroup::Cp);
    const size_t i = static_cast<size_t>(m.index_in_group), size = m.ranks.size();
    ctx.cp_next = m.ranks[(i + 1) % size];
    ctx.cp_prev = m.ranks[(i + size - 1) % size];
  }
  lower::allocate_persistent(ctx);
  lower::lower_actions(ctx);
  return program;
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
  if (ins.step >= 0) out += " s" + std::to_string(ins.step);
  if (ins.recompute) out += " recompute";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

std::string op_trace_line(const Instruction& ins) {
  std::string out = std::string(to_string(ins.kind)) + " " + ins.label;
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
    buffers.push_back({{"role", to_string(b.role)}, {"name", b.name}, {"bytes", b.bytes}});
  nlohmann::json list = nlohmann::json::array();
  for (const Instruction& ins : program.instructions) {
    nlohmann::json j = {{"kind", to_string(ins.kind)}, {"label", ins.label}, {"stream", to_string(ins.stream)},
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
    if (ins.step >= 0) j["step"] = ins.step;
    if (ins.recompute) j["recompute"] = true;
    if (ins.routed) j["routed"] = true;
    list.push_back(std::move(j));
  }
  return {{"rank", program.rank}, {"pipeline_rank", program.pipeline_rank},
          {"total_flops", program.total_flops()}, {"peak_bytes", program.peak_bytes()}, {"buffers", buffers},
          {"instructions", list}};
}

}  // namespace tandem
