#pragma once
// A deterministic derivative-free minimiser for a handful of bounded parameters: Nelder-Mead on
// the unit box (each parameter scaled to [0, 1] between its bounds; trial points are clamped to
// the box). No randomness: the same function and start give the same answer.
#include <functional>
#include <vector>

namespace tandem::fit {

struct MinimiseOptions {
  int max_evaluations = 2000;
  double tolerance = 1e-12;      // stop when the simplex's values differ by less (absolute)
  double initial_step = 0.1;     // simplex edge in unit-box coordinates
};

struct Minimum {
  std::vector<double> x;         // in the caller's coordinates, inside [lower, upper]
  double value = 0;
  int evaluations = 0;
};

// Minimises f over lower <= x <= upper from `start` (clamped into the box).
Minimum minimise(const std::function<double(const std::vector<double>&)>& f, std::vector<double> start,
                 const std::vector<double>& lower, const std::vector<double>& upper,
                 const MinimiseOptions& options = {});

}  // namespace tandem::fit
