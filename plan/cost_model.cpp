// The planner's analytic model (cost_model.h).
#include "plan/cost_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/parallel_grid.h"
#include "models/accounting.h"
#include "program/program.h"
#include "schedules/analysis.h"
#include "schedules/registry.h"

namespace tandem::plan {

// Seconds per microbatch of one part of the model on one rank, exposed communication included.
struct PartCost {
  double fwd = 0, bwd = 0;              // compute kernels (GPU seconds)
  double launches = 0;                  // host seconds to launch them
  double tp = 0, ep = 0;                // exposed collectives, forward + backward
  double cp = 0;                        // ring messages, forward + backward (before hiding)
  double attention = 0;                 // attention kernels, forward + backward (hides CP steps)
  double cp_exposed(int64_t cp_size) const {
    return cp_size > 1 ? std::max(0.0, cp - attention * double(cp_size - 1) / double(cp_size)) : 0.0;
  }
  double total(int64_t cp_size) const { return fwd + bwd + tp + ep + cp_exposed(cp_size); }
};

struct CostModel::Probe {
  PartCost dense, moe, embedding, head;
};

namespace {

bool is_embedding_site(Site s) {
  return s == Site::Embedding || s == Site::EmbedDropout || s == Site::EmbedAr || s == Site::EmbedRs ||
         s == Site::EmbedGradAg;
}

// TP collectives that run beside a GEMM: the re-gather of a column-parallel input for its weight
// gradient (TE's bulk overlap), and with async TP the input-gradient reduction of a column-parallel layer.
bool tp_hidden(Site s, bool async) {
  if (s == Site::QkvWgradAg || s == Site::Fc1WgradAg || s == Site::SharedFc1WgradAg || s == Site::QWgradAg ||
      s == Site::MtpProjWgradAg)
    return true;
  if (!async) return false;
  return s == Site::QkvGradAr || s == Site::QkvGradRs || s == Site::Fc1GradAr || s == Site::Fc1GradRs ||
         s == Site::SharedFc1GradAr || s == Site::SharedFc1GradRs || s == Site::QGradAr || s == Site::QGradRs ||
         s == Site::MlaGradAr || s == Site::MlaGradRs || s == Site::MtpProjGradAr || s == Site::MtpProjGradRs;
}

Collective collective_of(OpKind k) {
  switch (k) {
    case OpKind::AllReduce: return Collective::AllReduce;
    case OpKind::ReduceScatter: return Collective::ReduceScatter;
    case OpKind::AllGather: return Collective::AllGather;
    default: return Collective::AllToAll;
  }
}

int64_t gcd64(int64_t a, int64_t b) { return b == 0 ? a : gcd64(b, a % b); }

// The probe's job: the candidate's shard of one layer of each kind, pipeline 1, one microbatch.
SearchSpace probe_space(const SearchSpace& space, const Candidate& c, int64_t& layers) {
  SearchSpace s = space;
  ModelConfig& m = s.base.model;
  const bool mixed = m.is_moe() && !m.moe_layer_pattern.empty() &&
                     std::count(m.moe_layer_pattern.begin(), m.moe_layer_pattern.end(), 0) > 0 &&
                     std::count(m.moe_layer_pattern.begin(), m.moe_layer_pattern.end(), 0) <
                         static_cast<std::ptrdiff_t>(m.moe_layer_pattern.size());
  layers = mixed ? 2 : 1;
  m.num_layers = layers;
  if (mixed) m.moe_layer_pattern = {0, 1};
  else if (!m.moe_layer_pattern.empty()) m.moe_layer_pattern.assign(1, m.moe_layer_pattern.front());
  ParallelConfig& p = s.base.parallel;
  p.decoder_first_pipeline_num_layers = p.decoder_last_pipeline_num_layers = 0;
  p.account_for_embedding_in_pipeline_split = p.account_for_loss_in_pipeline_split = false;
  const int64_t a = c.tp * c.cp, b = c.ep * c.etp;
  s.gpus = a / gcd64(a, b) * b;
  s.base.training.global_batch_size = c.mbs * (s.gpus / a);
  s.base.training.train_iters = 1;
  s.base.training.train_samples = 0;
  return s;
}

}  // namespace

CostModel::CostModel(const Job& reference) : compute_(sim::ComputeModel::for_job(reference)) {
  links_ = link_rates(reference.cluster, compute_.efficiency());
  nccl_sm_fraction_ = compute_.efficiency().nccl_sm_fraction;
}

CostModel::~CostModel() = default;

const CostModel::Probe& CostModel::probe(const SearchSpace& space, const Candidate& c) {
  Candidate pc = c;
  pc.pp = 1, pc.vp = 1, pc.dp = 1, pc.schedule = "1f1b", pc.distributed_optimizer = false;
  const std::string key = pc.key();
  auto it = probes_.find(key);
  if (it != probes_.end()) return *it->second;
  int64_t layers = 1;
  const SearchSpace s = probe_space(space, c, layers);
  pc.dp = s.gpus / (c.tp * c.cp);
  const Job job = job_for(s, pc);
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const RankProgram prog = lower_rank(job, grid, schedule_for_job(job), 0);
  auto result = std::make_unique<Probe>();
  Probe& pr = *result;
  const bool async = job.parallel.async_tensor_model_parallel_allreduce;
  const bool tp_overlap = job.parallel.tp_comm_overlap;
  for (const Instruction& x : prog.instructions) {
    if (x.phase == Phase::Setup) continue;
    const bool step_phase = x.phase == Phase::Optimizer || x.phase == Phase::ParamSync || x.phase == Phase::GradSync;
    if (step_phase) continue;   // data parallelism and the optimizer: per candidate (evaluate)
    PartCost* part = &pr.head;
    if (x.layer >= 0 && x.layer < layers) part = job.model.layer_is_moe(x.layer) ? &pr.moe : &pr.dense;
    else if (x.layer < 0 && is_embedding_site(x.site)) part = &pr.embedding;
    const bool forward = x.phase == Phase::Forward;
    if (is_compute(x.kind)) {
      const sim::OpTime t = compute_.op_time(x);
      (forward ? part->fwd : part->bwd) += t.kernels;
      part->launches += t.launches;
      if (x.kind == OpKind::Attention || x.kind == OpKind::AttentionGrad) part->attention += t.kernels;
    } else if (x.group == ParallelGroup::Cp && x.kind == OpKind::Send) {
      part->cp += p2p_seconds(links_, c.tp, x.bytes);
    } else if (is_collective(x.kind) && x.group == ParallelGroup::Tp) {
      if (tp_hidden(x.site, async)) continue;
      const double t = collective_seconds(links_, collective_of(x.kind), c.tp, 1, x.bytes);
      part->tp += tp_overlap ? t / double(c.tp) : t;
    } else if (is_collective(x.kind) && x.group == ParallelGroup::Ep) {
      part->ep += collective_seconds(links_, collective_of(x.kind), c.ep, c.etp, x.bytes);
    }
  }
  return *probes_.emplace(key, std::move(result)).first->second;
}

// Idle time of the schedule beyond its busy time, in units of one microbatch through one stage.
double CostModel::bubble_units(const Candidate& c, int64_t microbatches) {
  if (c.pp == 1) return 0.0;
  if (c.schedule == "1f1b" || c.schedule == "interleaved" || c.schedule == "gpipe")
    return double(c.pp - 1) / double(c.vp);
  const std::string key = c.schedule + "/" + std::to_string(c.pp) + "/" + std::to_string(microbatches) + "/" +
                          std::to_string(c.vp);
  auto it = bubbles_.find(key);
  if (it != bubbles_.end()) return it->second;
  ScheduleParams params;
  params.pp = static_cast<int>(c.pp);
  params.microbatches = static_cast<int>(microbatches);
  params.chunks = c.vp > 1 ? static_cast<int>(c.vp) : 0;
  const ScheduleAnalysis a = analyze_schedule(build_schedule(c.schedule, params));
  const double busy = *std::max_element(a.busy.begin(), a.busy.end());
  const double units = busy > 0 ? (a.makespan - busy) / (busy / double(microbatches)) : 0.0;
  return bubbles_.emplace(key, units).first->second;
}

Estimate CostModel::evaluate(const SearchSpace& space, const Candidate& c, const Job& job) {
  const Probe& pr = probe(space, c);
  Estimate e;
  const MemoryEstimate mem = memory_per_rank(job, memory_options_for(job));
  e.peak_memory_gib = mem.peak_gib();
  e.oom = job.cluster.gpu.hbm_bytes > 0 && mem.peak().total_bytes > job.cluster.gpu.hbm_bytes;

  const int64_t m = std::max<int64_t>(1, job.training.num_microbatches);
  const std::vector<RankLayers> layout = pipeline_layout(job);
  double u_max = 0, u_sum = 0, b_max = 0, f_max = 0, host_max = 0;
  size_t worst = 0;
  std::vector<double> per_stage(layout.size());
  for (size_t s = 0; s < layout.size(); ++s) {
    double u = 0, f = 0, b = 0, host = 0;
    for (const auto& chunk : layout[s].chunks)
      for (int64_t l : chunk) {
        const PartCost& part = job.model.layer_is_moe(l) ? pr.moe : pr.dense;
        u += part.total(c.cp), f += part.fwd, b += part.bwd, host += part.launches;
      }
    if (layout[s].has_embedding)
      u += pr.embedding.total(c.cp), f += pr.embedding.fwd, b += pr.embedding.bwd, host += pr.embedding.launches;
    if (layout[s].has_output_layer)
      u += pr.head.total(c.cp), f += pr.head.fwd, b += pr.head.bwd, host += pr.head.launches;
    host_max = std::max(host_max, host);
    per_stage[s] = u;
    u_sum += u;
    if (u > u_max) u_max = u, worst = s, f_max = f, b_max = b;
  }
  e.compute = double(m) * (f_max + b_max);
  const double comm_per_mb = u_max - f_max - b_max;
  // Split the bottleneck stage's exposed communication by kind for the breakdown.
  {
    double tp = 0, ep = 0, cp = 0;
    for (const auto& chunk : layout[worst].chunks)
      for (int64_t l : chunk) {
        const PartCost& part = job.model.layer_is_moe(l) ? pr.moe : pr.dense;
        tp += part.tp, ep += part.ep, cp += part.cp_exposed(c.cp);
      }
    const double sum = tp + ep + cp;
    const double scale = sum > 0 ? double(m) * comm_per_mb / sum : 0.0;
    e.tp_comm = tp * scale, e.ep_comm = ep * scale, e.cp_comm = cp * scale;
  }
  e.pipeline_bubble = bubble_units(c, m) * (c.pp > 1 ? (u_sum - u_max) / double(c.pp - 1) : 0.0);

  // Pipeline messages: [s / CP, b, h] activations (/ TP with sequence parallelism), 16-bit.
  if (c.pp > 1) {
    const double bytes = double(job.model.seq_length) / double(c.cp) * double(c.mbs) * double(job.model.hidden_size) * 2.0 /
                         (c.sequence_parallel ? double(c.tp) : 1.0);
    const double t = p2p_seconds(links_, c.tp * c.cp * c.dp, bytes);
    // The first microbatch crosses all PP x VP virtual stages forward and back before the steady
    // state; without --overlap-p2p-communication every send also blocks its stage.
    e.pp_comm = 2.0 * double(c.pp * c.vp - 1) * t + (job.parallel.overlap_p2p_communication ? 0.0 : 2.0 * double(m * c.vp) * t);
  }

  // Data parallelism and the optimizer, on the bottleneck stage.
  const StageMemory& st = mem.stages[worst];
  const BytesPerParameter bpp = bytes_per_parameter(job.training);
  const int64_t dense_group = c.dp * c.cp;
  const int64_t expert_group = job.world_size / (c.pp * c.ep * c.etp);
  const bool dist = c.distributed_optimizer;
  const Collective grad_kind = dist ? Collective::ReduceScatter : Collective::AllReduce;
  const double t_grad = collective_seconds(links_, grad_kind, dense_group, c.tp, st.dense_parameters * bpp.gradients) +
                        collective_seconds(links_, grad_kind, expert_group, c.ep * c.etp, st.expert_parameters * bpp.gradients);
  const double t_param = dist ? collective_seconds(links_, Collective::AllGather, dense_group, c.tp, st.dense_parameters * bpp.weights) +
                                    collective_seconds(links_, Collective::AllGather, expert_group, c.ep * c.etp,
                                                       st.expert_parameters * bpp.weights)
                              : 0.0;
  // Megatron's buckets (max(4e7, 1e6 DP) parameters, per model chunk). Reductions run in backward
  // order on one stream: with 1F1B they overlap the last microbatch's backward; interleaved, chunk c
  // finishes its last backward about c x (the last group's backward of one chunk) before the end,
  // so the overlap window is the last group of min(m, PP) microbatches' backward, less one chunk.
  const double params = st.dense_parameters + st.expert_parameters;
  const double pieces = std::max({1.0, double(c.vp), std::ceil(params / std::max(4e7, 1e6 * double(c.dp)))});
  const double group = c.vp > 1 ? double(std::min<int64_t>(m, c.pp)) * double(c.vp - 1) / double(c.vp) : 1.0;
  const bool across_nodes = c.tp * dense_group > job.cluster.gpus_per_node;
  const double slow = across_nodes && nccl_sm_fraction_ < 1 ? nccl_sm_fraction_ / (1 - nccl_sm_fraction_) : 0.0;
  auto exposed = [&](double t, double window, bool overlap) {
    if (!overlap) return t;
    const double shown = std::max(t / pieces, t - window);
    return shown + (t - shown) * slow;
  };
  e.dp_comm = exposed(t_grad, b_max * group, job.parallel.overlap_grad_reduce) +
              exposed(t_param, f_max * group, job.parallel.overlap_param_gather);
  // The optimizer step: a memory-bound pass over the local gradients and the (sharded) state,
  // timed as the simulator times the program's OptimizerStep.
  Instruction step;
  step.kind = OpKind::OptimizerStep;
  step.phase = Phase::Optimizer;
  step.bytes = optimizer_step_bytes(job, st.dense_parameters, dense_group) +
               optimizer_step_bytes(job, st.expert_parameters, expert_group);
  step.m = static_cast<int64_t>(dist ? st.dense_parameters / double(dense_group) + st.expert_parameters / double(expert_group)
                                     : params);
  e.optimizer = compute_.time(step);

  e.iteration_time_s = double(m) * u_max + e.pipeline_bubble + e.pp_comm + e.dp_comm + e.optimizer;
  // The host launches every kernel of the iteration, ahead of the GPU (the simulator's host clock):
  // a stage whose launches take longer than the GPU's work is host-bound.
  const double host = double(m) * host_max;
  if (host > e.iteration_time_s) e.compute += host - e.iteration_time_s, e.iteration_time_s = host;
  return e;
}

}  // namespace tandem::plan
