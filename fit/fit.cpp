// The fit itself: surrogates, optimisation, cross-validation (method in fit.h).
#include "fit/fit.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>

#include "backends/sim/simulator.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "fit/optimizer.h"

namespace tandem::fit {
namespace {

// Time is linear in 1 / value for throughput-like parameters, in value for overheads.
bool inverse_scale(const std::string& name) {
  return name.find("fraction") != std::string::npos || name.find("efficiency") != std::string::npos ||
         name.find("factor") != std::string::npos;
}

// Parameters of the compute model (sensitivities from one simulation); the rest (communication)
// change how the ranks wait for each other and are stepped in full simulations.
bool is_compute_parameter(const std::string& name) {
  return name.rfind("communication.", 0) != 0;
}

double to_x(const std::string& name, double v) { return inverse_scale(name) ? 1.0 / std::max(v, 1e-3) : v; }

double round4(double v) {   // four significant digits
  if (v == 0) return 0;
  const double scale = std::pow(10.0, 3 - std::floor(std::log10(std::fabs(v))));
  return std::round(v * scale) / scale;
}

double metric_of(Metric m, const sim::SimResult& r, const Job& job) {
  switch (m) {
    case Metric::IterationTime: return r.iteration_time_s;
    case Metric::TokensPerSecond: return r.tokens_per_s;
    case Metric::TokensPerSecondPerGpu: return r.tokens_per_s / static_cast<double>(job.world_size);
    case Metric::ModelTflopsPerGpu: return r.model_tflops_per_gpu;
    case Metric::HardwareTflopsPerGpu: return r.hardware_tflops_per_gpu;
  }
  return r.iteration_time_s;
}

// A run's iteration time near the centre c: T(c) + sum_i slope_i (x_i - x(c_i)).
struct RunSurrogate {
  double t0 = 0;
  std::vector<double> slope;       // seconds per unit of x
  double metric_t = 0;             // rates: metric x T (constant); times: 1
  bool rate = false;
  double metric(const std::vector<double>& x, const std::vector<double>& x0) const {
    double t = t0;
    for (size_t i = 0; i < x.size(); ++i) t += slope[i] * (x[i] - x0[i]);
    t = std::max(t, 0.05 * t0);
    return rate ? metric_t / t : t;
  }
};

class Fitter {
 public:
  Fitter(const Stack& base, const std::vector<Run>& runs, const std::vector<Job>& jobs, const FitOptions& o)
      : base_(base), runs_(runs), jobs_(jobs), o_(o) {
    for (const std::string& n : o.free) params_.push_back(*sim::find_parameter(base, n));
    for (size_t i = 0; i < params_.size(); ++i)
      if (is_compute_parameter(params_[i].name)) compute_params_.push_back(i);
    std::map<std::string, size_t> classes;
    for (const Job& job : jobs_) {
      nlohmann::json key = job_to_json(job);
      key.erase("notes");
      key.erase("ignored_flags");
      job_class_.push_back(classes.try_emplace(key.dump(), classes.size()).first->second);
    }
  }

  Stack with_values(const std::vector<double>& v) const {
    Stack s = base_;
    for (size_t i = 0; i < v.size(); ++i) sim::set_parameter(s, params_[i].name, v[i]);
    if (!o_.name.empty()) s.name = o_.name;
    return s;
  }

  // The selected runs simulated, each with its own stack values. Runs whose jobs are identical
  // (the same layout published by several releases) are simulated once per set of values.
  std::vector<sim::SimResult> simulate(const std::vector<size_t>& runs, const std::vector<std::vector<double>>& values,
                                       bool sensitivities = false) {
    std::vector<sim::SimRequest> requests;
    std::map<std::pair<size_t, std::vector<double>>, size_t> unique;   // (job class, values) -> request
    std::vector<size_t> request_of;
    for (size_t k = 0; k < runs.size(); ++k) {
      auto [it, fresh] = unique.try_emplace({job_class_[runs[k]], values[k]}, requests.size());
      request_of.push_back(it->second);
      if (!fresh) continue;
      sim::SimRequest rq;
      rq.job = &jobs_[runs[k]];
      rq.options.stack = stack_for(values[k]);
      if (sensitivities)
        for (size_t i : compute_params_) rq.options.sensitivity_stacks.push_back(stack_for(stepped(values[k], i)));
      requests.push_back(rq);
    }
    simulations_ += static_cast<int>(requests.size());
    const std::vector<sim::SimResult> unique_results = sim::simulate_many_in_subprocesses(requests, o_.parallel);
    std::vector<sim::SimResult> out;
    for (size_t r : request_of) out.push_back(unique_results[r]);
    return out;
  }

  std::shared_ptr<const Stack> stack_for(const std::vector<double>& values) {
    auto& s = stacks_[values];
    if (!s) s = std::make_shared<const Stack>(with_values(values));
    return s;
  }

  // c with parameter i stepped by about 10% (of the value for fractions, of the range otherwise),
  // inward at a bound.
  std::vector<double> stepped(const std::vector<double>& c, size_t i) const {
    const StackParameter& q = params_[i];
    double up = inverse_scale(q.name) ? c[i] * 1.1 : c[i] + 0.1 * (q.upper - q.lower);
    if (up > q.upper) up = inverse_scale(q.name) ? c[i] / 1.1 : c[i] - 0.1 * (q.upper - q.lower);
    std::vector<double> v = c;
    v[i] = round4(up);
    return v;
  }

  // Surrogates around c. Compute parameters take their slopes from the centre simulation's
  // sensitivities (the critical rank's compute re-timed with the parameter stepped; the pipeline
  // bubble, made of other stages' compute, scales with it); the others (communication) from one
  // extra simulation per run with the parameter stepped. `centre`: the runs simulated at c with
  // sensitivities (simulated here when empty).
  void build_surrogates(const std::vector<double>& c, std::vector<sim::SimResult> centre) {
    const size_t n = runs_.size(), p = params_.size();
    if (centre.empty()) centre = simulate(all_runs(), std::vector<std::vector<double>>(n, c), true);
    std::vector<std::vector<sim::SimResult>> stepped_runs(p);
    for (size_t i = 0; i < p; ++i)
      if (!is_compute_parameter(params_[i].name))
        stepped_runs[i] = simulate(all_runs(), std::vector<std::vector<double>>(n, stepped(c, i)));
    x0_ = xs(c);
    surrogates_.assign(n, {});
    for (size_t j = 0; j < n; ++j) {
      const sim::SimResult& r = centre[j];
      RunSurrogate& s = surrogates_[j];
      s.t0 = r.iteration_time_s;
      s.rate = is_rate(runs_[j].metric);
      s.metric_t = s.rate ? metric_of(runs_[j].metric, r, jobs_[j]) * s.t0 : 1;
      const double busy = sim::critical_busy_s(r);
      const double driven = r.breakdown.compute + r.breakdown.optimizer + r.breakdown.pipeline_bubble;
      size_t next_sensitivity = 0;
      for (size_t i = 0; i < p; ++i) {
        const double step_x = to_x(params_[i].name, stepped(c, i)[i]) - to_x(params_[i].name, c[i]);
        double dt = 0;
        if (is_compute_parameter(params_[i].name)) {
          const double alt = r.sensitivity_busy_s.at(next_sensitivity++);
          dt = busy > 0 ? (alt - busy) * driven / busy : 0;
        } else {
          dt = stepped_runs[i][j].iteration_time_s - s.t0;
        }
        s.slope.push_back(step_x == 0 ? 0 : dt / step_x);
      }
      if (base_metric_.size() < n) base_metric_.push_back(metric_of(runs_[j].metric, r, jobs_[j]));
    }
  }

  std::vector<size_t> all_runs() const {
    std::vector<size_t> all(runs_.size());
    for (size_t j = 0; j < all.size(); ++j) all[j] = j;
    return all;
  }

  // Largest |surrogate / simulated - 1| over the runs.
  double surrogate_gap(const std::vector<double>& v, const std::vector<sim::SimResult>& check) const {
    const std::vector<double> predicted = surrogate_metrics(v);
    double gap = 0;
    for (size_t j = 0; j < check.size(); ++j)
      gap = std::max(gap, std::fabs(predicted[j] / metric_of(runs_[j].metric, check[j], jobs_[j]) - 1));
    return gap;
  }

  std::vector<double> xs(const std::vector<double>& v) const {
    std::vector<double> x(v.size());
    for (size_t i = 0; i < v.size(); ++i) x[i] = to_x(params_[i].name, v[i]);
    return x;
  }

  double objective(const std::vector<double>& v, const std::vector<size_t>& rows) const {
    const std::vector<double> x = xs(v);
    double sum = 0;
    for (size_t j : rows) {
      const double e = std::log(surrogates_[j].metric(x, x0_) / runs_[j].measured);
      sum += std::fabs(e);
    }
    return rows.empty() ? 0 : sum / static_cast<double>(rows.size());
  }

  std::vector<double> optimise(const std::vector<size_t>& rows, const std::vector<double>& start) const {
    std::vector<double> lo, hi;
    for (const StackParameter& q : params_) {
      lo.push_back(inverse_scale(q.name) ? std::max(q.lower, 1e-3) : q.lower);
      hi.push_back(q.upper);
    }
    const Minimum m = minimise([&](const std::vector<double>& v) { return objective(v, rows); }, start, lo, hi);
    std::vector<double> out;
    for (size_t i = 0; i < m.x.size(); ++i) out.push_back(std::clamp(round4(m.x[i]), params_[i].lower, params_[i].upper));
    return out;
  }

  std::vector<double> surrogate_metrics(const std::vector<double>& v) const {
    std::vector<double> out;
    for (const RunSurrogate& s : surrogates_) out.push_back(s.metric(xs(v), x0_));
    return out;
  }

  // Held-out predictions: each group fitted without its runs, its runs simulated at those values.
  std::vector<double> cross_validate(const std::vector<int>& group, const std::vector<double>& start) {
    const int groups = *std::max_element(group.begin(), group.end()) + 1;
    std::vector<size_t> which;
    std::vector<std::vector<double>> values;
    for (int g = 0; g < groups; ++g) {
      std::vector<size_t> train;
      for (size_t j = 0; j < runs_.size(); ++j)
        if (group[j] != g) train.push_back(j);
      const std::vector<double> v = optimise(train, start);
      for (size_t j = 0; j < runs_.size(); ++j)
        if (group[j] == g) {
          which.push_back(j);
          values.push_back(v);
        }
    }
    const std::vector<sim::SimResult> r = simulate(which, values);
    std::vector<double> out(runs_.size());
    for (size_t k = 0; k < which.size(); ++k) out[which[k]] = metric_of(runs_[which[k]].metric, r[k], jobs_[which[k]]);
    return out;
  }

  FitResult run() {
    const size_t n = runs_.size();
    std::vector<size_t> all(n);
    for (size_t j = 0; j < n; ++j) all[j] = j;
    std::vector<double> v;
    for (const StackParameter& q : params_) v.push_back(q.value);
    FitResult out;
    // Rounds: surrogates around v, optimum on them, full simulations there. Stop when the
    // surrogates agree with the simulations (within 0.5% on every run) or after `rounds`; else the
    // check's simulations are the next round's centre.
    std::vector<sim::SimResult> check;
    std::vector<double> predicted;
    for (int round = 1;; ++round) {
      say("round " + std::to_string(round) + ": " +
          (check.empty() ? std::to_string(n) + " runs simulated with sensitivities" : "surrogates from the last check") +
          (compute_params_.size() < params_.size()
               ? ", " + std::to_string(n * (params_.size() - compute_params_.size())) + " stepped simulations"
               : std::string()));
      build_surrogates(v, check);
      const double before = objective(v, all);
      const std::vector<double> next = optimise(all, v);
      say("round " + std::to_string(round) + ": " + std::to_string(n) + " runs simulated at the optimum");
      check = simulate(all, std::vector<std::vector<double>>(n, next), true);
      predicted = surrogate_metrics(next);
      const double gap = surrogate_gap(next, check);
      std::ostringstream line;
      line << "round " << round << ": surrogates around (" << values_text(v) << "), mean |log error| " << before
           << " -> " << objective(next, all) << " at (" << values_text(next)
           << "); surrogates vs full simulations there: max gap " << 100 * gap << "%";
      out.surrogate_log.push_back(line.str());
      v = next;
      if (gap <= 0.005 || round >= std::max(1, o_.rounds)) break;
    }
    // The check at the fitted values carries sensitivities: the folds below optimise on
    // surrogates centred there (free of charge when every parameter is a compute parameter).
    if (compute_params_.size() == params_.size()) build_surrogates(v, check);
    say("cross-validation");
    std::vector<int> family_group, fold_group;
    out.group_kind = groups_by_family(family_group) ? "leave-one-family-out" : "leave-one-out";
    out.folds = std::min<int>(std::max(2, o_.folds), static_cast<int>(n));
    for (size_t j = 0; j < n; ++j) fold_group.push_back(static_cast<int>(j) % out.folds);
    const std::vector<double> held_group = cross_validate(family_group, v);
    const std::vector<double> held_fold = cross_validate(fold_group, v);
    for (size_t j = 0; j < n; ++j) {
      RunFit f;
      f.label = runs_[j].label;
      f.family = runs_[j].family;
      f.metric = runs_[j].metric;
      f.measured = runs_[j].measured;
      f.base = base_metric_[j];
      f.surrogate = predicted[j];
      f.simulated = metric_of(runs_[j].metric, check[j], jobs_[j]);
      f.held_out_group = held_group[j];
      f.held_out_fold = held_fold[j];
      out.runs.push_back(f);
    }
    for (size_t i = 0; i < params_.size(); ++i)
      out.parameters.push_back({params_[i].name, params_[i].value, params_[i].prior, v[i], params_[i].lower, params_[i].upper});
    out.stack = with_values(v);
    out.base = base_.name;
    out.simulations = simulations_;
    return out;
  }

 private:
  // Families numbered in order of appearance; false (and one group per run) with a single family.
  bool groups_by_family(std::vector<int>& group) const {
    std::vector<std::string> names;
    for (const Run& r : runs_) {
      auto it = std::find(names.begin(), names.end(), r.family);
      group.push_back(static_cast<int>(it - names.begin()));
      if (it == names.end()) names.push_back(r.family);
    }
    if (names.size() > 1) return true;
    for (size_t j = 0; j < group.size(); ++j) group[j] = static_cast<int>(j);
    return false;
  }

  static std::string values_text(const std::vector<double>& v) {
    std::ostringstream os;
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    return os.str();
  }

  void say(const std::string& s) const {
    if (o_.progress) o_.progress(s);
  }

  const Stack& base_;
  const std::vector<Run>& runs_;
  const std::vector<Job>& jobs_;
  const FitOptions& o_;
  std::vector<StackParameter> params_;
  std::vector<size_t> compute_params_;          // indices into params_
  std::vector<size_t> job_class_;               // [run]: runs with equal jobs share a class
  std::map<std::vector<double>, std::shared_ptr<const Stack>> stacks_;
  std::vector<RunSurrogate> surrogates_;
  std::vector<double> x0_, base_metric_;
  int simulations_ = 0;
};

}  // namespace

double relative_error(double simulated, double measured) { return simulated / measured - 1.0; }

double mape(const std::vector<double>& simulated, const std::vector<double>& measured) {
  double s = 0;
  for (size_t i = 0; i < simulated.size(); ++i) s += std::fabs(relative_error(simulated[i], measured[i]));
  return simulated.empty() ? 0 : s / static_cast<double>(simulated.size());
}

std::vector<std::string> default_free_parameters(const Stack& base, const std::vector<Job>& jobs) {
  bool fp8 = false, half = false, flash = false;
  for (const Job& j : jobs) {
    fp8 = fp8 || j.training.fp8_format != Fp8Format::None;
    half = half || (j.training.params_dtype != DType::FP32 && j.training.fp8_format == Fp8Format::None);
    flash = flash || (uses_flash_attention(j.training.attention_backend) && base.efficiency.flash_supported);
  }
  std::vector<std::string> out;
  if (half) out.push_back("gemm.fraction_bf16");
  if (fp8) out.push_back("gemm.fraction_fp8");
  if (flash) out.push_back("attention.forward_fraction");
  out.push_back("launch_overhead_us");
  return out;
}

FitResult fit_stack(const Stack& base, const std::vector<Run>& runs, const std::vector<Job>& jobs,
                    const FitOptions& options) {
  TANDEM_CHECK_MSG(runs.size() == jobs.size(), "fit_stack: one job per run");
  for (const std::string& name : options.free)
    if (sim::find_parameter(base, name) == nullptr)
      throw UserError(field_message("--free", name, "not a parameter of stack " + base.name + " (parameters: " +
                                                        sim::parameter_names(base) + ")"));
  const size_t need = options.free.size() + 2;
  if (runs.size() < need)
    throw UserError(field_message("runs", std::to_string(runs.size()),
                                  "too few to fit " + std::to_string(options.free.size()) +
                                      " free parameters (need at least " + std::to_string(need) +
                                      ": one per parameter, one to check, one to hold out)"));
  Fitter f(base, runs, jobs, options);
  return f.run();
}

}  // namespace tandem::fit
