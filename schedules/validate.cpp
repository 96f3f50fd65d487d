#include "schedules/validate.h"

#include <algorithm>
#include <sstream>

#include <boost/graph/strong_components.hpp>

#include "schedules/message_order.h"
#include "schedules/schedule_graph.h"

namespace tandem {

const char* to_string(IssueKind kind) {
  switch (kind) {
    case IssueKind::Structure: return "structure";
    case IssueKind::MissingWork: return "missing work";
    case IssueKind::DuplicateWork: return "duplicate work";
    case IssueKind::UnmatchedComm: return "unmatched communication";
    case IssueKind::Deadlock: return "deadlock";
    case IssueKind::MessageOrder: return "message order";
  }
  return "?";
}

std::string ValidationReport::summary(size_t max_lines) const {
  std::ostringstream os;
  size_t shown = 0;
  const size_t total = errors.size() + warnings.size();
  auto emit = [&](const std::vector<ValidationIssue>& list, const char* level) {
    for (const ValidationIssue& i : list) {
      if (shown == max_lines) return;
      os << level << " (" << to_string(i.kind) << "): " << i.message << "\n";
      ++shown;
    }
  };
  emit(errors, "error");
  emit(warnings, "warning");
  if (total > shown) os << "... and " << total - shown << " more\n";
  return os.str();
}

namespace {

// "rank 2, action #7 Forward(mb 3, chunk 1, stage 5)"
std::string at(const Schedule& s, int rank, int index) {
  return "rank " + std::to_string(rank) + ", action #" + std::to_string(index) + " " +
         describe(s.actions[rank][index]);
}

struct Reporter {
  const Schedule& s;
  ValidationReport& report;
  void error(IssueKind kind, int rank, int index, int mb, std::string message) {
    report.errors.push_back(ValidationIssue{kind, rank, index, mb, std::move(message)});
  }
  void action_error(IssueKind kind, int rank, int index, const std::string& what) {
    error(kind, rank, index, s.actions[rank][index].microbatch, at(s, rank, index) + ": " + what);
  }
};

bool check_layout(const Schedule& s, Reporter& rep) {
  const StageLayout& l = s.layout;
  auto bad = [&](const std::string& what) {
    rep.error(IssueKind::Structure, -1, -1, -1, "layout: " + what);
    return false;
  };
  if (l.num_ranks < 1 || l.num_chunks < 1 || l.num_stages < 1 || l.num_microbatches < 1)
    return bad("ranks, chunks, stages and microbatches must all be >= 1");
  if (static_cast<int>(s.actions.size()) != l.num_ranks)
    return bad("actions has " + std::to_string(s.actions.size()) + " ranks, layout " +
               std::to_string(l.num_ranks));
  if (static_cast<int>(l.chunk_stage.size()) != l.num_ranks ||
      static_cast<int>(l.microbatch_path.size()) != l.num_microbatches || l.paths.empty() ||
      static_cast<int>(s.stage_work.size()) != l.num_stages)
    return bad("chunk_stage, microbatch_path, paths or stage_work has the wrong size");
  for (int mb = 0; mb < l.num_microbatches; ++mb)
    if (l.microbatch_path[mb] < 0 || l.microbatch_path[mb] >= static_cast<int>(l.paths.size()))
      return bad("microbatch " + std::to_string(mb) + " uses an unknown path");
  for (size_t p = 0; p < l.paths.size(); ++p) {
    if (static_cast<int>(l.paths[p].size()) != l.num_stages) return bad("path has the wrong length");
    for (int st = 0; st < l.num_stages; ++st) {
      const StageLocation loc = l.paths[p][st];
      if (loc.rank < 0 || loc.rank >= l.num_ranks || loc.chunk < 0 || loc.chunk >= l.num_chunks ||
          static_cast<int>(l.chunk_stage[loc.rank].size()) != l.num_chunks ||
          l.chunk_stage[loc.rank][loc.chunk] != st)
        return bad("path " + std::to_string(p) + " puts stage " + std::to_string(st) +
                   " on rank " + std::to_string(loc.rank) + " chunk " + std::to_string(loc.chunk) +
                   ", which does not hold it");
    }
  }
  return true;
}

// Ids in range and stage consistent with the chunk; returns false when the graph cannot be built.
bool check_ids(const Schedule& s, Reporter& rep) {
  bool ok = true;
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const Action& a = s.actions[r][i];
      std::string what;
      if (a.microbatch < 0 || a.microbatch >= s.num_microbatches()) what = "microbatch out of range";
      else if (a.chunk < 0 || a.chunk >= s.num_chunks()) what = "chunk out of range";
      else if (a.stage != s.stage_of(r, a.chunk))
        what = "chunk " + std::to_string(a.chunk) + " of this rank holds stage " +
               std::to_string(s.stage_of(r, a.chunk));
      else if (!is_compute(a.kind) && (a.peer < 0 || a.peer >= s.num_ranks()))
        what = "peer rank out of range";
      if (!what.empty()) {
        rep.action_error(IssueKind::Structure, r, i, what);
        ok = false;
      }
    }
  }
  return ok;
}

// The neighbouring stage a communication action talks to, or -1 when there is none.
int comm_neighbour_stage(const Schedule& s, const Action& a) {
  const int st = a.stage, last = s.num_stages() - 1;
  switch (a.kind) {
    case ActionKind::SendActivation: return st < last ? st + 1 : -1;
    case ActionKind::RecvActivation: return st > 0 ? st - 1 : -1;
    case ActionKind::SendGradient: return st > 0 ? st - 1 : -1;
    case ActionKind::RecvGradient: return st < last ? st + 1 : -1;
    default: return -1;
  }
}

void check_placement(const Schedule& s, Reporter& rep) {
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const Action& a = s.actions[r][i];
      const StageLocation home = s.location(a.microbatch, a.stage);
      if (home.rank != r || home.chunk != a.chunk) {
        rep.action_error(IssueKind::Structure, r, i,
                         "microbatch " + std::to_string(a.microbatch) + " computes stage " +
                             std::to_string(a.stage) + " on rank " + std::to_string(home.rank) +
                             " chunk " + std::to_string(home.chunk) + ", not here");
        continue;
      }
      if (is_compute(a.kind)) continue;
      const int other = comm_neighbour_stage(s, a);
      if (other < 0) {
        rep.action_error(IssueKind::UnmatchedComm, r, i, "stage " + std::to_string(a.stage) +
                                                             " has no neighbour in this direction");
        continue;
      }
      const StageLocation peer = s.location(a.microbatch, other);
      if (peer.rank == r)
        rep.action_error(IssueKind::UnmatchedComm, r, i,
                         "stage " + std::to_string(other) + " is on the same rank; no message is needed");
      else if (peer.rank != a.peer || peer.chunk != a.peer_chunk)
        rep.action_error(IssueKind::UnmatchedComm, r, i,
                         "the peer is rank " + std::to_string(peer.rank) + " chunk " +
                             std::to_string(peer.chunk) + ", not rank " + std::to_string(a.peer) +
                             " chunk " + std::to_string(a.peer_chunk));
    }
  }
}

void check_duplicates(const Schedule& s, const ScheduleGraph& g, const ActionTable& t, Reporter& rep) {
  for (auto [first, dup] : t.duplicates()) {
    const ActionRef a = g.ref(first), b = g.ref(dup);
    const bool compute = is_compute(s.actions[b.rank][b.index].kind);
    rep.action_error(compute ? IssueKind::DuplicateWork : IssueKind::UnmatchedComm, b.rank, b.index,
                     "duplicate of rank " + std::to_string(a.rank) + ", action #" +
                         std::to_string(a.index));
  }
}


// Every (microbatch, stage) needs one Forward and one Backward where its path puts it, and one
// BackwardWeight exactly when that Backward defers it.
void check_work(const Schedule& s, const ScheduleGraph& g, const ActionTable& t, Reporter& rep) {
  for (int mb = 0; mb < s.num_microbatches(); ++mb) {
    for (int st = 0; st < s.num_stages(); ++st) {
      const StageLocation home = s.location(mb, st);
      auto missing = [&](const char* what, const std::string& why) {
        rep.error(IssueKind::MissingWork, home.rank, -1, mb,
                  std::string("rank ") + std::to_string(home.rank) + ": missing " + what +
                      " of microbatch " + std::to_string(mb) + " at stage " + std::to_string(st) +
                      " (chunk " + std::to_string(home.chunk) + ")" + why);
      };
      if (t.find(ActionKind::Forward, mb, st) < 0) missing("Forward", "");
      const int b = t.find(ActionKind::Backward, mb, st);
      const int w = t.find(ActionKind::BackwardWeight, mb, st);
      if (b < 0) {
        missing("Backward", "");
        continue;
      }
      const ActionRef br = g.ref(b);
      const bool deferred = s.actions[br.rank][br.index].weight_deferred;
      if (deferred && w < 0) missing("BackwardWeight", ", which its Backward defers");
      if (!deferred && w >= 0) {
        const ActionRef wr = g.ref(w);
        rep.action_error(IssueKind::DuplicateWork, wr.rank, wr.index,
                         "the Backward at rank " + std::to_string(br.rank) + ", action #" +
                             std::to_string(br.index) + " already computes the weight gradient");
      }
    }
  }
}

// Every stage boundary that crosses ranks needs a send and a receive in both directions.
void check_comms(const Schedule& s, const ScheduleGraph& g, const ActionTable& t, Reporter& rep) {
  auto pair = [&](ActionKind send_kind, int send_stage, ActionKind recv_kind, int recv_stage, int mb) {
    const int send = t.find(send_kind, mb, send_stage), recv = t.find(recv_kind, mb, recv_stage);
    if (send >= 0 && recv < 0) {
      const ActionRef a = g.ref(send);
      rep.action_error(IssueKind::UnmatchedComm, a.rank, a.index,
                       "rank " + std::to_string(s.actions[a.rank][a.index].peer) +
                           " never receives it");
    } else if (send < 0 && recv >= 0) {
      const ActionRef a = g.ref(recv);
      rep.action_error(IssueKind::UnmatchedComm, a.rank, a.index,
                       "rank " + std::to_string(s.actions[a.rank][a.index].peer) + " never sends it");
    } else if (send < 0 && recv < 0) {
      const StageLocation to = s.location(mb, recv_stage);
      rep.error(IssueKind::UnmatchedComm, to.rank, -1, mb,
                "rank " + std::to_string(to.rank) + ": no " + to_string(recv_kind) + " / " +
                    to_string(send_kind) + " pair carries microbatch " + std::to_string(mb) +
                    " from stage " + std::to_string(send_stage) + " to stage " +
                    std::to_string(recv_stage));
    }
  };
  for (int mb = 0; mb < s.num_microbatches(); ++mb) {
    for (int st = 0; st + 1 < s.num_stages(); ++st) {
      if (s.location(mb, st).rank == s.location(mb, st + 1).rank) continue;
      pair(ActionKind::SendActivation, st, ActionKind::RecvActivation, st + 1, mb);
      pair(ActionKind::SendGradient, st + 1, ActionKind::RecvGradient, st, mb);
    }
  }
}

// One dependency cycle, shown by its cross-rank hops: "a -> b" means a must finish before b.
std::string describe_cycle(const Schedule& s, const ScheduleGraph& g) {
  std::vector<int> component(g.num_nodes());
  boost::strong_components(g.graph, boost::make_iterator_property_map(
                                        component.begin(), boost::get(boost::vertex_index, g.graph)));
  std::vector<int> size(g.num_nodes(), 0);
  for (int c : component) ++size[c];
  int start = -1;
  for (int u = 0; u < g.num_nodes() && start < 0; ++u)
    if (size[component[u]] > 1) start = u;
  if (start < 0) return "";
  // Walk inside the component until a node repeats; the repeated stretch is a cycle.
  std::vector<int> walk, seen(g.num_nodes(), -1);
  int u = start;
  while (seen[u] < 0) {
    seen[u] = static_cast<int>(walk.size());
    walk.push_back(u);
    int next = u;
    g.for_each_successor(u, [&](int v) {
      if (next == u && v != u && component[v] == component[u]) next = v;
    });
    u = next;
  }
  std::vector<int> cycle(walk.begin() + seen[u], walk.end());
  std::ostringstream os;
  int shown = 0;
  for (size_t k = 0; k < cycle.size(); ++k) {
    const int a = cycle[k], b = cycle[(k + 1) % cycle.size()];
    if (g.node_rank[a] == g.node_rank[b]) continue;
    const ActionRef ra = g.ref(a), rb = g.ref(b);
    if (shown++ == 8) { os << " ..."; break; }
    os << (shown > 1 ? "; " : "") << "rank " << ra.rank << " #" << ra.index << " "
       << describe(s.actions[ra.rank][ra.index]) << " -> rank " << rb.rank << " #" << rb.index
       << " " << describe(s.actions[rb.rank][rb.index]);
  }
  if (shown == 0) {
    const ActionRef ra = g.ref(cycle.front());
    os << "on rank " << ra.rank << " around action #" << ra.index << " "
       << describe(s.actions[ra.rank][ra.index]);
  }
  return os.str();
}

// Runs the schedule with blocking receives; each rank that cannot finish is reported at the
// action where it blocks, with the action it waits for.
void check_deadlock(const Schedule& s, const ScheduleGraph& g, const ActionTable& t, Reporter& rep) {
  std::vector<char> done;
  executable_order(g, done);
  if (std::all_of(done.begin(), done.end(), [](char c) { return c != 0; })) return;
  std::vector<int> blocked(s.num_ranks(), -1);  // first node that cannot run, per rank
  for (int r = 0; r < s.num_ranks(); ++r)
    for (int u = g.offset[r]; u < g.offset[r + 1] && blocked[r] < 0; ++u)
      if (!done[u]) blocked[r] = u;
  std::vector<int> deps;
  for (int r = 0; r < s.num_ranks(); ++r) {
    if (blocked[r] < 0) continue;
    const ActionRef me = g.ref(blocked[r]);
    const Action& a = s.actions[r][me.index];
    action_dependencies(s, t, r, a, blocked[r], deps);
    std::string why = "it cannot start";
    for (int d : deps) {
      if (done[d]) continue;
      const ActionRef w = g.ref(d);
      if (w.rank == r) {
        why = "it needs this rank's action #" + std::to_string(w.index) + " " +
              describe(s.actions[r][w.index]) + ", which is ordered after it";
      } else {
        const ActionRef wb = g.ref(blocked[w.rank]);
        why = "it waits for rank " + std::to_string(w.rank) + ", action #" + std::to_string(w.index) +
              " " + describe(s.actions[w.rank][w.index]) + ", which never runs (rank " +
              std::to_string(w.rank) + " blocks at action #" + std::to_string(wb.index) + ")";
      }
      break;
    }
    rep.action_error(IssueKind::Deadlock, r, me.index, "deadlock: rank blocks here; " + why);
  }
  const std::string cycle = describe_cycle(s, g);
  if (!cycle.empty()) rep.error(IssueKind::Deadlock, -1, -1, -1, "dependency cycle: " + cycle);
}

// Messages between two ranks received in another order than sent (message_order.h): harmless
// with tagged point-to-point (MPI), but a backend that matches by order (NCCL) must reorder.
void check_message_order(const Schedule& s, ValidationReport& report) {
  for (const MessageChannel& c : out_of_order_channels(s)) {
    report.warnings.push_back(ValidationIssue{
        IssueKind::MessageOrder, c.receiver, c.recv_action, s.actions[c.receiver][c.recv_action].microbatch,
        at(s, c.receiver, c.recv_action) + ": is message " + std::to_string(c.position) + " from rank " +
            std::to_string(c.sender) + ", which sends " + describe(s.actions[c.sender][c.send_action]) +
            " at that position"});
  }
}

}  // namespace

void peak_activations(const Schedule& s, std::vector<int>& chunks, std::vector<double>& weighted) {
  chunks.assign(s.num_ranks(), 0);
  weighted.assign(s.num_ranks(), 0.0);
  for (int r = 0; r < s.num_ranks(); ++r) {
    int live = 0;
    double live_w = 0;
    for (const Action& a : s.actions[r]) {
      const double w = s.stage_work[a.stage];
      if (a.kind == ActionKind::Forward) {
        ++live;
        live_w += w;
      } else if (a.kind == ActionKind::BackwardWeight ||
                 (a.kind == ActionKind::Backward && !a.weight_deferred)) {
        --live;
        live_w -= w;
      }
      chunks[r] = std::max(chunks[r], live);
      weighted[r] = std::max(weighted[r], live_w);
    }
  }
}

ValidationReport validate_schedule(const Schedule& s) {
  ValidationReport report;
  Reporter rep{s, report};
  if (!check_layout(s, rep) || !check_ids(s, rep)) return report;
  check_placement(s, rep);
  const ActionTable table(s);
  const ScheduleGraph graph = build_schedule_graph(s, table);
  check_duplicates(s, graph, table, rep);
  check_work(s, graph, table, rep);
  check_comms(s, graph, table, rep);
  check_deadlock(s, graph, table, rep);
  check_message_order(s, report);
  peak_activations(s, report.peak_live_chunks, report.peak_activations);
  return report;
}

}  // namespace tandem
