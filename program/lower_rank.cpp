// lower_rank and the context every pass of it starts from; the job's schedule (program.h);
// rank_parameters, which asks the same context (model_layout.h).
#include <algorithm>

#include "core/check.h"
#include "program/lower_context.h"
#include "program/program.h"
#include "schedules/registry.h"
#include "schedules/steady_pairs.h"
#include "schedules/validate.h"

namespace tandem {

namespace lower {

Context rank_context(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank, Emitter& em) {
  const DenseCoord dense = grid.dense_coord(rank);
  RankProgram& program = em.program();
  program.rank = rank;
  program.pipeline_rank = dense.pp;
  Context ctx{job, grid, schedule, rank, static_cast<int>(dense.pp), dense, dims_for_job(job, grid), em};
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
  return ctx;
}

RankParameters rank_parameters(const Job& job, const ParallelGrid& grid, const Schedule& schedule, int64_t rank) {
  RankProgram scratch;   // the parameter layout emits nothing
  Emitter em(scratch, dims_for_job(job, grid).dtype);
  const Context ctx = rank_context(job, grid, schedule, rank, em);
  RankParameters out;
  out.dims = ctx.dims;
  out.pipeline_rank = ctx.pipeline_rank;
  for (int c = 0; c < schedule.num_chunks(); ++c) {
    out.tensors.push_back(chunk_tensors(ctx, c));
    out.buckets.push_back(chunk_buckets(ctx, c));
    out.mirror_pipeline_rank.push_back(mirror_pipeline_rank(ctx, c));
  }
  return out;
}

}  // namespace lower

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

// --overlap-moe-expert-parallel-comm: the schedule with its steady-state F/B pairs fused.
Schedule paired_for_ep_overlap(const Schedule& s) {
  int pairs = 0;
  Schedule paired = pair_steady_state(s, &pairs);
  const ValidationReport report = validate_schedule(paired);
  if (!report.ok())
    throw UserError("--overlap-moe-expert-parallel-comm: pairing the steady-state forwards and backwards of schedule " +
                    s.name + " does not give a valid schedule: " + report.summary(3));
  return paired;
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
  if (par.overlap_moe_expert_parallel_comm) s = paired_for_ep_overlap(s);
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
  lower::Emitter em(program, lower::dims_for_job(job, grid).dtype);
  lower::Context ctx = lower::rank_context(job, grid, schedule, rank, em);
  lower::allocate_persistent(ctx);
  lower::lower_actions(ctx);
  return program;
}

}  // namespace tandem
