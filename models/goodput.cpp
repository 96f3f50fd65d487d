// Checkpoint/restart goodput (formulas in goodput.h).
#include "models/goodput.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace tandem {
namespace {

// Uniform in (0, 1] from 53 random bits: the same numbers on every standard library.
double uniform(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53; }

double exponential(std::mt19937_64& rng, double mean) { return -mean * std::log(uniform(rng)); }

// One run: wall time and failures.
std::pair<double, int64_t> one_run(std::mt19937_64& rng, double solve_s, double tau_s, double delta_s,
                                   double restart_s, double mtbf_s) {
  double wall = 0, done = 0;
  int64_t failures = 0;
  const auto restart = [&] {   // a restart can itself be interrupted
    for (;;) {
      const double f = exponential(rng, mtbf_s);
      if (f >= restart_s) {
        wall += restart_s;
        return;
      }
      wall += f;
      ++failures;
    }
  };
  while (done < solve_s) {
    const double work = std::min(tau_s, solve_s - done);
    const double segment = work + delta_s;
    const double f = exponential(rng, mtbf_s);
    if (f >= segment) {
      wall += segment;
      done += work;
      continue;
    }
    wall += f;   // the segment's work is lost
    ++failures;
    restart();
  }
  return {wall, failures};
}

}  // namespace

double young_interval(double delta_s, double mtbf_s) { return std::sqrt(2.0 * delta_s * mtbf_s); }

double daly_interval(double delta_s, double mtbf_s) {
  if (delta_s >= 2.0 * mtbf_s) return mtbf_s;
  const double x = delta_s / (2.0 * mtbf_s);
  return std::sqrt(2.0 * delta_s * mtbf_s) * (1.0 + std::sqrt(x) / 3.0 + x / 9.0) - delta_s;
}

double daly_wall_time(double solve_s, double tau_s, double delta_s, double restart_s, double mtbf_s) {
  if (!std::isfinite(mtbf_s)) return solve_s * (tau_s + delta_s) / tau_s;
  return mtbf_s * std::exp(restart_s / mtbf_s) * std::expm1((tau_s + delta_s) / mtbf_s) * solve_s / tau_s;
}

double system_mtbf_s(const std::vector<FailureComponent>& components) {
  double rate = 0;   // failures per hour
  for (const FailureComponent& c : components)
    if (c.count > 0 && c.mtbf_hours > 0) rate += c.count / c.mtbf_hours;
  return rate > 0 ? 3600.0 / rate : std::numeric_limits<double>::infinity();
}

GoodputTrials simulate_goodput(double solve_s, double tau_s, double delta_s, double restart_s, double mtbf_s,
                               int trials, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> walls;
  GoodputTrials out;
  for (int t = 0; t < trials; ++t) {
    const auto [wall, failures] = one_run(rng, solve_s, tau_s, delta_s, restart_s, mtbf_s);
    walls.push_back(wall);
    out.mean_wall_s += wall;
    out.mean_failures += static_cast<double>(failures);
  }
  if (trials <= 0) return out;
  out.mean_wall_s /= trials;
  out.mean_failures /= trials;
  out.mean_lost_s = out.mean_wall_s - solve_s;
  std::sort(walls.begin(), walls.end());
  const auto at = [&](double q) { return walls[static_cast<size_t>(q * (walls.size() - 1) + 0.5)]; };
  out.p10_wall_s = at(0.1);
  out.p50_wall_s = at(0.5);
  out.p90_wall_s = at(0.9);
  return out;
}

}  // namespace tandem
