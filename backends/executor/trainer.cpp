// The training loop (trainer.h).
#include "backends/executor/trainer.h"

#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "backends/executor/checkpoint.h"
#include "backends/executor/data_source.h"
#include "backends/executor/indexed_dataset.h"
#include "backends/executor/lr_schedule.h"
#include "backends/executor/model_runner.h"
#include "backends/executor/param_store.h"
#include "backends/executor/program_executor.h"
#include "core/check.h"
#include "program/program.h"

namespace tandem::exec {
namespace {

RunnerSettings settings_for(const Job& job, const ParallelGrid& grid) {
  const auto& m = job.model;
  const auto& t = job.training;
  RunnerSettings s;
  s.norm = m.normalization == Normalization::LayerNorm ? NormKind::LayerNorm : NormKind::RMSNorm;
  s.norm_eps = static_cast<float>(m.norm_epsilon);
  // Megatron's fused bias-GeLU uses the tanh approximation; without a bias it is F.gelu (erf).
  s.activation = m.swiglu ? ActivationKind::SwiGlu : (m.add_bias_linear ? ActivationKind::GeluTanh : ActivationKind::GeluErf);
  s.rope_base = m.rotary_base;
  const double gbs = double(std::max<int64_t>(1, t.num_microbatches) * std::max<int64_t>(1, t.micro_batch_size) *
                            grid.dp_size());
  s.loss_grad = 1.0 / (gbs * double(m.seq_length));
  s.aux_grad = double(std::max<int64_t>(1, t.micro_batch_size)) / gbs;
  s.beta1 = t.adam_beta1;
  s.beta2 = t.adam_beta2;
  s.adam_eps = t.adam_eps;
  s.weight_decay = t.weight_decay;
  s.clip_grad = t.clip_grad;
  s.router.topk = m.moe_router_topk;
  s.router.capacity_factor = m.moe_expert_capacity_factor;
  s.aux_loss_coeff = m.moe_aux_loss_coeff;
  return s;
}

std::vector<std::string> run_notes(const Job& job) {
  std::vector<std::string> notes;
  const auto& t = job.training;
  if (t.hidden_dropout > 0 || t.attention_dropout > 0) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "dropout executed as the identity (requested hidden %.3g, attention %.3g)",
                  t.hidden_dropout, t.attention_dropout);
    notes.emplace_back(buf);
  }
  if (t.params_dtype != DType::FP32)
    notes.push_back("math in fp32 (the job asks for " + to_string(t.params_dtype) + "; the program keeps its byte counts)");
  return notes;
}

std::string iteration_line(int64_t it, int64_t total, double ms, double lr, int64_t gbs, double loss, double norm,
                           double tokens_per_s) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                " iteration %8lld/%8lld | elapsed time per iteration (ms): %.1f | learning rate: %.6E | global batch "
                "size: %5lld | lm loss: %.6E | grad norm: %.4f | tokens/s: %.0f",
                static_cast<long long>(it), static_cast<long long>(total), ms, lr, static_cast<long long>(gbs), loss,
                norm, tokens_per_s);
  return buf;
}

nlohmann::json dump_config(const Job& job, const RunnerSettings& s) {
  const auto& m = job.model;
  const lower::Dims d = lower::dims_for_job(job, ParallelGrid::from_job(job));
  return {{"num_layers", d.layers}, {"hidden_size", d.h}, {"num_attention_heads", d.a}, {"num_query_groups", d.g},
          {"head_dim", d.d}, {"ffn_hidden_size", d.f}, {"seq_length", d.s}, {"padded_vocab_size", d.vocab},
          {"normalization", to_string(m.normalization)}, {"norm_epsilon", m.norm_epsilon}, {"rope", d.rope},
          {"rotary_base", m.rotary_base}, {"swiglu", d.gated},
          {"gelu_tanh", s.activation == ActivationKind::GeluTanh}, {"bias", d.bias}, {"qkv_bias", d.qkv_bias},
          {"tied_embeddings", d.tied}, {"learned_positions", d.positions > 0},
          {"micro_batch_size", d.b}, {"num_microbatches", job.training.num_microbatches}};
}

nlohmann::json dump_params(Device& device, ParamStore& params, bool grads) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& p : params.params()) out[p->name] = {{"shape", p->shape}, {"value", device.to_host(grads ? p->grad : p->value)}};
  return out;
}

}  // namespace

TrainReport train(const Job& job, Device& device, Communicator& comm, const TrainOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const Schedule schedule = schedule_for_job(job);
  const int64_t rank = comm.rank();
  const RankProgram program = lower_rank(job, grid, schedule, rank);
  ParamStore params(device, job, grid, schedule, rank);
  params.initialize(job.training.seed, job.training.init_method_std);
  ModelRunner runner(device, comm, params, job, grid, schedule, rank, settings_for(job, grid));
  ProgramExecutor executor(device);
  if (!job.training.mock_data && job.training.data_path.empty())
    throw UserError("no training data: pass --mock-data or --data-path PREFIX");
  std::unique_ptr<DataSource> data =
      job.training.data_path.empty()
          ? make_mock_data(job.training.seed, job.model.seq_length, job.model.vocab_size)
          : open_indexed_dataset(job.training.data_path, job.model.seq_length, job.model.vocab_size,
                                 job.training.split, job.training.seed);
  const int64_t iterations = options.iterations > 0 ? options.iterations : job.training.train_iters;
  if (iterations <= 0) throw_field_error("train_iters", iterations, "must be positive to train");
  const LrSchedule lr(job.training, iterations);
  TrainReport report;
  report.notes = run_notes(job);
  const int64_t gbs = std::max<int64_t>(1, job.training.num_microbatches) *
                      std::max<int64_t>(1, job.training.micro_batch_size) * grid.dp_size();
  report.tokens_per_iteration = gbs * job.model.seq_length;
  if (options.log && rank == 0)
    for (const std::string& n : report.notes) options.log("note: " + n);
  int64_t first = 1;
  const auto& tr = job.training;
  if (!tr.load.empty()) {
    const int64_t saved = latest_checkpoint(tr.load);
    if (saved > 0) {
      load_checkpoint(tr.load, saved, params, device, comm);
      first = saved + 1;
      if (options.log && rank == 0) options.log("loaded checkpoint " + tr.load + " at iteration " + std::to_string(saved));
    } else if (options.log && rank == 0) {
      options.log("note: no checkpoint under --load " + tr.load + "; training from the initial weights");
    }
  }
  report.first_iteration = first;
  nlohmann::json dump;
  if (options.dump_first_step) {
    if (comm.world_size() != 1) throw UserError("the first-step dump is for one rank (world size " + std::to_string(comm.world_size()) + ")");
    dump["config"] = dump_config(job, settings_for(job, grid));
    dump["weights"] = dump_params(device, params, false);
    for (const MicrobatchData& mb : rank_batch(*data, job, grid, rank, 0)) {
      dump["tokens"].push_back(mb.tokens);
      dump["labels"].push_back(mb.labels);
    }
  }
  double timed = 0;
  for (int64_t it = first; it <= iterations; ++it) {
    const auto t0 = Clock::now();
    const double rate = lr.lr_at(it - 1);
    runner.begin_iteration(it, rate, rank_batch(*data, job, grid, rank, it - 1));
    std::vector<std::string> trace;
    const ExecutionStats stats = executor.run(program, runner, options.trace_ops && it == 1 ? &trace : nullptr);
    const IterationTotals totals = runner.end_iteration();
    const double sums_in[2] = {totals.loss_sum, totals.tokens};
    const std::vector<double> sums = comm.world_sum(sums_in);
    TANDEM_CHECK_MSG(sums[1] > 0, "no loss was computed in iteration " << it);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    report.losses.push_back(sums[0] / sums[1]);
    report.grad_norms.push_back(totals.grad_norm);
    report.lrs.push_back(rate);
    report.iteration_times_s.push_back(seconds);
    report.program_peak_bytes = stats.peak_bytes;
    if (it > first) timed += seconds;
    if (options.dump_first_step && it == 1) {
      dump["loss"] = report.losses.back();
      dump["grads"] = dump_params(device, params, true);
      report.first_step = dump.dump();
    }
    if (options.trace_ops && it == 1) {
      std::string text = "# rank " + std::to_string(rank) + "\n";
      for (const std::string& line : trace) text += line + "\n";
      for (const std::string& part : comm.gather_to_root(text)) report.op_trace += part;
    }
    if (!tr.save.empty() && ((tr.save_interval > 0 && it % tr.save_interval == 0) || it == iterations)) {
      save_checkpoint(tr.save, it, params, device, comm);
      if (options.log && rank == 0) options.log("saved checkpoint " + tr.save + " at iteration " + std::to_string(it));
    }
    const int64_t interval = std::max<int64_t>(1, job.training.log_interval);
    if (options.log && rank == 0 && (it % interval == 0 || it == iterations))
      options.log(iteration_line(it, iterations, seconds * 1e3, rate, gbs, report.losses.back(), totals.grad_norm,
                                 double(report.tokens_per_iteration) / seconds));
  }
  report.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  const int64_t ran = static_cast<int64_t>(report.losses.size());
  if (ran == 0) return report;
  const double steady = ran > 1 ? timed : report.iteration_times_s.front();
  report.tokens_per_s = double(report.tokens_per_iteration) * double(ran > 1 ? ran - 1 : 1) / steady;
  return report;
}

}  // namespace tandem::exec
