// The training loop (trainer.h).
#include "backends/executor/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>

#include <nlohmann/json.hpp>

#include "backends/executor/blended_dataset.h"
#include "backends/executor/checkpoint.h"
#include "backends/executor/data_source.h"
#include "backends/executor/lr_schedule.h"
#include "backends/executor/model_runner.h"
#include "backends/executor/param_store.h"
#include "backends/executor/program_executor.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "models/accounting.h"
#include "program/program.h"

namespace tandem::exec {
namespace {

// Routing counts of one rank: layer -> microbatch -> copies per expert (before capacity).
using RoutingCounts = std::map<int32_t, std::map<int32_t, std::vector<int64_t>>>;

// The trace (simulator's --moe-routing-trace format) from every rank's counts, rank order: each
// layer from the lowest rank that holds it.
std::string routing_trace_json(const Job& job, const std::vector<std::string>& parts, int64_t tokens) {
  std::map<int64_t, nlohmann::json> layers;
  for (const std::string& part : parts) {
    const nlohmann::json counts = nlohmann::json::parse(part);
    for (const nlohmann::json& entry : counts) layers.try_emplace(entry.at("layer").get<int64_t>(), entry.at("rows"));
  }
  nlohmann::json out = {{"format", "tandem-moe-routing-trace"}, {"experts", job.model.num_experts},
                        {"topk", job.model.moe_router_topk}, {"tokens", tokens}, {"layers", nlohmann::json::array()}};
  for (auto& [layer, rows] : layers) out["layers"].push_back(std::move(rows));
  return out.dump();
}

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
  s.router.sigmoid = m.moe_router_score_function == RouterScore::Sigmoid;
  s.router.num_groups = m.moe_router_group_topk > 0 ? m.moe_router_num_groups : 0;
  s.router.group_topk = m.moe_router_group_topk;
  s.router.scaling_factor = m.moe_router_topk_scaling_factor;
  s.expert_bias_rate = m.moe_router_enable_expert_bias ? m.moe_router_bias_update_rate : -1.0;
  s.mtp_loss_scale = m.mtp_loss_scaling_factor;
  s.aux_loss_coeff = m.moe_aux_loss_coeff;
  s.hidden_dropout = t.hidden_dropout;
  s.attention_dropout = t.attention_dropout;
  s.seed = t.seed;
  return s;
}

std::vector<std::string> run_notes(const Job& job) {
  std::vector<std::string> notes;
  const auto& t = job.training;
  if (t.hidden_dropout > 0 || t.attention_dropout > 0) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "dropout hidden %.3g, attention %.3g with deterministic masks (the same on every layout)",
                  t.hidden_dropout, t.attention_dropout);
    notes.emplace_back(buf);
  }
  if (t.params_dtype != DType::FP32)
    notes.push_back("math in fp32 (the job asks for " + to_string(t.params_dtype) + "; the program keeps its byte counts)");
  return notes;
}

// Iterations since the previous console line (Megatron's total_loss_dict between two log lines).
struct LogInterval {
  int64_t iterations = 0, nan_iterations = 0, finite = 0;
  double seconds = 0, loss_sum = 0;   // loss_sum over the finite losses
};

// Megatron's console line (training.py training_log) with the fields tandem has: time and loss are
// means over the interval; tandem has no loss scaler (fp32 math), so the scale is 1 and no
// iteration is skipped.
std::string iteration_line(const IterationRecord& r, const LogInterval& in) {
  char stamp[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &local);
  const double loss = in.finite > 0 ? in.loss_sum / double(in.finite) : r.lm_loss;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                " [%s] iteration %8lld/%8lld | consumed samples: %12lld | elapsed time per iteration (ms): %.1f | "
                "throughput per GPU (TFLOP/s/GPU): %.1f | learning rate: %.6E | global batch size: %5lld | "
                "lm loss: %.6E | loss scale: 1.0 | grad norm: %.3f | number of skipped iterations: %3d | "
                "number of nan iterations: %3lld |",
                stamp, static_cast<long long>(r.iteration), static_cast<long long>(r.train_iters),
                static_cast<long long>(r.consumed_samples), *r.interval_time_s * 1e3, r.interval_tflops_per_rank, r.lr,
                static_cast<long long>(r.global_batch_size), loss, r.grad_norm, 0,
                static_cast<long long>(in.nan_iterations));
  return buf;
}

std::vector<int64_t> moe_layers(const ModelConfig& m) {
  std::vector<int64_t> out;
  for (int64_t l = 0; m.is_moe() && l < m.num_layers; ++l)
    if (m.layer_is_moe(l)) out.push_back(l);
  return out;
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
          {"micro_batch_size", d.b}, {"num_microbatches", job.training.num_microbatches},
          {"hidden_dropout", s.hidden_dropout}, {"attention_dropout", s.attention_dropout}, {"seed", s.seed},
          {"multi_latent_attention", d.mla}, {"q_lora_rank", d.q_lora}, {"kv_lora_rank", d.kv_lora},
          {"qk_head_dim", d.d_nope}, {"qk_pos_emb_head_dim", d.d_rope}, {"v_head_dim", d.d_v},
          {"num_experts", d.experts}, {"moe_router_topk", d.topk}, {"moe_ffn_hidden_size", d.f_moe},
          {"moe_shared_expert_intermediate_size", d.f_shared}, {"moe_layers", moe_layers(m)},
          {"moe_router_score_function", to_string(m.moe_router_score_function)},
          {"moe_router_num_groups", m.moe_router_num_groups}, {"moe_router_group_topk", m.moe_router_group_topk},
          {"moe_router_enable_expert_bias", m.moe_router_enable_expert_bias},
          {"moe_router_bias_update_rate", m.moe_router_bias_update_rate},
          {"moe_router_topk_scaling_factor", m.moe_router_topk_scaling_factor},
          {"moe_aux_loss_coeff", m.moe_aux_loss_coeff}, {"mtp_num_layers", m.mtp_num_layers},
          {"mtp_loss_scaling_factor", m.mtp_loss_scaling_factor}};
}

nlohmann::json dump_params(Device& device, ParamStore& params, bool grads) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& p : params.params()) out[p->name] = {{"shape", p->shape}, {"value", device.to_host(grads ? p->grad : p->value)}};
  return out;
}

}  // namespace

namespace {

// One training run: the objects of this rank and the loop over iterations.
class TrainingRun {
 public:
  TrainingRun(const Job& job, Device& device, Communicator& comm, const TrainOptions& options)
      : job_(job),
        device_(device),
        comm_(comm),
        options_(options),
        grid_(ParallelGrid::from_job(job)),
        schedule_(schedule_for_job(job)),
        rank_(comm.rank()),
        program_(lower_rank(job, grid_, schedule_, rank_)),
        params_(device, job, grid_, schedule_, rank_),
        runner_(device, comm, params_, job, grid_, schedule_, rank_, settings_for(job, grid_)),
        executor_(device),
        iterations_(options.iterations > 0 ? options.iterations : job.training.train_iters),
        lr_(job.training, iterations_) {
    if (iterations_ <= 0) throw_field_error("train_iters", iterations_, "must be positive to train");
    const auto& t = job.training;
    if (!t.mock_data && t.data_path.empty()) throw UserError("no training data: pass --mock-data or --data-path PREFIX");
    gbs_ = std::max<int64_t>(1, t.num_microbatches) * std::max<int64_t>(1, t.micro_batch_size) * grid_.dp_size();
    samples_ = megatron_sample_counts(t, iterations_, gbs_);
    data_ = t.data_path.empty() ? make_mock_data(t.seed, job.model.seq_length, job.model.vocab_size)
                                : open_megatron_data(job, DataSplit::Train, samples_);
    evaluates_ = t.eval_interval > 0 && t.eval_iters > 0;
    if (evaluates_ && !t.data_path.empty() && !split_has_share(t.split, DataSplit::Valid)) {
      evaluates_ = false;   // as Megatron: no validation dataset, no evaluation
      skip_note_ = "--split " + t.split + " gives the validation split no share: no evaluation";
    }
    params_.initialize(t.seed, t.init_method_std);
    report_.notes = run_notes(job);
    if (!skip_note_.empty()) report_.notes.push_back(skip_note_);
    report_.tokens_per_iteration = gbs_ * job.model.seq_length;
    model_flops_ = flops_per_iteration(job).model;
  }

  TrainReport run() {
    const auto start = Clock::now();
    for (const std::string& n : report_.notes) log("note: " + n);
    report_.first_iteration = resume();
    // Megatron keeps consumed_valid_samples in its checkpoint; here every eval_interval-th
    // iteration evaluated eval_iters batches, so the stream continues where it was.
    if (evaluates_) eval_batches_ = (report_.first_iteration - 1) / job_.training.eval_interval * job_.training.eval_iters;
    if (rank_ == 0)
      for (const auto& l : options_.training_logs) l->begin(report_.first_iteration);
    if (options_.dump_first_step) begin_dump();
    for (int64_t it = report_.first_iteration; it <= iterations_; ++it) iteration(it);
    report_.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
    const size_t ran = report_.losses.size();
    if (ran > 0) {
      const double steady = ran > 1 ? timed_ : report_.iteration_times_s.front();
      report_.tokens_per_s = double(report_.tokens_per_iteration) * double(ran > 1 ? ran - 1 : 1) / steady;
    }
    return std::move(report_);
  }

 private:
  using Clock = std::chrono::steady_clock;

  void log(const std::string& line) const {
    if (options_.log && rank_ == 0) options_.log(line);
  }

  // Megatron's --load: the latest checkpoint under the directory, or the initial weights.
  int64_t resume() {
    const std::string& dir = job_.training.load;
    if (dir.empty()) return 1;
    const int64_t saved = latest_checkpoint(dir);
    if (saved == 0) {
      log("note: no checkpoint under --load " + dir + "; training from the initial weights");
      return 1;
    }
    ExpertBiasMap bias;
    load_checkpoint(dir, saved, params_, device_, comm_, &bias);
    runner_.set_expert_bias(bias);
    log("loaded checkpoint " + dir + " at iteration " + std::to_string(saved));
    return saved + 1;
  }

  void begin_dump() {
    if (comm_.world_size() != 1)
      throw UserError("the first-step dump is for one rank (world size " + std::to_string(comm_.world_size()) + ")");
    dump_["config"] = dump_config(job_, settings_for(job_, grid_));
    dump_["weights"] = dump_params(device_, params_, false);
    runner_.on_logits = [this](int32_t mb, const DeviceTensor& logits) {
      dump_["logits"][static_cast<size_t>(mb)] = {{"shape", logits.shape}, {"value", device_.to_host(logits)}};
    };
    for (const MicrobatchData& mb : rank_batch(*data_, job_, grid_, rank_, report_.first_iteration - 1)) {
      dump_["tokens"].push_back(mb.tokens);
      dump_["labels"].push_back(mb.labels);
      dump_["samples"].push_back(mb.samples);
    }
  }

  void iteration(int64_t it) {
    // Per-iteration device peak for the logs; the report keeps the peak over the whole run.
    report_.device_peak_bytes = std::max(report_.device_peak_bytes, device_.memory_stats().peak_bytes);
    device_.reset_peak();
    const auto t0 = Clock::now();
    const bool first = it == report_.first_iteration;
    const double rate = lr_.lr_at(it - 1);
    runner_.begin_iteration(it, rate, rank_batch(*data_, job_, grid_, rank_, it - 1));
    std::vector<std::string> trace;
    const bool record = options_.record_routing && first;
    if (record) begin_routing_record();
    const ExecutionStats stats = executor_.run(program_, runner_, options_.trace_ops && first ? &trace : nullptr);
    if (record) end_routing_record();
    const IterationTotals totals = runner_.end_iteration();
    const double sums_in[2] = {totals.loss_sum, totals.tokens};
    const std::vector<double> sums = comm_.world_sum(sums_in);
    TANDEM_CHECK_MSG(sums[1] > 0, "no loss was computed in iteration " << it);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    report_.losses.push_back(sums[0] / sums[1]);
    report_.grad_norms.push_back(totals.grad_norm);
    report_.lrs.push_back(rate);
    report_.iteration_times_s.push_back(seconds);
    report_.program_peak_bytes = stats.peak_bytes;
    const Device::MemoryStats memory = device_.memory_stats();
    report_.device_peak_bytes = std::max(report_.device_peak_bytes, memory.peak_bytes);
    if (!first) timed_ += seconds;
    IterationRecord rec = record_of(it, seconds, rate, totals.grad_norm);
    rec.mem_peak_bytes = memory.peak_bytes;
    rec.mem_allocated_bytes = memory.live_bytes;
    if (options_.dump_first_step && first) {
      dump_["loss"] = report_.losses.back();
      dump_["grads"] = dump_params(device_, params_, true);
      runner_.on_logits = nullptr;
      // The expert bias after the first update (aux-loss-free balancing), per MoE layer.
      nlohmann::json bias = nlohmann::json::object();
      for (const auto& [layer, values] : runner_.expert_bias()) bias[std::to_string(layer)] = values;
      dump_["expert_bias"] = bias;
      report_.first_step = dump_.dump();
    }
    if (options_.trace_ops && first) {
      std::string text = "# rank " + std::to_string(rank_) + "\n";
      for (const std::string& line : trace) text += line + "\n";
      for (const std::string& part : comm_.gather_to_root(text)) report_.op_trace += part;
    }
    const auto& t = job_.training;
    if (!t.save.empty() && ((t.save_interval > 0 && it % t.save_interval == 0) || it == iterations_)) {
      save_checkpoint(t.save, it, params_, device_, comm_, job_to_json(job_).dump(), &runner_.expert_bias());
      log("saved checkpoint " + t.save + " at iteration " + std::to_string(it));
    }
    log_iteration(rec);
  }

  // The console line every log_interval iterations, the evaluation, then rank 0's training logs.
  void log_iteration(IterationRecord& rec) {
    const auto& t = job_.training;
    const int64_t it = rec.iteration;
    interval_.iterations += 1;
    interval_.seconds += rec.iteration_time_s;
    if (std::isfinite(rec.lm_loss)) {
      interval_.loss_sum += rec.lm_loss;
      interval_.finite += 1;
    } else {
      interval_.nan_iterations += 1;
    }
    if (it % std::max<int64_t>(1, t.log_interval) == 0 || it == iterations_) {
      rec.interval_time_s = interval_.seconds / double(interval_.iterations);
      rec.interval_tflops_per_rank = model_flops_ / *rec.interval_time_s / double(comm_.world_size()) / 1e12;
      log(iteration_line(rec, interval_));
      interval_ = LogInterval{};
    }
    if (evaluates_ && it % t.eval_interval == 0) rec.eval_loss = evaluate(it);
    if (rank_ == 0)
      for (const auto& l : options_.training_logs) l->record(rec);
  }

  IterationRecord record_of(int64_t it, double seconds, double rate, double grad_norm) const {
    IterationRecord r;
    r.iteration = it;
    r.train_iters = iterations_;
    r.consumed_samples = it * gbs_;
    r.global_batch_size = gbs_;
    r.lm_loss = report_.losses.back();
    r.lr = rate;
    r.grad_norm = grad_norm;
    r.iteration_time_s = seconds;
    r.tokens_per_s = double(report_.tokens_per_iteration) / seconds;
    r.model_tflops_per_rank = model_flops_ / seconds / double(comm_.world_size()) / 1e12;
    if (options_.peak_flops_per_rank > 0) r.mfu = r.model_tflops_per_rank * 1e12 / options_.peak_flops_per_rank;
    return r;
  }

  // MoE routing trace: this rank's router counts of the iteration, merged at rank 0.
  void begin_routing_record() {
    runner_.on_routing = [this](int32_t layer, int32_t mb, int64_t tokens, const std::vector<int64_t>& counts) {
      routing_[layer][mb] = counts;
      routing_tokens_ = tokens;
    };
  }

  void end_routing_record() {
    runner_.on_routing = nullptr;
    nlohmann::json mine = nlohmann::json::array();   // [{layer, rows: [microbatch][expert]}]
    for (const auto& [layer, rows] : routing_) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& [mb, counts] : rows) list.push_back(counts);
      mine.push_back({{"layer", layer}, {"rows", std::move(list)}});
    }
    const std::vector<std::string> parts = comm_.gather_to_root(mine.dump());
    const double tokens_in[1] = {double(routing_tokens_)};
    const double tokens = comm_.world_sum(tokens_in)[0];   // equal on every rank that routes
    const double routers_in[1] = {routing_tokens_ > 0 ? 1.0 : 0.0};
    const double routers = comm_.world_sum(routers_in)[0];
    if (rank_ == 0) report_.routing_trace = routing_trace_json(job_, parts, std::llround(tokens / std::max(1.0, routers)));
    routing_.clear();
  }

  // Megatron's evaluate(): eval_iters batches of the validation split, continuing its stream.
  double evaluate(int64_t it) {
    const auto& t = job_.training;
    if (!valid_)
      valid_ = t.data_path.empty()
                   ? make_mock_data(t.seed, job_.model.seq_length, job_.model.vocab_size, DataSplit::Valid)
                   : open_megatron_data(job_, DataSplit::Valid, samples_);
    double sum = 0, count = 0;
    for (int64_t e = 0; e < t.eval_iters; ++e) {
      runner_.begin_iteration(it, 0.0, rank_batch(*valid_, job_, grid_, rank_, eval_batches_++), false);
      executor_.run(program_, runner_, nullptr);
      const IterationTotals totals = runner_.end_iteration();
      const double in[2] = {totals.loss_sum, totals.tokens};
      const std::vector<double> out = comm_.world_sum(in);
      sum += out[0];
      count += out[1];
    }
    const double loss = sum / count;
    report_.eval_losses.emplace_back(it, loss);
    char buf[160];
    std::snprintf(buf, sizeof buf, " validation loss at iteration %lld | lm loss value: %.6E | lm loss PPL: %.6E",
                  static_cast<long long>(it), loss, std::exp(std::min(20.0, loss)));
    log(buf);
    return loss;
  }

  const Job& job_;
  Device& device_;
  Communicator& comm_;
  const TrainOptions& options_;
  const ParallelGrid grid_;
  const Schedule schedule_;
  const int64_t rank_;
  const RankProgram program_;
  ParamStore params_;
  ModelRunner runner_;
  ProgramExecutor executor_;
  const int64_t iterations_;
  const LrSchedule lr_;
  SampleCounts samples_;                       // per split, as Megatron sizes its datasets
  bool evaluates_ = false;
  std::string skip_note_;
  std::unique_ptr<DataSource> data_, valid_;
  int64_t eval_batches_ = 0;
  int64_t gbs_ = 1;
  double timed_ = 0;
  double model_flops_ = 0;                     // Megatron's model FLOPs of one iteration (no recompute)
  LogInterval interval_;
  TrainReport report_;
  nlohmann::json dump_;
  RoutingCounts routing_;
  int64_t routing_tokens_ = 0;
};

}  // namespace

TrainReport train(const Job& job, Device& device, Communicator& comm, const TrainOptions& options) {
  // Selective recompute replays only the attention core on the real backends so far; the other
  // modules of --recompute-modules are simulated, not trained.
  for (RecomputeModule m : job.training.recompute_modules)
    if (m != RecomputeModule::CoreAttn)
      throw_field_error("--recompute-modules", to_string(m), "not supported by the real backends yet (core_attn is)");
  return TrainingRun(job, device, comm, options).run();
}

}  // namespace tandem::exec
