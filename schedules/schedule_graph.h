#pragma once
// The cross-rank dependency DAG of a schedule (Boost.Graph, compressed sparse row).
// Node u = offset[rank] + index of the action in schedule.actions[rank]. Edges:
//   program order   each action -> the next action on its rank (a rank executes in order);
//   message         SendActivation/SendGradient -> the matching receive on the peer;
//   data            producer -> consumer on the same rank: Forward(s-1) or RecvActivation(s) ->
//                   Forward(s); Forward(s) and Backward(s+1) or RecvGradient(s) -> Backward(s);
//                   Backward -> BackwardWeight; Forward -> SendActivation; Backward -> SendGradient.
// A dependency whose producer is absent adds no edge (validation reports the missing action).
// With eager sends and blocking receives, the schedule deadlocks iff this graph has a cycle.
#include <vector>

#include <boost/graph/compressed_sparse_row_graph.hpp>

#include "core/schedule.h"

namespace tandem {

struct ActionRef {
  int rank = 0;
  int index = 0;  // position in schedule.actions[rank]
};

// Dense lookup (kind, microbatch, stage) -> first node with that key, -1 when absent.
// Keys: compute actions and receives by their own stage; sends by the sending stage.
class ActionTable {
 public:
  explicit ActionTable(const Schedule& schedule);
  int find(ActionKind kind, int microbatch, int stage) const;
  // Pairs (first node, later node) of actions with the same key.
  const std::vector<std::pair<int, int>>& duplicates() const { return duplicates_; }

 private:
  int stages_ = 0, microbatches_ = 0;
  std::vector<int> nodes_;  // [kind][microbatch][stage]
  std::vector<std::pair<int, int>> duplicates_;
};

struct ScheduleGraph {
  using Graph = boost::compressed_sparse_row_graph<boost::directedS>;
  Graph graph;
  std::vector<int> offset;          // [rank] first node; offset[num_ranks] = node count
  std::vector<int> node_rank;       // [node] rank
  std::vector<int> program_pred;    // [node] previous action on the rank, -1 for the first

  int num_nodes() const { return offset.back(); }
  // Calls f(v) for every edge u -> v.
  template <typename F>
  void for_each_successor(int u, F&& f) const {
    auto [it, last] = boost::out_edges(static_cast<Graph::vertex_descriptor>(u), graph);
    for (; it != last; ++it) f(static_cast<int>(boost::target(*it, graph)));
  }
  int node(int rank, int index) const { return offset[rank] + index; }
  ActionRef ref(int node) const { return ActionRef{node_rank[node], node - offset[node_rank[node]]}; }
};

// Nodes that must finish before action `a` (node `node` on `rank`) may start, apart from the
// previous action on the rank: its data producer and, for receives, the matching send.
void action_dependencies(const Schedule& schedule, const ActionTable& table, int rank,
                         const Action& a, int node, std::vector<int>& out);

// Requires ids in range (validate_schedule checks them first). O(actions).
ScheduleGraph build_schedule_graph(const Schedule& schedule, const ActionTable& table);

// Kahn's algorithm over the graph: executed[node] = 1 for every node that can run, i.e. all
// when the schedule is deadlock-free. Returns the nodes in an execution (topological) order.
std::vector<int> executable_order(const ScheduleGraph& g, std::vector<char>& executed);

}  // namespace tandem
