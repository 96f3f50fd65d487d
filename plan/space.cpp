// The planner's search space (space.h).
#include "plan/space.h"

#include <algorithm>
#include <cctype>

#include "core/check.h"
#include "core/job_loader.h"
#include "models/accounting.h"
#include "schedules/registry.h"

namespace tandem::plan {
namespace {

std::vector<int64_t> divisors(int64_t n, int64_t max_value) {
  std::vector<int64_t> out;
  for (int64_t d = 1; d <= n && d <= max_value; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

std::vector<int64_t> powers_of_two(int64_t max_value) {
  std::vector<int64_t> out;
  for (int64_t v = 1; v <= max_value; v *= 2) out.push_back(v);
  return out;
}

bool pinned(const SearchSpace& s, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (s.pinned.count(n)) return true;
  return false;
}

// Virtual stages per pipeline rank for `pp` (the pinned value, or every divisor of the stage's layers).
std::vector<int64_t> virtual_stages(const SearchSpace& s, int64_t pp) {
  const ParallelConfig& b = s.base.parallel;
  const int64_t layers = s.base.model.num_layers;
  if (pinned(s, {"--num-layers-per-virtual-pipeline-stage"}) && b.num_layers_per_virtual_pipeline_stage > 0) {
    if (layers % pp != 0) return {1};
    return {std::max<int64_t>(1, (layers / pp) / b.num_layers_per_virtual_pipeline_stage)};
  }
  if (pinned(s, {"--num-virtual-stages-per-pipeline-rank", "--virtual-pipeline-model-parallel-size"}))
    return {std::max<int64_t>(1, b.virtual_pipeline_model_parallel_size)};
  std::vector<int64_t> out = {1};
  if (pp > 1 && layers % pp == 0)
    for (int64_t v : divisors(layers / pp, layers))
      if (v >= 2) out.push_back(v);
  return out;
}

std::vector<std::string> schedules_for(const SearchSpace& s, int64_t vp) {
  if (pinned(s, {"--pipeline-schedule"}) && !s.base.parallel.pipeline_schedule.empty()) return {s.base.parallel.pipeline_schedule};
  std::vector<std::string> out = {vp > 1 ? "interleaved" : "1f1b"};
  for (const std::string& name : s.extra_schedules) {
    const ScheduleInfo* info = lookup_schedule(name);
    if (!info || std::find(out.begin(), out.end(), name) != out.end()) continue;
    if (vp >= info->chunks.min && vp <= info->chunks.max) out.push_back(name);
  }
  return out;
}

struct Axes {
  std::vector<int64_t> tp, cp, ep, mbs;
  std::vector<RecomputeGranularity> recompute;
  std::vector<bool> dist_opt;
};

Axes axes_of(const SearchSpace& s) {
  const Job& b = s.base;
  Axes a;
  const int64_t max_tp = s.max_tp > 0 ? s.max_tp : std::max<int64_t>(1, b.cluster.gpus_per_node);
  a.tp = pinned(s, {"--tensor-model-parallel-size", "--model-parallel-size"})
             ? std::vector<int64_t>{b.parallel.tensor_model_parallel_size}
             : divisors(s.gpus, max_tp);
  a.cp = pinned(s, {"--context-parallel-size"}) ? std::vector<int64_t>{b.parallel.context_parallel_size}
                                                : powers_of_two(std::max<int64_t>(1, s.max_cp));
  if (!b.model.is_moe()) a.ep = {1};
  else if (pinned(s, {"--expert-model-parallel-size"})) a.ep = {b.parallel.expert_model_parallel_size};
  else a.ep = divisors(b.model.num_experts, b.model.num_experts);
  a.mbs = pinned(s, {"--micro-batch-size"}) ? std::vector<int64_t>{b.training.micro_batch_size}
                                            : powers_of_two(std::max<int64_t>(1, s.max_micro_batch));
  if (pinned(s, {"--recompute-granularity", "--recompute-activations", "--checkpoint-activations"}))
    a.recompute = {b.training.recompute_granularity};
  else
    a.recompute = {RecomputeGranularity::None, RecomputeGranularity::Selective, RecomputeGranularity::Full};
  a.dist_opt = pinned(s, {"--use-distributed-optimizer"}) ? std::vector<bool>{true} : std::vector<bool>{true, false};
  return a;
}

}  // namespace

std::string numbers_as_n(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (out.empty() || out.back() != 'N') out += 'N';
      while (i + 1 < text.size() && (std::isdigit(static_cast<unsigned char>(text[i + 1])) || text[i + 1] == ',')) ++i;
    } else {
      out += text[i];
    }
  }
  return out.size() > 120 ? out.substr(0, 120) + "..." : out;
}

std::string Candidate::key() const {
  return "tp" + std::to_string(tp) + "-pp" + std::to_string(pp) + "-vp" + std::to_string(vp) + "-cp" +
         std::to_string(cp) + "-ep" + std::to_string(ep) + "-etp" + std::to_string(etp) + "-mbs" + std::to_string(mbs) +
         "-" + to_string(recompute) + (distributed_optimizer ? "-distopt" : "") + (sequence_parallel ? "-sp" : "") +
         "-" + schedule;
}

const std::vector<std::string>& layout_flags() {
  static const std::vector<std::string> flags = {
      "--tensor-model-parallel-size", "--model-parallel-size", "--pipeline-model-parallel-size",
      "--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank",
      "--virtual-pipeline-model-parallel-size", "--context-parallel-size", "--expert-model-parallel-size",
      "--expert-tensor-parallel-size", "--micro-batch-size", "--recompute-granularity", "--recompute-activations",
      "--checkpoint-activations", "--use-distributed-optimizer", "--sequence-parallel", "--pipeline-schedule",
      "--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers", "--num-layers-in-first-pipeline-stage",
      "--num-layers-in-last-pipeline-stage", "--account-for-embedding-in-pipeline-split",
      "--account-for-loss-in-pipeline-split"};
  return flags;
}

std::set<std::string> pinned_flags(const std::vector<std::string>& megatron_flags) {
  std::set<std::string> out;
  for (const std::string& f : megatron_flags) {
    const std::string name = f.substr(0, f.find('='));
    if (std::find(layout_flags().begin(), layout_flags().end(), name) != layout_flags().end()) out.insert(name);
  }
  return out;
}

std::vector<Candidate> enumerate_candidates(const SearchSpace& s) {
  TANDEM_CHECK(s.gpus > 0);
  const Axes a = axes_of(s);
  const bool sp_pinned = pinned(s, {"--sequence-parallel"});
  std::vector<Candidate> out;
  for (int64_t tp : a.tp) {
    if (s.gpus % tp != 0) continue;
    for (int64_t cp : a.cp) {
      if ((s.gpus / tp) % cp != 0) continue;
      const std::vector<int64_t> pps = pinned(s, {"--pipeline-model-parallel-size"})
                                           ? std::vector<int64_t>{s.base.parallel.pipeline_model_parallel_size}
                                           : divisors(s.gpus / (tp * cp), std::max<int64_t>(1, s.base.model.num_layers));
      for (int64_t pp : pps) {
        if ((s.gpus / tp / cp) % pp != 0) continue;
        const int64_t dp = s.gpus / (tp * cp * pp);
        const std::vector<int64_t> etps = !s.base.model.is_moe() ? std::vector<int64_t>{1}
                                          : pinned(s, {"--expert-tensor-parallel-size"})
                                              ? std::vector<int64_t>{s.base.parallel.expert_tensor_parallel_size > 0
                                                                         ? s.base.parallel.expert_tensor_parallel_size
                                                                         : tp}
                                              : (tp == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, tp});
        for (int64_t vp : virtual_stages(s, pp))
          for (const std::string& schedule : schedules_for(s, vp))
            for (int64_t ep : a.ep)
              for (int64_t etp : etps)
                for (int64_t mbs : a.mbs)
                  for (RecomputeGranularity r : a.recompute)
                    for (bool dist : a.dist_opt) {
                      Candidate c;
                      c.tp = tp, c.pp = pp, c.vp = vp, c.cp = cp, c.ep = ep, c.etp = etp, c.dp = dp, c.mbs = mbs;
                      c.recompute = r, c.distributed_optimizer = dist, c.schedule = schedule;
                      c.sequence_parallel = sp_pinned ? s.base.parallel.sequence_parallel && tp > 1 : tp > 1;
                      out.push_back(c);
                    }
      }
    }
  }
  return out;
}

Job job_for(const SearchSpace& s, const Candidate& c) {
  Job job = s.base;
  ParallelConfig& p = job.parallel;
  p.tensor_model_parallel_size = c.tp;
  p.pipeline_model_parallel_size = c.pp;
  p.virtual_pipeline_model_parallel_size = c.vp;
  p.num_layers_per_virtual_pipeline_stage = 0;
  p.context_parallel_size = c.cp;
  p.expert_model_parallel_size = c.ep;
  p.expert_tensor_parallel_size = job.model.is_moe() ? c.etp : 0;
  p.data_parallel_size = 0;
  p.sequence_parallel = c.sequence_parallel;
  p.use_distributed_optimizer = c.distributed_optimizer;
  if (!c.distributed_optimizer) p.overlap_param_gather = false;
  if (!c.sequence_parallel) p.tp_comm_overlap = false;
  p.pipeline_schedule = c.schedule;
  // An uneven split a config file or preset carried belongs to its own layout: kept only when pinned.
  if (!pinned(s, {"--decoder-first-pipeline-num-layers", "--num-layers-in-first-pipeline-stage"}))
    p.decoder_first_pipeline_num_layers = 0;
  if (!pinned(s, {"--decoder-last-pipeline-num-layers", "--num-layers-in-last-pipeline-stage"}))
    p.decoder_last_pipeline_num_layers = 0;
  if (!pinned(s, {"--account-for-embedding-in-pipeline-split"})) p.account_for_embedding_in_pipeline_split = false;
  if (!pinned(s, {"--account-for-loss-in-pipeline-split"})) p.account_for_loss_in_pipeline_split = false;
  TrainingConfig& t = job.training;
  t.micro_batch_size = c.mbs;
  t.num_microbatches = 0;
  if (t.recompute_granularity != c.recompute) {
    t.recompute_granularity = c.recompute;
    t.recompute_method = RecomputeMethod::Uniform;
    t.recompute_num_layers = c.recompute == RecomputeGranularity::Full ? 1 : 0;
  }
  job.world_size = s.gpus;
  resolve_job(job);
  return job;
}

std::optional<std::string> check_candidate(const SearchSpace& s, const Candidate& c, Job& job, std::string& detail) {
  const ModelConfig& m = s.base.model;
  const int64_t groups = m.num_query_groups > 0 ? m.num_query_groups : m.num_attention_heads;
  if (m.num_attention_heads % c.tp != 0 || groups % c.tp != 0) {
    detail = "TP must divide the attention heads and query groups";
    return "tp-divides-heads";
  }
  if (m.num_layers % c.pp != 0 && s.base.parallel.decoder_first_pipeline_num_layers == 0 &&
      s.base.parallel.decoder_last_pipeline_num_layers == 0 && !s.base.parallel.account_for_embedding_in_pipeline_split &&
      !s.base.parallel.account_for_loss_in_pipeline_split) {
    detail = "PP must divide the number of layers";
    return "pp-divides-layers";
  }
  if (c.cp > 1 && m.seq_length % (2 * c.cp) != 0) {
    detail = "the sequence must split into 2 x CP chunks (load-balanced causal context parallelism)";
    return "cp-divides-sequence";
  }
  if (c.sequence_parallel && ((m.seq_length / c.cp) * c.mbs) % c.tp != 0) {
    detail = "with sequence parallelism the local tokens s / CP x micro-batch must divide by TP";
    return "sp-divides-tokens";
  }
  const int64_t gbs = s.base.training.global_batch_size;
  if (gbs > 0 && gbs % (c.mbs * c.dp) != 0) {
    detail = "the global batch must be a multiple of micro-batch x DP";
    return "batch-divisible";
  }
  if (m.is_moe() && (m.num_experts % c.ep != 0 || (s.gpus / c.pp) % (c.ep * c.etp) != 0)) {
    detail = "EP must divide the experts and EP x ETP the GPUs of a pipeline stage";
    return "expert-layout";
  }
  try {
    job = job_for(s, c);
  } catch (const UserError& e) {
    detail = e.what();
    return "megatron-rule: " + numbers_as_n(e.what());
  }
  try {
    const ScheduleInfo& info = find_schedule(job.parallel.pipeline_schedule);
    ScheduleParams params;
    params.pp = static_cast<int>(c.pp);
    params.microbatches = static_cast<int>(std::max<int64_t>(1, job.training.num_microbatches));
    params.chunks = c.vp > 1 ? static_cast<int>(c.vp) : 0;
    resolve_params(info, params);
  } catch (const UserError& e) {
    detail = e.what();
    return "schedule: " + numbers_as_n(e.what());
  }
  return std::nullopt;
}

std::vector<std::string> megatron_args(const Candidate& c, const Job& job) {
  std::vector<std::string> a = {"--tensor-model-parallel-size", std::to_string(c.tp), "--pipeline-model-parallel-size",
                                std::to_string(c.pp)};
  if (c.vp > 1) a.insert(a.end(), {"--num-virtual-stages-per-pipeline-rank", std::to_string(c.vp)});
  if (c.cp > 1) a.insert(a.end(), {"--context-parallel-size", std::to_string(c.cp)});
  if (job.model.is_moe())
    a.insert(a.end(), {"--expert-model-parallel-size", std::to_string(c.ep), "--expert-tensor-parallel-size",
                       std::to_string(c.etp)});
  a.insert(a.end(), {"--micro-batch-size", std::to_string(c.mbs)});
  if (c.sequence_parallel) a.push_back("--sequence-parallel");
  if (c.recompute != RecomputeGranularity::None) {
    a.insert(a.end(), {"--recompute-granularity", to_string(c.recompute)});
    if (c.recompute == RecomputeGranularity::Full)
      a.insert(a.end(), {"--recompute-method", to_string(job.training.recompute_method), "--recompute-num-layers",
                         std::to_string(job.training.recompute_num_layers)});
  }
  if (c.distributed_optimizer) a.push_back("--use-distributed-optimizer");
  const std::string megatron_default = c.vp > 1 ? "interleaved" : "1f1b";
  if (c.schedule != megatron_default) a.insert(a.end(), {"--pipeline-schedule", c.schedule});
  return a;
}

}  // namespace tandem::plan
