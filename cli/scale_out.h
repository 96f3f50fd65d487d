#pragma once
// Scale-out of the commands that run many simulations (sweep, plan) over the ranks of an MPI job:
//   mpirun -n K tandem sweep SPEC.json      mpirun -n K tandem plan ...
// Every rank reads the same input and does the same cheap work (parsing, enumeration, ranking);
// the simulations are split: rank r plays requests r, r + K, r + 2K, ... (each in forked children,
// --jobs at a time, as in one process), then every rank receives every outcome (MPI_Allgatherv of
// their text form, sim::outcome_to_text), so all ranks hold the same results and rank 0 alone
// prints and writes files. The outputs are those of a one-process run: results are deterministic
// and merged by request index. Started without an MPI launcher, it is one process and MPI is not
// initialised.
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "backends/sim/simulator.h"

namespace tandem::cpu {
class MpiSession;
}

namespace tandem::cli {

class ScaleOut {
 public:
  ScaleOut();   // initialises MPI when launched by mpirun/srun
  ~ScaleOut();
  ScaleOut(const ScaleOut&) = delete;
  ScaleOut& operator=(const ScaleOut&) = delete;

  int rank() const;
  int size() const;
  bool root() const { return rank() == 0; }

  // sim::simulate_each_in_subprocesses over all ranks; on_done counts this rank's finished ones
  // (scaled to the whole: done x size, capped). Collective: every rank calls it with the same
  // requests.
  std::vector<sim::SimOutcome> simulate_each(const std::vector<sim::SimRequest>& requests, int parallel,
                                             double timeout_s = 0, const std::function<void(size_t)>& on_done = {});
  // Sum of a count over the ranks (collective).
  size_t sum(size_t value) const;

 private:
  std::unique_ptr<cpu::MpiSession> session_;
};

}  // namespace tandem::cli
