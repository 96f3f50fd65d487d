#include "schedules/analysis.h"

#include <algorithm>

#include "core/check.h"
#include "schedules/schedule_graph.h"
#include "schedules/validate.h"

namespace tandem {

double action_cost(const Schedule& s, const Action& a, const ActionCosts& c) {
  const double w = s.stage_work[a.stage];
  switch (a.kind) {
    case ActionKind::Forward: return c.forward * w;
    case ActionKind::Backward: return (a.weight_deferred ? c.backward : c.backward + c.weight) * w;
    case ActionKind::BackwardWeight: return c.weight * w;
    default: return 0;
  }
}

namespace {

// Index of the compute action fused with the compute action at `i` (the next compute action).
int fused_partner(const std::vector<Action>& list, int i) {
  for (int k = i + 1; k < static_cast<int>(list.size()); ++k)
    if (is_compute(list[k].kind)) return k;
  return -1;
}

// Kahn's order over the DAG (cheaper than a DFS topological sort on this graph shape).
std::vector<int> topological_order(const ScheduleGraph& g, const Schedule& s) {
  std::vector<char> executed;
  std::vector<int> order = executable_order(g, executed);
  if (static_cast<int>(order.size()) != g.num_nodes())
    throw_field_error("schedule", s.name,
                      "deadlocks (its dependency graph has a cycle); validate it for details");
  return order;
}

void summarize(const Schedule& s, ScheduleAnalysis& out) {
  const int ranks = s.num_ranks();
  double busy_total = 0, window_total = 0;
  for (int r = 0; r < ranks; ++r) {
    out.makespan = std::max(out.makespan, out.last_end[r]);
    busy_total += out.busy[r];
    window_total += std::max(0.0, out.last_end[r] - out.first_start[r]);
  }
  out.bubble_fraction = out.makespan > 0 ? 1 - busy_total / (ranks * out.makespan) : 0;
  out.interior_bubble_fraction = window_total > 0 ? 1 - busy_total / window_total : 0;
  std::vector<int> chunks;
  peak_activations(s, chunks, out.peak_activations);
  out.parameter_memory.resize(ranks);
  for (int r = 0; r < ranks; ++r) out.parameter_memory[r] = s.parameter_share(r);
}

}  // namespace

ScheduleAnalysis analyze_schedule(const Schedule& s, const ActionCosts& costs) {
  const ActionTable table(s);
  const ScheduleGraph g = build_schedule_graph(s, table);
  const std::vector<int> order = topological_order(g, s);
  const int n = g.num_nodes();
  std::vector<double> ready(n, 0.0), end(n, 0.0);
  std::vector<char> fused_second(n, 0);  // second action of a fused pair: runs with the first
  ScheduleAnalysis out;
  out.busy.assign(s.num_ranks(), 0.0);
  out.first_start.assign(s.num_ranks(), -1.0);
  out.last_end.assign(s.num_ranks(), 0.0);
  out.timing.resize(s.num_ranks());
  for (int r = 0; r < s.num_ranks(); ++r) out.timing[r].resize(s.actions[r].size());
  for (int u : order) {
    const ActionRef ref = g.ref(u);
    const auto& list = s.actions[ref.rank];
    const Action& a = list[ref.index];
    double start = ready[u], cost = action_cost(s, a, costs);
    if (fused_second[u]) {
      cost = 0;  // its time was charged to the first action of the pair
    } else if (a.fused_with_next) {
      const int k = fused_partner(list, ref.index);
      TANDEM_CHECK_MSG(k >= 0, "fused action without a partner on rank " << ref.rank);
      const double both = cost + action_cost(s, list[k], costs);
      const double pair_work = (s.stage_work[a.stage] + s.stage_work[list[k].stage]) / 2;
      fused_second[g.node(ref.rank, k)] = 1;
      cost = costs.overlapped ? *costs.overlapped * pair_work : both;
    }
    end[u] = start + cost;
    out.timing[ref.rank][ref.index] = ActionTiming{start, end[u]};
    if (is_compute(a.kind) && !fused_second[u]) {
      out.busy[ref.rank] += cost;
      if (out.first_start[ref.rank] < 0) out.first_start[ref.rank] = start;
      out.last_end[ref.rank] = std::max(out.last_end[ref.rank], end[u]);
    }
    const double latency = is_send(a.kind) ? costs.p2p_latency : 0.0;
    g.for_each_successor(u, [&](int v) {
      const bool message = g.node_rank[v] != ref.rank;
      ready[v] = std::max(ready[v], end[u] + (message ? latency : 0.0));
    });
  }
  // Display: split each fused window between its two actions in proportion to their costs.
  for (int r = 0; r < s.num_ranks(); ++r) {
    const auto& list = s.actions[r];
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      if (!list[i].fused_with_next) continue;
      const int k = fused_partner(list, i);
      ActionTiming& first = out.timing[r][i];
      const double c1 = action_cost(s, list[i], costs), c2 = action_cost(s, list[k], costs);
      const double mid = first.start + (first.end - first.start) * c1 / std::max(c1 + c2, 1e-300);
      out.timing[r][k] = ActionTiming{mid, first.end};
      first.end = mid;
    }
  }
  for (double& f : out.first_start) f = std::max(f, 0.0);
  summarize(s, out);
  return out;
}

}  // namespace tandem
