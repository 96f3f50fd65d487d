#pragma once
// Internals of the executor (executor.h), shared by executor.cpp (the per-rank event loop) and
// executor_comm.cpp (communication: groups, plans, rendezvous, ghost flows). Not a public API.
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include <simgrid/forward.h>

#include "backends/sim/executor.h"

namespace tandem::sim::detail {

inline constexpr int kStreams = 7;  // StreamKind values

// What a stretch of the compute stream's time is attributed to (Breakdown fields).
enum class Category : std::uint8_t { Compute, Tp, Cp, Ep, Pp, Dp, Bubble, Optimizer };
void add_to(Breakdown& breakdown, Category category, double seconds);
Category compute_category(const Instruction& ins);
Category comm_category(const Instruction& ins);

// What the executor derives once per program (shared by the ranks that play it).
struct ProgramIndex {
  std::array<std::vector<int32_t>, kStreams> streams;  // instruction indices per stream, in order
  std::vector<int32_t> stream_prev; // [i] previous instruction of i's stream, -1 for the first
  std::vector<int32_t> stream_next; // [i] next instruction of i's stream, -1 for the last
  std::vector<int32_t> dependent_begin;  // [i] .. [i + 1]: range of `dependents` listing i's dependents
  std::vector<int32_t> dependents;
  std::vector<double> seconds;      // [i] compute instructions: ExecutorOptions::compute_time; else 0
  std::vector<double> host_seconds; // [i] compute instructions: ExecutorOptions::host_time; else 0
};
ProgramIndex index_program(const RankProgram& program, const ComputeTimeFn& compute_time,
                           const ComputeTimeFn& host_time = {});

// A flow started one-sided (Comm::sendto) for a group that is not played whole.
struct OneSidedFlow {
  int64_t src = 0;
  int64_t dst = 0;
  double unit_bytes = 0;  // bytes per byte of the collective's buffer
  bool wait = false;      // the starting rank waits for it (it touches that rank)
};

struct PlanInfo;

// A process group seen by the executor.
struct GroupInfo {
  uint64_t key = 0;                // (kind, group index)
  ParallelGroup kind = ParallelGroup::Tp;
  Group group;                     // name "<kind>#<index>", members = GPUs = ranks
  bool intra_node = false;         // every member on one node
  bool spans_dcs = false;          // members in more than one datacenter
  Algorithm algorithm = Algorithm::Ring;  // of its collectives across nodes (Execution::group)
  bool all_played = true;
  std::vector<char> played;        // [member]
  std::unordered_map<int64_t, int> member;  // rank -> member index
  std::array<PlanInfo*, 4> plans{};          // by PlanKind, once built
};

// Costs and flows of one collective kind on one group, per byte of its buffer.
struct PlanInfo {
  double latency = 0;              // s, charged after the flows
  double seconds_per_byte = 0;     // uncontended bandwidth time per buffer byte
  // The least time per buffer byte a member of a group not played whole takes: seconds_per_byte,
  // but for an all-to-all the busiest link's bytes over its bandwidth (a member's buffer is spread
  // over its NVLink and NIC, not sent whole over the narrowest route).
  double floor_seconds_per_byte = 0;
  std::vector<std::vector<OneSidedFlow>> starts;  // [member] group not played whole
  std::vector<OneSidedFlow> images;               // group played whole: its flows in other copies
};

// A message between two ranks, matched by tag per (src, dst, channel).
struct Message {
  double send_posted = -1, recv_posted = -1;  // s
  double bytes = 0;
};

// Collective kinds as PlanInfo keys (CollectiveKind plus all-to-all).
enum class PlanKind : std::uint8_t { AllReduce, ReduceScatter, AllGather, AllToAll };

// State shared by the actors of one execution. SimGrid runs actors one at a time, so plain
// containers are safe.
class Execution {
 public:
  Execution(Platform& platform, Collectives& collectives, const ParallelGrid& grid, const ReplicaLayout& layout,
            const ExecutorOptions& options, int64_t total_instructions);

  Platform& platform;
  Collectives& collectives;
  const ParallelGrid& grid;
  const ReplicaLayout& layout;
  const ExecutorOptions& options;
  ExecutionStats stats;

  const ProgramIndex& index(const RankProgram& program);
  GroupInfo& group(int64_t rank, ParallelGroup kind);
  PlanInfo& plan(GroupInfo& group, PlanKind kind);
  bool is_played(int64_t rank) const;
  // True when a ghost flow from a to b may meet other traffic (GhostTraffic policy, tiers).
  bool ghost_wanted(int64_t a, int64_t b) const;
  std::vector<const simgrid::s4u::Link*> shared_links(int64_t a, int64_t b) const;  // sorted
  bool ghost_meets(int64_t a, int64_t b) const;
  void collect_played_links(const std::vector<PlayedRank>& played);
  // Image pairs (src', dst') in copies >= 1 of a message src -> dst that want a ghost flow.
  const std::vector<std::pair<int64_t, int64_t>>& message_images(int64_t src, int64_t dst);

  Message& message(int64_t src, int64_t dst, int channel, int64_t seq);
  void forget_message(int64_t src, int64_t dst, int channel, int64_t seq);
  // Counts an arrival at the seq-th collective of a group of `size` members; true for the last.
  bool arrive(uint64_t group_key, int64_t seq, size_t size);
  // A member started the seq-th collective of a group played whole at `time` (s).
  void note_start(uint64_t group_key, int64_t seq, double time);
  // When the last of the group's `size` members that had started it by now started it (s); each
  // member asks once, when its part is done. A ring member is done once its neighbours have
  // started, so members further away may not have started yet: they did not hold it up.
  double last_start(uint64_t group_key, int64_t seq, size_t size);
  // The latest time a played member started the seq-th collective of a group (s); members raise it.
  double& last_start(uint64_t group_key, int64_t seq) { return last_starts_[group_key][seq]; }

  void instructions_done(int64_t count);

  // Bytes every rank (played or not, each running its class program) sends across datacenters in
  // the iteration: its Sends to peers in another datacenter and its share of the flows of
  // collectives on groups that span datacenters (executor.h, WanTraffic).
  WanTraffic wan_traffic(const std::vector<PlayedRank>& played);

  // The actor playing each played rank (buffered point-to-point messages name their receiver).
  std::unordered_map<int64_t, simgrid::s4u::Actor*> actors;

  // What member `i` of g sends to each member of an all-to-all, per byte of its buffer: an even
  // split, members on other nodes scaled by ExecutorOptions::ep_remote_share (expert groups).
  std::vector<double> all_to_all_shares(const GroupInfo& g, size_t i) const;
 private:
  std::vector<Flow> unit_flows(const GroupInfo& g, PlanKind kind, double* latency, double* seconds_per_byte);
  // Uncontended time per buffer byte of a group's flows: max over links of their bytes / bandwidth.
  double busiest_link_seconds_per_byte(const GroupInfo& g, const std::vector<Flow>& flows) const;
  void add_images(PlanInfo& info, const std::vector<int64_t>& gpus, const std::vector<Flow>& flows);
  void add_starts(PlanInfo& info, const GroupInfo& group, const std::vector<Flow>& flows);

  struct MessageKey {
    int64_t src, dst, seq;
    int channel;
    bool operator==(const MessageKey&) const = default;
  };
  struct MessageKeyHash {
    size_t operator()(const MessageKey& k) const;
  };

  std::unordered_map<const RankProgram*, std::unique_ptr<ProgramIndex>> indexes_;
  std::vector<const simgrid::s4u::Link*> played_links_;  // sorted: links the played ranks' flows cross
  std::unordered_map<uint64_t, std::unique_ptr<GroupInfo>> groups_;    // (kind, index)
  std::unordered_map<uint64_t, GroupInfo*> rank_groups_;                // (rank, kind)
  std::unordered_map<std::string, std::unique_ptr<PlanInfo>> plans_;   // group name | kind
  std::unordered_map<uint64_t, std::vector<std::pair<int64_t, int64_t>>> message_images_;
  std::unordered_map<MessageKey, Message, MessageKeyHash> messages_;
  std::unordered_map<uint64_t, std::unordered_map<int64_t, size_t>> arrivals_;  // group -> seq -> count
  struct Starts {
    double latest = 0;  // s
    size_t started = 0;
    size_t asked = 0;
    size_t size = 0;    // members, once one asked
  };
  std::unordered_map<uint64_t, std::unordered_map<int64_t, Starts>> starts_;    // group -> seq
  std::unordered_map<uint64_t, std::unordered_map<int64_t, double>> last_starts_;  // groups spanning datacenters
  int64_t total_instructions_ = 0;
  int64_t done_instructions_ = 0;
  int64_t next_check_ = 0;
  std::chrono::steady_clock::time_point last_report_;
};

// One played rank: the actor body and its event loop (executor.cpp), its communication
// (executor_comm.cpp).
class RankPlayer {
 public:
  RankPlayer(Execution& execution, const RankProgram& program, int64_t rank, RankOutcome& outcome);
  void run();  // the actor body
  bool finished() const { return completed_ == static_cast<int64_t>(ins_.size()); }
  std::string where_stuck() const;

 private:
  // Instruction states. Scheduled: local work whose start and end are fixed but that other
  // instructions cannot see yet; it becomes done at one of its window's events.
  enum : std::uint8_t { kPending, kScheduled, kInFlight, kDone };

  // An operation in flight: a window of local work (scheduled instructions, marked done in
  // order of their end times at the window's events) or a network operation (one instruction).
  struct Op {
    bool local = false;
    bool live = false;
    int32_t instruction = -1;  // network: the instruction
    double start = 0;          // s
    int remaining = 0;         // network: communications not finished
    double ready = 0;          // s, network: max over finished comms of finish + latency
    double floor = 0;          // s, network: not done before (uncontended bandwidth time)
    std::vector<int32_t> members;  // local: instructions by end time
    size_t marked = 0;             // local: members already done
  };
  struct Event {
    double time;
    uint64_t seq;
    int32_t op;
    bool operator>(const Event& o) const { return time != o.time ? time > o.time : seq > o.seq; }
  };

  // executor.cpp
  void issue_ready();
  bool deps_done(int32_t i) const;
  bool feeds_network_collective(int32_t i);
  int32_t blocker(int32_t i) const;
  void issue(int stream, int32_t i);
  void start_window(int stream, int32_t i);
  bool local_seconds(int32_t i, double* seconds);
  double stream_available(int stream) const;
  int32_t cause(int32_t b) const;
  void charge(int32_t b, double from, double to);
  void charge_own(int32_t b, double from, double to);
  void schedule(int32_t op, double time);
  int32_t new_op(bool local);
  void advance_window(int32_t op, double time);
  void finish_network(int32_t op, double time);
  void mark_done(int32_t i, double start, double end);
  void process_due_events();
  void wait_for_something();
  void sync_clock();

  double compute_time(int32_t i) const { return index_.seconds[static_cast<size_t>(i)]; }
  int64_t peer(int32_t i);  // Send/Recv peer of instruction i, renamed for this rank

  // executor_comm.cpp
  bool analytic_seconds(const Instruction& x, double* seconds);  // collectives costed without flows
  void start_communication(int stream, int32_t i);
  void start_network(int stream, int32_t i);
  void start_p2p(int stream, int32_t i, int32_t op);
  void start_collective(int stream, int32_t i, int32_t op);
  void start_played_collective(GroupInfo& g, PlanKind kind, int32_t op, const Instruction& x);
  void start_partial_collective(GroupInfo& g, PlanKind kind, int32_t op, const Instruction& x);
  void wait_on(int32_t op, const simgrid::s4u::CommPtr& comm, double delay);
  void ghost(int64_t src, int64_t dst, double bytes);
  bool crosses_wan(int32_t i);  // communication i has flows between datacenters
  double wan_transfer_start(int32_t i);  // s, when i's exchange across datacenters could begin
  void note_recv_done(int32_t i);
  void note_collective_done(int32_t i);

  Execution& ex_;
  const RankProgram& prog_;
  const std::vector<Instruction>& ins_;
  RankOutcome& out_;
  int64_t rank_ = 0;

  const ProgramIndex& index_;
  const std::array<std::vector<int32_t>, kStreams>& streams_;  // index_.streams
  std::array<size_t, kStreams> head_{};       // next instruction to issue, per stream
  std::array<bool, kStreams> busy_{};         // some issued instruction of the stream is not done
  std::array<int, kStreams> outstanding_{};   // issued or scheduled, not done
  std::array<int, kStreams> in_flight_{};     // network operations among them
  int net_collectives_ = 0;                   // network collectives in flight (SM contention)
  double net_busy_until_ = 0;                 // s, their latest uncontended finish
  std::array<int32_t, kStreams> last_issued_;  // per stream, -1 before the first
  std::vector<std::uint8_t> state_;  // [i]
  std::vector<double> start_;      // [i] s, once scheduled or issued
  std::vector<double> end_;        // [i] s, once scheduled or done
  std::unordered_map<int64_t, int64_t> peers_;  // program's peer -> this rank's
  std::unordered_map<int32_t, double> transfer_start_;  // Recv -> s when both sides had posted
  std::unordered_map<int32_t, std::array<int64_t, 2>> recv_key_;  // Recv -> (channel, seq)
  std::unordered_map<int32_t, int64_t> collective_seq_;  // collective played whole -> its seq on the group
  std::unordered_map<int32_t, double> all_started_;      // such a collective, once done -> last member's start (s)
  std::unordered_map<int32_t, std::pair<uint64_t, int64_t>> wan_collective_;  // -> (group key, seq)
  int64_t completed_ = 0;
  int32_t last_finished_ = -1;
  double now_ = 0;                 // local clock (s), >= SimGrid's

  std::vector<Op> ops_;
  std::vector<int32_t> free_ops_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t event_seq_ = 0;
  std::vector<simgrid::s4u::ActivityPtr> waiting_;
  std::vector<std::pair<int32_t, double>> waiting_for_;  // [waiting_ index] (op, latency after it)
  std::vector<simgrid::s4u::CommPtr> ghosts_;
  std::unordered_map<uint64_t, int64_t> seq_;            // (peer or group, channel) -> count
  void* sink_ = nullptr;                                  // where zero-byte receives store their token
  std::vector<double> event_times_;                       // scratch for start_window

  double compute_free_at_ = 0;     // s, when the compute stream last became idle
  double host_clock_ = 0;          // s, when the host has issued the kernels of every compute op so far
  double compute_speed_ = 1.0;     // this rank's GPU: compute instructions take compute_time / compute_speed_
};

}  // namespace tandem::sim::detail
