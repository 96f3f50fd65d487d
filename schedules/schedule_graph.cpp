#include "schedules/schedule_graph.h"

#include <utility>

#include "core/check.h"

namespace tandem {

namespace {
constexpr int kKinds = 7;
}

ActionTable::ActionTable(const Schedule& s)
    : stages_(s.num_stages()), microbatches_(s.num_microbatches()) {
  nodes_.assign(static_cast<size_t>(kKinds) * microbatches_ * stages_, -1);
  int node = 0;
  for (const auto& list : s.actions) {
    for (const Action& a : list) {
      TANDEM_CHECK(a.microbatch >= 0 && a.microbatch < microbatches_ && a.stage >= 0 &&
                   a.stage < stages_);
      int& slot = nodes_[(static_cast<size_t>(a.kind) * microbatches_ + a.microbatch) * stages_ + a.stage];
      if (slot < 0) slot = node;
      else duplicates_.emplace_back(slot, node);
      ++node;
    }
  }
}

int ActionTable::find(ActionKind kind, int microbatch, int stage) const {
  if (microbatch < 0 || microbatch >= microbatches_ || stage < 0 || stage >= stages_) return -1;
  return nodes_[(static_cast<size_t>(kind) * microbatches_ + microbatch) * stages_ + stage];
}

void action_dependencies(const Schedule& s, const ActionTable& t, int rank, const Action& a,
                         int node, std::vector<int>& out) {
  out.clear();
  auto edge = [&](int from) {
    if (from >= 0 && from != node) out.push_back(from);
  };
  const int mb = a.microbatch, st = a.stage, last = s.num_stages() - 1;
  auto same_rank = [&](int stage) { return s.location(mb, stage).rank == rank; };
  switch (a.kind) {
    case ActionKind::Forward:
      if (st > 0)
        edge(same_rank(st - 1) ? t.find(ActionKind::Forward, mb, st - 1)
                               : t.find(ActionKind::RecvActivation, mb, st));
      break;
    case ActionKind::Backward:
      edge(t.find(ActionKind::Forward, mb, st));
      if (st < last)
        edge(same_rank(st + 1) ? t.find(ActionKind::Backward, mb, st + 1)
                               : t.find(ActionKind::RecvGradient, mb, st));
      break;
    case ActionKind::BackwardWeight: edge(t.find(ActionKind::Backward, mb, st)); break;
    case ActionKind::SendActivation: edge(t.find(ActionKind::Forward, mb, st)); break;
    case ActionKind::SendGradient: edge(t.find(ActionKind::Backward, mb, st)); break;
    case ActionKind::RecvActivation: edge(t.find(ActionKind::SendActivation, mb, st - 1)); break;
    case ActionKind::RecvGradient: edge(t.find(ActionKind::SendGradient, mb, st + 1)); break;
  }
}

ScheduleGraph build_schedule_graph(const Schedule& s, const ActionTable& table) {
  ScheduleGraph g;
  g.offset.assign(s.num_ranks() + 1, 0);
  for (int r = 0; r < s.num_ranks(); ++r)
    g.offset[r + 1] = g.offset[r] + static_cast<int>(s.actions[r].size());
  const int n = g.offset.back();
  g.node_rank.resize(n);
  g.program_pred.assign(n, -1);
  std::vector<std::pair<int, int>> edges;
  edges.reserve(static_cast<size_t>(n) * 3);
  std::vector<int> deps;
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const int u = g.node(r, i);
      g.node_rank[u] = r;
      if (i > 0) {
        g.program_pred[u] = u - 1;
        edges.emplace_back(u - 1, u);
      }
      action_dependencies(s, table, r, s.actions[r][i], u, deps);
      for (int d : deps) edges.emplace_back(d, u);
    }
  }
  g.graph = ScheduleGraph::Graph(boost::edges_are_unsorted_multi_pass, edges.begin(), edges.end(),
                                 static_cast<size_t>(n));
  return g;
}

std::vector<int> executable_order(const ScheduleGraph& g, std::vector<char>& executed) {
  const int n = g.num_nodes();
  std::vector<int> indegree(n, 0);
  for (int u = 0; u < n; ++u) g.for_each_successor(u, [&](int v) { ++indegree[v]; });
  std::vector<int> order;
  order.reserve(n);
  for (int u = 0; u < n; ++u)
    if (indegree[u] == 0) order.push_back(u);
  for (size_t head = 0; head < order.size(); ++head) {
    const int u = order[head];
    g.for_each_successor(u, [&](int v) {
      if (--indegree[v] == 0) order.push_back(v);
    });
  }
  executed.assign(n, 0);
  for (int u : order) executed[u] = 1;
  return order;
}

}  // namespace tandem
