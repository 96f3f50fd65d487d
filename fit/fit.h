#pragma once
// `tandem fit`: a software stack's free parameters fitted to measured runs.
//
// Objective: the mean absolute log error of the runs' figures, |ln(simulated / measured)|, over a
// handful of free parameters, each inside its bounds (the stack file's): close to the mean
// relative error for small errors, and not ruled by one outlier as a squared error would be.
// Errors are reported as relative errors (simulated / measured - 1) and their mean absolute value
// (MAPE).
//
// Speed: one full SimGrid simulation per run and candidate would cost hundreds of simulations per
// fit. The simulated iteration time is compute on the critical path (a GEMM's time scales with
// 1 / its main-loop fraction, attention with 1 / its fraction, launches add overhead x count), the
// pipeline bubble (other stages' compute) and exposed communication. So each run's time is taken
// as linear in x = 1 / value for fractions and efficiencies and in x = value for overheads and
// latencies, T(x) = T(c) + sum_i s_i (x_i - c_i). The slopes of compute parameters come from the
// centre simulation itself: the simulator re-times the critical rank's compute instructions with
// each parameter stepped (SimOptions::sensitivity_stacks) and the slope is that change in busy
// time, scaled by (compute + bubble) / busy. Communication parameters take one extra simulation
// per run with the parameter stepped. Runs with identical jobs (one layout published by several
// releases) are simulated once. The optimiser moves on these surrogates; the runs are simulated in
// full at the optimum, which is the next round's centre (`rounds` times), and every reported
// figure comes from full simulations at the fitted values: training error, and the held-out runs
// of each cross-validation fold (each fold fitted on the surrogates of its own training runs only).
// Deterministic: a fixed optimiser, simulations in input order, fitted values rounded to four
// significant digits before they are checked.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/sim/stack.h"
#include "fit/runs.h"

namespace tandem::fit {

using sim::Stack;
using sim::StackParameter;

struct FitOptions {
  std::vector<std::string> free;      // parameter names (stack.h); empty: the default free set
  int folds = 5;                      // k of the k-fold cross-validation (at most the run count)
  int rounds = 2;                     // surrogate rebuilds around the optimum
  int parallel = 2;                   // simulations run at once (forked processes)
  std::string name;                   // the fitted stack's name (default: the base stack's)
  std::string command;                // the command line, recorded in the stack
  std::vector<std::string> run_files; // recorded in the stack
  std::function<void(const std::string&)> progress;   // may be empty
};

struct ParameterFit {
  std::string name;
  double base = 0, prior = 0, fitted = 0, lower = 0, upper = 0;
};

struct RunFit {
  std::string label, family;
  Metric metric = Metric::IterationTime;
  double measured = 0;
  double base = 0;                    // simulated with the base stack
  double surrogate = 0;               // the surrogate's prediction at the fitted values
  double simulated = 0;               // full simulation at the fitted values
  double held_out_group = 0;          // simulated with the values fitted without the run's family (or the run)
  double held_out_fold = 0;           // simulated with the values fitted without the run's k-fold fold
};

struct FitResult {
  Stack stack;                        // the fitted stack (document included)
  std::string base;                   // name of the stack the fit started from
  std::vector<ParameterFit> parameters;
  std::vector<RunFit> runs;
  std::string group_kind;             // "leave-one-family-out" | "leave-one-out"
  int folds = 0;
  int simulations = 0;
  std::vector<std::string> surrogate_log;   // one line per round
};

// The parameters fitted when none are named: the GEMM and attention fractions the runs use, and
// the per-kernel launch overhead.
std::vector<std::string> default_free_parameters(const Stack& base, const std::vector<Job>& jobs);

// Checks the request (parameters exist, enough runs) and fits. UserError on bad input, before any
// simulation.
FitResult fit_stack(const Stack& base, const std::vector<Run>& runs, const std::vector<Job>& jobs,
                    const FitOptions& options);

double relative_error(double simulated, double measured);
double mape(const std::vector<double>& simulated, const std::vector<double>& measured);

// The report `tandem fit` prints; the fitted stack's document (fit record and fitted_by included).
std::string fit_report(const FitResult& result, const FitOptions& options);
nlohmann::json fitted_stack_document(const FitResult& result, const FitOptions& options);

}  // namespace tandem::fit
