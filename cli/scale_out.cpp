// ScaleOut (scale_out.h).
#include "cli/scale_out.h"

#include <algorithm>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/cpu/mpi_comm.h"
#include "backends/mpi_control/mpi_control.h"
#include "core/check.h"

namespace tandem::cli {

ScaleOut::ScaleOut() {
  if (cpu::MpiSession::launched_by_mpi()) session_ = std::make_unique<cpu::MpiSession>();
}

ScaleOut::~ScaleOut() = default;

int ScaleOut::rank() const { return session_ ? session_->rank() : 0; }
int ScaleOut::size() const { return session_ ? session_->size() : 1; }

std::vector<sim::SimOutcome> ScaleOut::simulate_each(const std::vector<sim::SimRequest>& requests, int parallel,
                                                     double timeout_s, const std::function<void(size_t)>& on_done) {
  if (size() == 1) return sim::simulate_each_in_subprocesses(requests, parallel, timeout_s, on_done);
  const auto k = static_cast<size_t>(size());
  std::vector<sim::SimRequest> mine;
  for (size_t i = static_cast<size_t>(rank()); i < requests.size(); i += k) mine.push_back(requests[i]);
  const auto scaled = [&](size_t done) {
    if (on_done) on_done(std::min(requests.size(), done * k));
  };
  const std::vector<sim::SimOutcome> played = sim::simulate_each_in_subprocesses(mine, parallel, timeout_s, scaled);
  // One text per rank: its outcomes, in its order, as a JSON array of their text forms.
  nlohmann::json texts = nlohmann::json::array();
  for (const sim::SimOutcome& o : played) texts.push_back(sim::outcome_to_text(o));
  const std::vector<std::string> gathered = mpi::all_gather_text(texts.dump());
  std::vector<sim::SimOutcome> out(requests.size());
  for (size_t r = 0; r < gathered.size(); ++r) {
    const nlohmann::json from = nlohmann::json::parse(gathered[r]);
    for (size_t j = 0; j < from.size(); ++j) {
      const size_t index = r + j * k;
      TANDEM_CHECK_MSG(index < out.size(), "scale-out: rank " << r << " sent more outcomes than it owns");
      out[index] = sim::outcome_from_text(from[j].get<std::string>());
    }
  }
  return out;
}

size_t ScaleOut::sum(size_t value) const {
  if (size() == 1) return value;
  const double v = static_cast<double>(value);
  return static_cast<size_t>(mpi::world_sum({&v, 1}).at(0) + 0.5);
}

}  // namespace tandem::cli
