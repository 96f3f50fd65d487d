#include "core/schedule.h"

#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tandem {

const char* to_string(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return "Forward";
    case ActionKind::Backward: return "Backward";
    case ActionKind::BackwardWeight: return "BackwardWeight";
    case ActionKind::SendActivation: return "SendActivation";
    case ActionKind::RecvActivation: return "RecvActivation";
    case ActionKind::SendGradient: return "SendGradient";
    case ActionKind::RecvGradient: return "RecvGradient";
  }
  return "?";
}

char short_code(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return 'F';
    case ActionKind::Backward: return 'B';
    case ActionKind::BackwardWeight: return 'W';
    case ActionKind::SendActivation: return 's';
    case ActionKind::RecvActivation: return 'r';
    case ActionKind::SendGradient: return 'S';
    case ActionKind::RecvGradient: return 'R';
  }
  return '?';
}

bool is_compute(ActionKind kind) {
  return kind == ActionKind::Forward || kind == ActionKind::Backward ||
         kind == ActionKind::BackwardWeight;
}
bool is_send(ActionKind kind) {
  return kind == ActionKind::SendActivation || kind == ActionKind::SendGradient;
}
bool is_recv(ActionKind kind) {
  return kind == ActionKind::RecvActivation || kind == ActionKind::RecvGradient;
}

bool operator==(const Action& a, const Action& b) {
  return a.kind == b.kind && a.microbatch == b.microbatch && a.chunk == b.chunk &&
         a.stage == b.stage && a.peer == b.peer && a.peer_chunk == b.peer_chunk &&
         a.weight_deferred == b.weight_deferred && a.fused_with_next == b.fused_with_next;
}

// ---------------------------------------------------------------------------------------------
// Layouts

namespace {

StageLayout empty_layout(int ranks, int chunks, int stages, int microbatches, int num_paths) {
  TANDEM_CHECK_MSG(ranks >= 1 && chunks >= 1 && microbatches >= 1,
                   "ranks=" << ranks << " chunks=" << chunks << " microbatches=" << microbatches);
  StageLayout l;
  l.num_ranks = ranks;
  l.num_microbatches = microbatches;
  l.num_chunks = chunks;
  l.num_stages = stages;
  l.chunk_stage.assign(ranks, std::vector<int>(chunks, 0));
  l.paths.assign(num_paths, std::vector<StageLocation>(stages));
  l.microbatch_path.assign(microbatches, 0);
  return l;
}

}  // namespace

StageLayout linear_layout(int ranks, int microbatches) {
  return interleaved_layout(ranks, 1, microbatches);
}

StageLayout interleaved_layout(int ranks, int chunks, int microbatches) {
  StageLayout l = empty_layout(ranks, chunks, ranks * chunks, microbatches, 1);
  for (int s = 0; s < l.num_stages; ++s) {
    const StageLocation loc{s % ranks, s / ranks};
    l.paths[0][s] = loc;
    l.chunk_stage[loc.rank][loc.chunk] = s;
  }
  return l;
}

StageLayout v_layout(int ranks, int microbatches) {
  StageLayout l = empty_layout(ranks, 2, 2 * ranks, microbatches, 1);
  for (int s = 0; s < l.num_stages; ++s) {
    const StageLocation loc = s < ranks ? StageLocation{s, 0} : StageLocation{2 * ranks - 1 - s, 1};
    l.paths[0][s] = loc;
    l.chunk_stage[loc.rank][loc.chunk] = s;
  }
  return l;
}

StageLayout bidirectional_layout(int ranks, int microbatches) {
  StageLayout l = empty_layout(ranks, 2, ranks, microbatches, 2);
  for (int s = 0; s < ranks; ++s) {
    l.paths[0][s] = StageLocation{s, 0};
    l.paths[1][s] = StageLocation{ranks - 1 - s, 1};
    l.chunk_stage[s][0] = s;
    l.chunk_stage[ranks - 1 - s][1] = s;
  }
  for (int mb = 0; mb < microbatches; ++mb) l.microbatch_path[mb] = mb < microbatches / 2 ? 0 : 1;
  return l;
}

// ---------------------------------------------------------------------------------------------
// Schedule helpers

StageLocation Schedule::location(int microbatch, int stage) const {
  TANDEM_CHECK(microbatch >= 0 && microbatch < num_microbatches());
  TANDEM_CHECK(stage >= 0 && stage < num_stages());
  return layout.paths[layout.microbatch_path[microbatch]][stage];
}

double Schedule::parameter_share(int rank) const {
  double share = 0;
  for (int c = 0; c < num_chunks(); ++c) share += stage_work[stage_of(rank, c)];
  return share;
}

namespace {

// The communication a compute action implies on `rank`: receives before it, sends after it.
void implied_comms(const Schedule& s, int rank, const Action& a, std::vector<Action>& recvs,
                   std::vector<Action>& sends) {
  const int last = s.num_stages() - 1;
  auto peer_action = [&](ActionKind kind, int other_stage) {
    const StageLocation other = s.location(a.microbatch, other_stage);
    Action c{kind, a.microbatch, a.chunk, a.stage, other.rank, other.chunk, false, false};
    return std::pair<bool, Action>(other.rank != rank, c);
  };
  auto add = [](std::vector<Action>& out, const std::pair<bool, Action>& c) {
    if (c.first) out.push_back(c.second);
  };
  if (a.kind == ActionKind::Forward) {
    if (a.stage > 0) add(recvs, peer_action(ActionKind::RecvActivation, a.stage - 1));
    if (a.stage < last) add(sends, peer_action(ActionKind::SendActivation, a.stage + 1));
  } else if (a.kind == ActionKind::Backward) {
    if (a.stage < last) add(recvs, peer_action(ActionKind::RecvGradient, a.stage + 1));
    if (a.stage > 0) add(sends, peer_action(ActionKind::SendGradient, a.stage - 1));
  }
}

std::vector<Action> lower_rank(const Schedule& s, int rank, const std::vector<ComputeStep>& steps) {
  const int chunks = s.num_chunks();
  std::vector<char> has_weight(static_cast<size_t>(s.num_microbatches()) * chunks, 0);
  for (const ComputeStep& st : steps) {
    TANDEM_CHECK_MSG(is_compute(st.kind), "rank " << rank << ": " << to_string(st.kind));
    TANDEM_CHECK_MSG(st.microbatch >= 0 && st.microbatch < s.num_microbatches() &&
                         st.chunk >= 0 && st.chunk < chunks,
                     "rank " << rank << " mb " << st.microbatch << " chunk " << st.chunk);
    if (st.kind == ActionKind::BackwardWeight) has_weight[st.microbatch * chunks + st.chunk] = 1;
  }
  std::vector<Action> out;
  out.reserve(steps.size() * 2);
  size_t i = 0;
  while (i < steps.size()) {
    size_t end = i;  // the fused group is steps[i..end]
    while (end + 1 < steps.size() && steps[end].fused_with_next) ++end;
    std::vector<Action> group, recvs, sends;
    for (size_t k = i; k <= end; ++k) {
      const ComputeStep& st = steps[k];
      Action a{st.kind, st.microbatch, st.chunk, s.stage_of(rank, st.chunk), -1, -1, false,
               k < end};
      if (a.kind == ActionKind::Backward) a.weight_deferred = has_weight[a.microbatch * chunks + a.chunk];
      implied_comms(s, rank, a, recvs, sends);
      group.push_back(a);
    }
    out.insert(out.end(), recvs.begin(), recvs.end());
    out.insert(out.end(), group.begin(), group.end());
    out.insert(out.end(), sends.begin(), sends.end());
    i = end + 1;
  }
  return out;
}

}  // namespace

Schedule make_schedule(std::string name, StageLayout layout, const ComputeOrder& order) {
  TANDEM_CHECK_MSG(static_cast<int>(order.size()) == layout.num_ranks,
                   "order has " << order.size() << " ranks, layout " << layout.num_ranks);
  Schedule s;
  s.name = std::move(name);
  s.layout = std::move(layout);
  s.stage_work.assign(s.num_stages(), static_cast<double>(s.num_ranks()) / s.num_stages());
  s.actions.resize(s.num_ranks());
  for (int r = 0; r < s.num_ranks(); ++r) s.actions[r] = lower_rank(s, r, order[r]);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Layers

void assign_layers(Schedule& schedule, const std::vector<int>& layers_per_stage) {
  if (static_cast<int>(layers_per_stage.size()) != schedule.num_stages())
    throw_field_error("layers_per_stage", layers_per_stage.size(),
                      "needs one entry per stage (" + std::to_string(schedule.num_stages()) + ")");
  int total = 0;
  for (size_t s = 0; s < layers_per_stage.size(); ++s) {
    if (layers_per_stage[s] <= 0)
      throw_field_error("layers of stage " + std::to_string(s), layers_per_stage[s],
                        "every stage needs at least one layer");
    total += layers_per_stage[s];
  }
  schedule.stage_layers.clear();
  schedule.stage_work.clear();
  int begin = 0;
  for (int n : layers_per_stage) {
    schedule.stage_layers.push_back(LayerRange{begin, begin + n});
    schedule.stage_work.push_back(static_cast<double>(n) * schedule.num_ranks() / total);
    begin += n;
  }
}

std::vector<int> split_layers(int num_layers, int num_stages, int first_stage_layers,
                              int last_stage_layers) {
  if (num_stages < 1) throw_field_error("stages", num_stages, "must be at least 1");
  if (first_stage_layers < 0) throw_field_error("first stage layers", first_stage_layers, "must be >= 0");
  if (last_stage_layers < 0) throw_field_error("last stage layers", last_stage_layers, "must be >= 0");
  const bool first = first_stage_layers > 0, last = last_stage_layers > 0;
  const int middle_stages = num_stages - (first ? 1 : 0) - (last ? 1 : 0);
  if (middle_stages < 0 || (num_stages == 1 && (first || last)))
    throw_field_error("stages", num_stages, "too few stages for separate first and last stage layers");
  const int middle_layers = num_layers - first_stage_layers - last_stage_layers;
  if (middle_layers < 0 || (middle_stages == 0 && middle_layers != 0) ||
      (middle_stages > 0 && (middle_layers < middle_stages || middle_layers % middle_stages != 0)))
    throw_field_error("num_layers", num_layers,
                      "the " + std::to_string(middle_layers) + " layers left for the " +
                          std::to_string(middle_stages) + " middle stages do not split evenly");
  std::vector<int> out(num_stages, middle_stages > 0 ? middle_layers / middle_stages : 0);
  if (first) out.front() = first_stage_layers;
  if (last) out.back() = last_stage_layers;
  return out;
}

std::vector<int> accounted_split_layers(int num_layers, int num_stages, bool embedding, bool loss) {
  if (num_stages < 1) throw_field_error("stages", num_stages, "must be at least 1");
  const int units = num_layers + (embedding ? 1 : 0) + (loss ? 1 : 0);
  if (units % num_stages != 0 || units / num_stages < 1 + ((embedding || loss) && num_stages == 1 ? 1 : 0))
    throw_field_error("num_layers", num_layers,
                      "plus " + std::to_string(units - num_layers) + " (embedding/loss counted as layers) does not split evenly over " +
                          std::to_string(num_stages) + " virtual pipeline stages");
  std::vector<int> out(static_cast<size_t>(num_stages), units / num_stages);
  if (embedding) out.front() -= 1;
  if (loss) out.back() -= 1;
  return out;
}

std::vector<int> megatron_split_layers(int num_layers, int ranks, int chunks,
                                       int first_rank_layers, int last_rank_layers) {
  if (chunks < 1) throw_field_error("chunks", chunks, "must be at least 1");
  if (first_rank_layers % chunks != 0)
    throw_field_error("decoder_first_pipeline_num_layers", first_rank_layers,
                      "must divide evenly over " + std::to_string(chunks) + " chunks");
  if (last_rank_layers % chunks != 0)
    throw_field_error("decoder_last_pipeline_num_layers", last_rank_layers,
                      "must divide evenly over " + std::to_string(chunks) + " chunks");
  // Per rank first, then divided over the rank's chunks.
  const std::vector<int> per_rank =
      split_layers(num_layers, ranks, first_rank_layers, last_rank_layers);
  std::vector<int> out(static_cast<size_t>(ranks) * chunks);
  for (int r = 0; r < ranks; ++r) {
    if (per_rank[r] % chunks != 0 || per_rank[r] < chunks)
      throw_field_error("num_layers", num_layers,
                        "rank " + std::to_string(r) + " gets " + std::to_string(per_rank[r]) +
                            " layers, which do not split over " + std::to_string(chunks) + " chunks");
    for (int c = 0; c < chunks; ++c) out[c * ranks + r] = per_rank[r] / chunks;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Text and JSON

std::string describe(const Action& a) {
  std::ostringstream os;
  os << to_string(a.kind) << "(mb " << a.microbatch << ", chunk " << a.chunk << ", stage "
     << a.stage;
  if (a.kind == ActionKind::Backward && a.weight_deferred) os << ", input grad only";
  os << ")";
  if (is_send(a.kind)) os << " to rank " << a.peer;
  if (is_recv(a.kind)) os << " from rank " << a.peer;
  return os.str();
}

nlohmann::json schedule_to_json(const Schedule& s) {
  nlohmann::json j;
  j["name"] = s.name;
  j["num_ranks"] = s.num_ranks();
  j["num_microbatches"] = s.num_microbatches();
  j["num_chunks"] = s.num_chunks();
  j["num_stages"] = s.num_stages();
  j["chunk_stage"] = s.layout.chunk_stage;
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& path : s.layout.paths) {
    nlohmann::json p = nlohmann::json::array();
    for (const StageLocation& loc : path) p.push_back({{"rank", loc.rank}, {"chunk", loc.chunk}});
    paths.push_back(p);
  }
  j["paths"] = paths;
  j["microbatch_path"] = s.layout.microbatch_path;
  j["stage_work"] = s.stage_work;
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerRange& l : s.stage_layers) layers.push_back({l.begin, l.end});
  j["stage_layers"] = layers;
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& list : s.actions) {
    nlohmann::json r = nlohmann::json::array();
    for (const Action& a : list) {
      nlohmann::json x = {{"kind", to_string(a.kind)}, {"microbatch", a.microbatch},
                          {"chunk", a.chunk}, {"stage", a.stage}};
      if (!is_compute(a.kind)) {
        x["peer"] = a.peer;
        x["peer_chunk"] = a.peer_chunk;
      }
      if (a.kind == ActionKind::Backward) x["weight_deferred"] = a.weight_deferred;
      if (a.fused_with_next) x["fused_with_next"] = true;
      r.push_back(std::move(x));
    }
    ranks.push_back(std::move(r));
  }
  j["actions"] = ranks;
  return j;
}

}  // namespace tandem
