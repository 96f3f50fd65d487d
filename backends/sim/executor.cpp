// The executor's per-rank event loop (executor.h): streams, dependencies, windows of local work,
// the local clock, and the time breakdown of the compute stream.
#include "backends/sim/executor.h"

#include <algorithm>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>

#include <simgrid/s4u.hpp>

#include "backends/sim/executor_internal.h"
#include "core/check.h"
#include "schedules/analysis.h"

namespace tandem::sim {
namespace sg4 = simgrid::s4u;

namespace detail {

void add_to(Breakdown& b, Category category, double seconds) {
  switch (category) {
    case Category::Compute: b.compute += seconds; return;
    case Category::Tp: b.tp_comm += seconds; return;
    case Category::Cp: b.cp_comm += seconds; return;
    case Category::Ep: b.ep_comm += seconds; return;
    case Category::Pp: b.pp_comm += seconds; return;
    case Category::Dp: b.dp_comm += seconds; return;
    case Category::Bubble: b.pipeline_bubble += seconds; return;
    case Category::Optimizer: b.optimizer += seconds; return;
  }
}

Category compute_category(const Instruction& ins) {
  return ins.phase == Phase::Optimizer || ins.kind == OpKind::OptimizerStep ? Category::Optimizer : Category::Compute;
}

Category comm_category(const Instruction& ins) {
  if (ins.phase == Phase::Optimizer) return Category::Optimizer;  // e.g. the gradient-norm all-reduce
  if (ins.kind == OpKind::Send || ins.kind == OpKind::Recv)
    return ins.group == ParallelGroup::Cp ? Category::Cp : Category::Pp;
  switch (ins.group) {
    case ParallelGroup::Tp:
    case ParallelGroup::TpCp:
    case ParallelGroup::ExpertTp: return Category::Tp;
    case ParallelGroup::Cp: return Category::Cp;
    case ParallelGroup::Ep:
    case ParallelGroup::ExpertTpEp:
    case ParallelGroup::ExpertTpEpPp: return Category::Ep;
    case ParallelGroup::Pp: return Category::Pp;
    default: return Category::Dp;  // dp, dp-cp, tp-dp(-cp), expert dp, embedding, model-parallel
  }
}

// The category of what instruction i itself does.
Category own_category(const Instruction& x) {
  return is_communication(x.kind) ? comm_category(x) : is_compute(x.kind) ? compute_category(x) : Category::Bubble;
}

ProgramIndex index_program(const RankProgram& program, const ComputeTimeFn& compute_time,
                           const ComputeTimeFn& host_time) {
  const auto& ins = program.instructions;
  const size_t n = ins.size();
  ProgramIndex index;
  index.stream_prev.assign(n, -1);
  index.stream_next.assign(n, -1);
  index.seconds.assign(n, 0.0);
  index.host_seconds.assign(n, 0.0);
  index.dependent_begin.assign(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    const Instruction& x = ins[i];
    const auto s = static_cast<size_t>(x.stream);
    TANDEM_CHECK_MSG(s < kStreams, "rank " << program.rank << " instruction " << i << ": bad stream");
    if (!index.streams[s].empty()) {
      index.stream_prev[i] = index.streams[s].back();
      index.stream_next[static_cast<size_t>(index.streams[s].back())] = static_cast<int32_t>(i);
    }
    index.streams[s].push_back(static_cast<int32_t>(i));
    if (is_compute(x.kind)) {
      index.seconds[i] = compute_time(program, x);
      TANDEM_CHECK_MSG(index.seconds[i] >= 0, "negative compute time for rank " << program.rank << " instruction " << i);
      if (host_time) index.host_seconds[i] = host_time(program, x);
    }
    for (int32_t d : x.deps) {
      TANDEM_CHECK_MSG(d >= 0 && static_cast<size_t>(d) < i,
                       "rank " << program.rank << " instruction " << i << " depends on " << d << ", not an earlier one");
      ++index.dependent_begin[static_cast<size_t>(d) + 1];
    }
  }
  for (size_t i = 0; i < n; ++i) index.dependent_begin[i + 1] += index.dependent_begin[i];
  index.dependents.resize(static_cast<size_t>(index.dependent_begin[n]));
  std::vector<int32_t> fill(index.dependent_begin.begin(), index.dependent_begin.end() - 1);
  for (size_t i = 0; i < n; ++i)
    for (int32_t d : ins[i].deps) index.dependents[static_cast<size_t>(fill[static_cast<size_t>(d)]++)] = static_cast<int32_t>(i);
  return index;
}

RankPlayer::RankPlayer(Execution& execution, const RankProgram& program, int64_t rank, RankOutcome& outcome)
    : ex_(execution),
      prog_(program),
      ins_(program.instructions),
      out_(outcome),
      rank_(rank),
      index_(execution.index(program)),
      streams_(index_.streams) {
  const size_t n = ins_.size();
  state_.assign(n, kPending);
  start_.assign(n, 0.0);
  end_.assign(n, 0.0);
  last_issued_.fill(-1);
  out_.rank = rank_;
  if (!ex_.options.compute_speed.empty()) compute_speed_ = ex_.options.compute_speed.at(static_cast<size_t>(rank_));
  if (ex_.options.record_timeline) out_.timeline.assign(n, {});
}

int64_t RankPlayer::peer(int32_t i) {
  const int64_t p = ins_[static_cast<size_t>(i)].peer;
  if (prog_.rank == rank_ || p < 0) return p;
  auto [it, fresh] = peers_.try_emplace(p, 0);
  if (fresh) it->second = rename_peer(ex_.grid, prog_.rank, rank_, p);
  return it->second;
}

void RankPlayer::run() {
  issue_ready();
  while (!finished()) {
    if (!events_.empty() && events_.top().time <= now_) {
      process_due_events();
    } else if (waiting_.empty()) {
      if (events_.empty()) break;  // nothing can happen any more: reported by execute()
      now_ = events_.top().time;   // nothing in flight: jump ahead without SimGrid
      process_due_events();
    } else {
      wait_for_something();
    }
    issue_ready();
  }
  if (finished()) {
    out_.finish_s = now_;
    if (now_ > compute_free_at_ && last_finished_ >= 0) charge(last_finished_, compute_free_at_, now_);
  }
  // Ghost flows stand for other ranks' traffic: let them run out without moving this rank's finish.
  if (!ghosts_.empty()) sg4::Comm::wait_all(ghosts_);
  ghosts_.clear();
}

void RankPlayer::issue_ready() {
  bool again = true;
  // With SM contention modelled, communication streams go first so that a collective ready now
  // is in flight when the compute stream's next window is timed.
  const bool comm_first = ex_.options.comm_compute_slowdown != 1.0;
  while (again) {
    again = false;
    for (int k = 0; k < kStreams; ++k) {
      const int s = comm_first ? (k + 1) % kStreams : k;
      const auto su = static_cast<size_t>(s);
      while (!busy_[su] && head_[su] < streams_[su].size()) {
        const int32_t i = streams_[su][head_[su]];
        if (!deps_done(i)) break;
        issue(s, i);
        again = true;
      }
    }
  }
}

// True when SM contention is modelled and a network collective waits for instruction i.
bool RankPlayer::feeds_network_collective(int32_t i) {
  if (ex_.options.comm_compute_slowdown == 1.0) return false;
  const auto iu = static_cast<size_t>(i);
  for (int32_t k = index_.dependent_begin[iu]; k < index_.dependent_begin[iu + 1]; ++k) {
    const Instruction& x = ins_[static_cast<size_t>(index_.dependents[static_cast<size_t>(k)])];
    double unused = 0;
    if (is_collective(x.kind) && !analytic_seconds(x, &unused)) return true;
  }
  return false;
}

bool RankPlayer::deps_done(int32_t i) const {
  for (int32_t d : ins_[static_cast<size_t>(i)].deps)
    if (state_[static_cast<size_t>(d)] != kDone) return false;
  return true;
}

// The dep of i that finished last (first on ties), or -1.
int32_t RankPlayer::blocker(int32_t i) const {
  int32_t best = -1;
  for (int32_t d : ins_[static_cast<size_t>(i)].deps)
    if (best < 0 || end_[static_cast<size_t>(d)] > end_[static_cast<size_t>(best)]) best = d;
  return best;
}

// Seconds of instruction i when it is local work (compute, memory, a collective costed
// analytically); false for work that needs SimGrid flows.
bool RankPlayer::local_seconds(int32_t i, double* seconds) {
  const Instruction& x = ins_[static_cast<size_t>(i)];
  if (is_memory(x.kind)) {
    *seconds = 0;
    return true;
  }
  if (is_compute(x.kind)) {
    *seconds = compute_time(i) / compute_speed_;
    return true;
  }
  if (x.kind == OpKind::Send || x.kind == OpKind::Recv) return false;
  return analytic_seconds(x, seconds);
}

void RankPlayer::issue(int s, int32_t i) {
  double seconds = 0;
  if (local_seconds(i, &seconds)) return start_window(s, i);
  if (s == static_cast<int>(StreamKind::Compute) && now_ > compute_free_at_) {
    const int32_t b = blocker(i);
    if (b >= 0) charge(b, compute_free_at_, now_);
    else add_to(out_.breakdown, Category::Bubble, now_ - compute_free_at_);
    compute_free_at_ = now_;
  }
  start_communication(s, i);
}

// When stream s can take its next instruction inside a window: now when idle, the end of its
// last scheduled instruction, or never (a network operation in flight).
double RankPlayer::stream_available(int s) const {
  const auto su = static_cast<size_t>(s);
  if (!busy_[su]) return now_;
  if (in_flight_[su] > 0) return std::numeric_limits<double>::infinity();
  return end_[static_cast<size_t>(last_issued_[su])];  // scheduled work ends in stream order
}

// Schedules a window of local work starting with i, the head of stream s. From the compute
// stream, the window takes, in program order, every following instruction that is local work,
// next on its stream and whose deps are done or scheduled; it stops at the first compute-stream
// instruction that cannot join. Times come from the streams and deps (list scheduling), so they
// are what the event loop would give. Events fire at the end of each instruction that something
// outside the window waits for, and at the window's end.
void RankPlayer::start_window(int s, int32_t i) {
  const int32_t op = new_op(true);
  ops_[static_cast<size_t>(op)].start = now_;
  std::array<double, kStreams> available{};
  std::array<bool, kStreams> open{};
  for (int k = 0; k < kStreams; ++k) {
    available[static_cast<size_t>(k)] = stream_available(k);
    open[static_cast<size_t>(k)] = available[static_cast<size_t>(k)] < std::numeric_limits<double>::infinity();
  }
  const bool from_compute = s == static_cast<int>(StreamKind::Compute) && ex_.options.merge_local_work;
  const auto n = static_cast<int32_t>(ins_.size());
  for (int32_t j = i; j < n; ++j) {
    const Instruction& x = ins_[static_cast<size_t>(j)];
    const auto sj = static_cast<size_t>(x.stream);
    if (!open[sj] || state_[static_cast<size_t>(j)] != kPending) continue;
    double seconds = 0;
    bool joins = head_[sj] < streams_[sj].size() && streams_[sj][head_[sj]] == j && local_seconds(j, &seconds);
    double start = available[sj];
    for (size_t k = 0; joins && k < x.deps.size(); ++k) {
      const auto d = static_cast<size_t>(x.deps[k]);
      joins = state_[d] == kDone || state_[d] == kScheduled;
      start = std::max(start, end_[d]);
    }
    if (!joins) {
      if (sj == 0) break;
      open[sj] = false;
      continue;
    }
    if (is_collective(x.kind)) ++ex_.stats.analytic_collectives;
    if (is_compute(x.kind) && index_.host_seconds[static_cast<size_t>(j)] > 0) {
      // The host launches compute ops in program order, never waiting for the GPU: a kernel
      // starts once its launch is issued, which only delays it when the host has fallen behind.
      host_clock_ += index_.host_seconds[static_cast<size_t>(j)];
      start = std::max(start, host_clock_);
    }
    if (is_compute(x.kind) && net_collectives_ > 0 && start < net_busy_until_)
      seconds *= ex_.options.comm_compute_slowdown;
    state_[static_cast<size_t>(j)] = kScheduled;
    start_[static_cast<size_t>(j)] = start;
    end_[static_cast<size_t>(j)] = start + seconds;
    available[sj] = start + seconds;
    ++head_[sj];
    busy_[sj] = true;
    ++outstanding_[sj];
    last_issued_[sj] = j;
    ops_[static_cast<size_t>(op)].members.push_back(j);
    if (!from_compute) break;  // a window from another stream holds just its head
    if (feeds_network_collective(j)) break;  // it starts at j's end and slows what follows
  }
  Op& o = ops_[static_cast<size_t>(op)];
  std::stable_sort(o.members.begin(), o.members.end(), [this](int32_t a, int32_t b) {
    return end_[static_cast<size_t>(a)] < end_[static_cast<size_t>(b)];
  });
  event_times_.clear();
  for (int32_t m : o.members) {
    const auto mu = static_cast<size_t>(m);
    bool seen = index_.stream_next[mu] >= 0 && state_[static_cast<size_t>(index_.stream_next[mu])] != kScheduled;
    for (int32_t k = index_.dependent_begin[mu]; !seen && k < index_.dependent_begin[mu + 1]; ++k)
      seen = state_[static_cast<size_t>(index_.dependents[static_cast<size_t>(k)])] != kScheduled;
    if (seen) event_times_.push_back(end_[mu]);
  }
  const double last = end_[static_cast<size_t>(o.members.back())];
  for (size_t k = 0; k < event_times_.size(); ++k)
    if (event_times_[k] < last && (k == 0 || event_times_[k] != event_times_[k - 1])) schedule(op, event_times_[k]);
  schedule(op, last);
}

// What i waited for before it started: its stream predecessor or dep that finished last.
int32_t RankPlayer::cause(int32_t i) const {
  int32_t best = index_.stream_prev[static_cast<size_t>(i)];
  for (int32_t d : ins_[static_cast<size_t>(i)].deps)
    if (best < 0 || end_[static_cast<size_t>(d)] > end_[static_cast<size_t>(best)]) best = d;
  return best;
}

// Attributes the compute stream's idle time [from, to] to instruction b, which finished at `to`:
// b's own duration to what b is, the time before b started to what b waited for, and so on
// along the chain of causes.
void RankPlayer::charge(int32_t b, double from, double to) {
  for (int hops = 0; b >= 0 && to > from && hops < 1000; ++hops) {
    const double start = start_[static_cast<size_t>(b)];
    charge_own(b, std::max(from, start), to);
    if (start <= from) return;
    const int32_t c = cause(b);
    if (c < 0) break;
    const double cause_end = std::min(start, end_[static_cast<size_t>(c)]);
    charge_own(b, std::max(from, cause_end), start);  // issued late after its cause: b's own
    to = cause_end;
    b = c;
  }
  if (to > from) add_to(out_.breakdown, Category::Bubble, to - from);
}

// [from, to] within b's own run time. A pipeline receive splits into the transfer itself (pp)
// and the wait for the sender before it (bubble).
void RankPlayer::charge_own(int32_t b, double from, double to) {
  if (to <= from) return;
  const Instruction& x = ins_[static_cast<size_t>(b)];
  const Category c = own_category(x);
  if (auto started = all_started_.find(b); started != all_started_.end())
    out_.peer_wait_s += std::max(0.0, std::min(to, started->second) - from);
  auto it = x.kind == OpKind::Recv && c == Category::Pp ? transfer_start_.find(b) : transfer_start_.end();
  if (it != transfer_start_.end()) {
    const double split = std::clamp(it->second, from, to);
    add_to(out_.breakdown, Category::Bubble, split - from);
    add_to(out_.breakdown, Category::Pp, to - split);
    if (crosses_wan(b)) out_.wan_exposed_s += to - split;
    return;
  }
  add_to(out_.breakdown, c, to - from);
  if (is_communication(x.kind) && c != Category::Bubble && crosses_wan(b))  // not the wait for its members
    out_.wan_exposed_s += to - std::clamp(wan_transfer_start(b), from, to);
}

int32_t RankPlayer::new_op(bool local) {
  int32_t id;
  if (!free_ops_.empty()) {
    id = free_ops_.back();
    free_ops_.pop_back();
  } else {
    id = static_cast<int32_t>(ops_.size());
    ops_.emplace_back();
  }
  Op& o = ops_[static_cast<size_t>(id)];
  o.local = local;
  o.live = true;
  o.instruction = -1;
  o.start = now_;
  o.remaining = 0;
  o.ready = now_;
  o.floor = 0;
  o.members.clear();
  o.marked = 0;
  return id;
}

void RankPlayer::schedule(int32_t op, double time) { events_.push(Event{time, event_seq_++, op}); }

void RankPlayer::process_due_events() {
  while (!events_.empty() && events_.top().time <= now_) {
    const Event e = events_.top();
    events_.pop();
    Op& o = ops_[static_cast<size_t>(e.op)];
    if (!o.live) continue;  // a window already completed by an earlier event at the same time
    if (o.local) advance_window(e.op, e.time);
    else finish_network(e.op, e.time);
  }
}

// Marks done the window's instructions that end by `time`, in order of their ends.
void RankPlayer::advance_window(int32_t op, double time) {
  Op& o = ops_[static_cast<size_t>(op)];
  int64_t count = 0;
  while (o.marked < o.members.size() && end_[static_cast<size_t>(o.members[o.marked])] <= time) {
    const int32_t i = o.members[o.marked++];
    mark_done(i, start_[static_cast<size_t>(i)], end_[static_cast<size_t>(i)]);
    ++count;
  }
  ex_.instructions_done(count);
  if (o.marked == o.members.size()) {
    o.live = false;
    free_ops_.push_back(op);
  }
}

void RankPlayer::finish_network(int32_t op, double time) {
  Op& o = ops_[static_cast<size_t>(op)];
  const int32_t i = o.instruction;
  o.live = false;
  free_ops_.push_back(op);
  if (ins_[static_cast<size_t>(i)].kind == OpKind::Recv) note_recv_done(i);
  else note_collective_done(i);
  mark_done(i, start_[static_cast<size_t>(i)], time);
  ex_.instructions_done(1);
}

// Instruction i is done: bookkeeping, its stream, and the compute stream's time breakdown.
void RankPlayer::mark_done(int32_t i, double start, double end) {
  const auto iu = static_cast<size_t>(i);
  const Instruction& x = ins_[iu];
  const std::uint8_t state_before = state_[iu];
  state_[iu] = kDone;
  start_[iu] = start;
  end_[iu] = end;
  ++completed_;
  if (last_finished_ < 0 || end >= end_[static_cast<size_t>(last_finished_)]) last_finished_ = i;
  if (!out_.timeline.empty()) out_.timeline[iu] = {start, end};
  const auto s = static_cast<size_t>(x.stream);
  if (--outstanding_[s] == 0) busy_[s] = false;
  if (state_before == kInFlight) --in_flight_[s];
  if (state_before == kInFlight && is_collective(x.kind)) --net_collectives_;
  if (is_compute(x.kind)) out_.compute_s += end - start;
  if (x.stream != StreamKind::Compute) return;
  if (start > compute_free_at_) {  // idle before it (network operations charged theirs at issue)
    const int32_t b = blocker(i);
    if (b >= 0) charge(b, compute_free_at_, start);
    else add_to(out_.breakdown, Category::Bubble, start - compute_free_at_);
  }
  if (is_compute(x.kind)) add_to(out_.breakdown, compute_category(x), end - start);
  else if (is_communication(x.kind)) charge(i, std::max(start, compute_free_at_), end);
  compute_free_at_ = std::max(compute_free_at_, end);
}

void RankPlayer::wait_for_something() {
  const double timeout = events_.empty() ? -1.0 : events_.top().time - now_;
  const ssize_t k = sg4::Activity::wait_any_for(waiting_, timeout);
  if (k < 0) {
    now_ = events_.top().time;
    return process_due_events();
  }
  now_ = std::max(now_, sg4::Engine::get_clock());
  const auto ku = static_cast<size_t>(k);
  const auto [op, delay] = waiting_for_[ku];
  waiting_[ku] = std::move(waiting_.back());
  waiting_.pop_back();
  waiting_for_[ku] = waiting_for_.back();
  waiting_for_.pop_back();
  Op& o = ops_[static_cast<size_t>(op)];
  o.ready = std::max(o.ready, now_ + delay);
  if (--o.remaining == 0) schedule(op, std::max(o.ready, o.floor));
}

void RankPlayer::sync_clock() {
  if (sg4::Engine::get_clock() < now_) sg4::this_actor::sleep_until(now_);
}

std::string RankPlayer::where_stuck() const {
  std::ostringstream os;
  os << "rank " << rank_ << " finished " << completed_ << " of " << ins_.size() << " instructions;";
  for (int s = 0; s < kStreams; ++s) {
    const auto su = static_cast<size_t>(s);
    if (!busy_[su] && head_[su] >= streams_[su].size()) continue;
    const int32_t i = busy_[su] ? last_issued_[su] : streams_[su][head_[su]];
    const Instruction& x = ins_[static_cast<size_t>(i)];
    os << " stream " << to_string(static_cast<StreamKind>(s)) << (busy_[su] ? " in " : " waits before ") << i << " ("
       << to_string(x.kind) << " " << to_string(x.site);
    if (x.peer >= 0) os << " peer " << x.peer;
    os << ")";
  }
  return os.str();
}

}  // namespace detail

int64_t rename_peer(const ParallelGrid& grid, int64_t program_rank, int64_t rank, int64_t peer) {
  const DenseCoord from = grid.dense_coord(program_rank);
  const DenseCoord to = grid.dense_coord(rank);
  DenseCoord p = grid.dense_coord(peer);
  auto shift = [](int64_t value, int64_t delta, int64_t size) { return ((value + delta) % size + size) % size; };
  p.tp = shift(p.tp, to.tp - from.tp, grid.tp_size());
  p.cp = shift(p.cp, to.cp - from.cp, grid.cp_size());
  p.dp = shift(p.dp, to.dp - from.dp, grid.dp_size());
  return grid.dense_rank(p);
}

ExecutionResult execute(Platform& platform, Collectives& collectives, const ParallelGrid& grid,
                        const std::vector<PlayedRank>& played, const ReplicaLayout& layout,
                        const ExecutorOptions& options) {
  TANDEM_CHECK_MSG(static_cast<bool>(options.compute_time), "ExecutorOptions::compute_time is required");
  TANDEM_CHECK_MSG(played.size() == layout.played.size(),
                   played.size() << " programs for " << layout.played.size() << " played ranks");
  int64_t total = 0;
  for (const PlayedRank& p : played) {
    TANDEM_CHECK_MSG(p.program != nullptr, "rank " << p.rank << " has no program");
    TANDEM_CHECK_MSG(p.rank >= 0 && p.rank < grid.world_size() && layout.copy[static_cast<size_t>(p.rank)] == 0,
                     "rank " << p.rank << " is not played");
    TANDEM_CHECK_MSG(grid.dense_coord(p.rank).pp == grid.dense_coord(p.program->rank).pp,
                     "rank " << p.rank << " cannot play the program of rank " << p.program->rank);
    total += static_cast<int64_t>(p.program->instructions.size());
  }
  detail::Execution execution(platform, collectives, grid, layout, options, total);
  execution.collect_played_links(played);
  ExecutionResult result;
  result.ranks.resize(played.size());
  std::vector<std::unique_ptr<detail::RankPlayer>> players;
  for (size_t r = 0; r < played.size(); ++r) {
    players.push_back(
        std::make_unique<detail::RankPlayer>(execution, *played[r].program, played[r].rank, result.ranks[r]));
    detail::RankPlayer* player = players.back().get();
    const sg4::ActorPtr actor = sg4::Actor::create("rank" + std::to_string(played[r].rank),
                                                   platform.host(played[r].rank), [player] { player->run(); });
    execution.actors[played[r].rank] = actor.get();
  }
  platform.run();
  for (const auto& player : players) TANDEM_CHECK_MSG(player->finished(), "deadlock: " << player->where_stuck());
  for (size_t r = 0; r < result.ranks.size(); ++r) {
    if (result.ranks[r].finish_s > result.makespan_s) {
      result.makespan_s = result.ranks[r].finish_s;
      result.critical = r;
    }
  }
  result.stats = execution.stats;
  result.stats.instructions = total;
  result.wan = execution.wan_traffic(played);
  return result;
}

ExecutionResult execute(Platform& platform, Collectives& collectives, const ParallelGrid& grid,
                        const std::vector<RankProgram>& programs, const ReplicaLayout& layout,
                        const ExecutorOptions& options) {
  std::vector<PlayedRank> played;
  for (const RankProgram& p : programs) played.push_back({p.rank, &p});
  return execute(platform, collectives, grid, played, layout, options);
}

ComputeTimeFn unit_cost_time(const Schedule& schedule, const std::vector<RankProgram>& programs, double forward,
                             double backward, double weight) {
  ActionCosts costs;
  costs.forward = forward;
  costs.backward = backward;
  costs.weight = weight;
  using Key = std::tuple<int64_t, int, int, int>;  // (rank, microbatch, chunk, phase)
  auto phase_of = [](ActionKind kind) {
    return static_cast<int>(kind == ActionKind::Forward    ? Phase::Forward
                            : kind == ActionKind::Backward ? Phase::Backward
                                                           : Phase::WeightGrad);
  };
  std::map<Key, double> per_instruction;
  for (const RankProgram& p : programs) {
    std::map<Key, int> count;
    for (const Instruction& x : p.instructions)
      if (is_compute(x.kind)) ++count[{p.rank, x.microbatch, x.chunk, static_cast<int>(x.phase)}];
    for (const Action& a : schedule.actions[static_cast<size_t>(p.pipeline_rank)]) {
      if (!is_compute(a.kind)) continue;
      const Key key{p.rank, a.microbatch, a.chunk, phase_of(a.kind)};
      auto it = count.find(key);
      if (it != count.end()) per_instruction[key] = action_cost(schedule, a, costs) / it->second;
    }
  }
  return [table = std::move(per_instruction)](const RankProgram& p, const Instruction& x) {
    auto it = table.find({p.rank, x.microbatch, x.chunk, static_cast<int>(x.phase)});
    return it == table.end() ? 0.0 : it->second;
  };
}

}  // namespace tandem::sim
