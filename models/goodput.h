#pragma once
// Goodput of a long run under failures: checkpoint/restart with Poisson (exponential) interrupts.
//
// Notation of Daly 2006 ("A higher order estimate of the optimum checkpoint interval for restart
// dumps", Future Generation Computer Systems 22(3)): M the system's mean time between interrupts,
// delta the time to write one checkpoint, R the time to restart (re-queue, reload, warm up), tau
// the compute time between checkpoints, T_s the failure-free solve time. All times in seconds.
//   Young 1974:  tau = sqrt(2 delta M)
//   Daly 2006:   tau = sqrt(2 delta M) [1 + (1/3) sqrt(delta / 2M) + (1/9) (delta / 2M)] - delta
//                (delta < 2M; else tau = M)
//   Expected wall time (Daly's complete model): T_w = M e^{R/M} (e^{(tau + delta)/M} - 1) T_s / tau
// The effective training fraction is T_s / T_w. A system of independent components fails at the
// sum of their rates: 1/M = sum_i count_i / MTBF_i.
#include <cstdint>
#include <vector>

namespace tandem {

double young_interval(double delta_s, double mtbf_s);
double daly_interval(double delta_s, double mtbf_s);
double daly_wall_time(double solve_s, double tau_s, double delta_s, double restart_s, double mtbf_s);

// A component class of the system: how many there are and the MTBF of one (hours).
struct FailureComponent {
  double count = 0;
  double mtbf_hours = 0;
};
// The system's MTBF in seconds (UserError-free: components with count or MTBF <= 0 are skipped;
// +infinity when none fails).
double system_mtbf_s(const std::vector<FailureComponent>& components);

// Monte-Carlo replay of the same model: failures drawn from an exponential clock (also during a
// restart, as Daly's e^{R/M} term counts), each losing the work since the last checkpoint.
// Deterministic for a seed (own uniform draws from std::mt19937_64, no library distribution).
struct GoodputTrials {
  double mean_wall_s = 0;
  double p10_wall_s = 0, p50_wall_s = 0, p90_wall_s = 0;
  double mean_failures = 0;
  double mean_lost_s = 0;          // wall time - solve time
};
GoodputTrials simulate_goodput(double solve_s, double tau_s, double delta_s, double restart_s, double mtbf_s,
                               int trials, uint64_t seed);

}  // namespace tandem
