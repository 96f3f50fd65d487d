#pragma once
// The executor: plays per-rank programs (program/program.h) on the simulated platform, one
// SimGrid actor per played rank.
//
// Each actor walks its rank's instructions with the stream model of program.h: an instruction
// starts when the previous instruction of its stream has finished and all its deps have finished.
//
// Where time comes from
//   compute, Alloc/Free        local arithmetic: ExecutorOptions::compute_time seconds (memory: 0).
//   collectives in one node    analytic (NVSwitch is non-blocking): the plan's latency + bandwidth
//                              time from collectives.h, without flows (ExecutorOptions::
//                              analytic_intra_node). Members do not wait for each other.
//   collectives across nodes,  SimGrid flows (collectives.h): shared max-min over the links they
//   Send / Recv                cross, then the algorithm's latency.
// An actor keeps a local clock that may run ahead of SimGrid's while it has no flow in flight:
// local work costs no SimGrid activity, and the actor synchronises (sleep_until) before it starts
// a flow. So only network operations are SimGrid activities.
// Windows: when the compute stream can go on, the actor schedules at once the chain of local work
// that follows in program order (on any stream: compute, memory, analytic collectives) as far as
// its inputs are known, by list scheduling; the window's instructions become visible to the rest
// at events placed only where something outside the window waits for them. Times are those of
// playing each instruction on its own (ExecutorOptions::merge_local_work = false checks it).
//
// Symmetry reduction (ReplicaLayout): only the ranks of one block are played (by default the
// data-parallel replica dp = 0, widened until the expert-parallel groups of its ranks are
// complete); the other ranks are `copies` - 1 shifted images of that block along dp.
//   - A group whose members are all played runs as in the faithful mode (mailbox rendezvous).
//     The same group in every other copy sends the same flows at the same time: the member that
//     completes the group's arrivals starts those image flows ("ghost flows") one-sided.
//   - A group that spans copies (data-parallel groups) is played one-sided by its played members:
//     each starts its own out-flows and its in-flows from unplayed members, and waits for them
//     (never less than the plan's uncontended bandwidth time); the flows among unplayed members
//     are started as ghosts by the played member of the sender's image.
//   - Point-to-point messages start their image flows in every copy when both sides have posted.
// Ghost flows are started only where they can slow a played flow (GhostTraffic::Shared): with one
// NIC per GPU only oversubscribed leaf/pod uplinks and WAN links are shared, and a ghost is kept
// when its route shares such a link with a flow of the played ranks. Ghosts that would only meet
// other ghosts are left out (a second-order effect); GhostTraffic::All keeps every one.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/sim/collectives.h"
#include "backends/sim/simulator.h"
#include "core/parallel_grid.h"
#include "program/program.h"

namespace tandem::sim {

// Seconds one compute instruction of `program` takes on its GPU.
using ComputeTimeFn = std::function<double(const RankProgram& program, const Instruction&)>;

// Which flows of unplayed ranks are started as ghost flows.
enum class GhostTraffic : std::uint8_t {
  Shared,  // those whose route crosses a link that other ranks' flows share (default)
  All,     // every one (slow at scale; for checking Shared)
  None,    // none: unplayed ranks add no traffic
};

struct ExecutorOptions {
  ComputeTimeFn compute_time;               // required: GPU seconds of a compute instruction
  // Host seconds to launch a compute instruction's kernels (empty: none). The host issues compute
  // instructions in program order without waiting for the GPU; one starts no earlier than its
  // launch is done (a host clock per rank).
  ComputeTimeFn host_time;
  bool free_communication = false;          // every communication takes 0 s; sends are eager
  bool analytic_intra_node = true;          // collectives inside one node are costed analytically
  // Share of an expert-parallel all-to-all's bytes to members on other nodes that crosses the
  // network: node-limited routing sends a token once to each node it reaches and fans it out over
  // NVLink there (DeepSeek-V3 section 3.2.2), group_topk / topk of its copies; 1 otherwise.
  double ep_remote_share = 1.0;
  // Collectives across nodes; data-parallel groups (dp, dp-cp, tp-dp(-cp), expert dp) spanning
  // datacenters use Algorithm::DatacenterHierarchical instead.
  Algorithm algorithm = Algorithm::Ring;
  GhostTraffic ghosts = GhostTraffic::Shared;
  bool record_timeline = false;             // keep start/end of every instruction (traces)
  // Schedule chains of local work as one window (same times, far fewer events); false plays
  // every local instruction on its own, for checking.
  bool merge_local_work = true;
  // Called now and then with (fraction of instructions done, message).
  std::function<void(double, const std::string&)> progress;
  // Compute time factor (>= 1) while a collective crosses the network from this rank: NCCL's
  // kernels hold SMs (one CTA per channel) for the whole collective, so overlapped compute runs
  // on the rest (GPU kind's file, "communication": "nccl_sm_fraction"). Applied to compute
  // instructions that start before the collective's uncontended finish; approximate.
  double comm_compute_slowdown = 1.0;
  // The schedule receives some messages in another order than their sender sends them
  // (schedules/message_order.h, e.g. DualPipe at PP >= 8). A backend that reorders its receives
  // must buffer them, so point-to-point transfers start when the send is issued and the receive
  // takes the data when it comes; otherwise sends wait for their receive (rendezvous, as NCCL).
  bool buffered_p2p = false;
  // [world] compute speed of each rank's GPU (stragglers, degradation.h): a compute instruction
  // takes compute_time / compute_speed[rank]; host launch times are not scaled (the host CPU is
  // not the degraded part). Empty: every GPU at nominal speed.
  std::vector<double> compute_speed;
};

// Which ranks are played, and which rank plays the part of an unplayed one.
// Copy c of played rank played[i] is image[c * played.size() + i]; copy 0 is the rank itself.
struct ReplicaLayout {
  std::vector<int64_t> played;     // ascending global ranks
  int64_t copies = 1;              // 1: every rank is played
  int64_t tp_copies = 1;           // > 1: copies also along tp (narrow_to_tensor_rank_zero)
  std::vector<int64_t> image;      // [copies * played.size()]
  std::vector<int32_t> preimage;   // [world] index into `played` of the rank that plays its part
  std::vector<int32_t> copy;       // [world] which copy the rank belongs to
  bool reduced() const { return copies > 1; }
  int64_t image_of(size_t played_index, int64_t c) const {
    return image[static_cast<size_t>(c) * played.size() + played_index];
  }
};

// The data-parallel replica dp = 0, widened by whole dp slices until every non-data-parallel
// group of its ranks lies inside it; `copies` = DP / slices. Every rank when all_ranks, or when
// the grid has no such structure (then *why_not says so).
// symmetric_experts (balanced routing: every expert-parallel rank gets the same tokens): the
// expert-parallel groups do not widen the block; their all-to-alls are played one-sided by the
// played members, as data-parallel collectives are (exact when the members are symmetric and the
// expert groups with no played member meet no played flow: the caller checks the fabric).
ReplicaLayout replica_layout(const ParallelGrid& grid, bool all_ranks, std::string* why_not = nullptr,
                             bool symmetric_experts = false);

// True when every copy of a reduced layout sits in the datacenters as the played block does: for
// each copy, the datacenter of a played rank determines that of its image, one to one. Otherwise
// (e.g. a replica cut by the WAN while another is not) the copies are not equivalent to the
// played block and *why_not says so. dc_of_rank: [rank] its datacenter.
bool replicas_respect_datacenters(const ReplicaLayout& layout, const std::vector<int64_t>& dc_of_rank,
                                  std::string* why_not = nullptr);

// A reduced layout narrowed to the played ranks with tp = 0; the other tensor-parallel ranks become
// copies (copy = dp copy x TP + tp). Exact only where tensor-parallel ranks never meet: their
// collectives are costed analytically inside one node (members do not wait for each other) and no
// link is shared across tp coordinates (one NIC per GPU, no oversubscribed uplink, no WAN, no
// expert parallelism): the caller checks that (simulator.cpp). Returns `layout` unchanged when
// it is not reduced, TP is 1, or the tp-free groups (cp, pp, dp, embedding) do not shift along tp.
ReplicaLayout narrow_to_tensor_rank_zero(const ParallelGrid& grid, const ReplicaLayout& layout);

// Start and end of one instruction on its rank (s).
struct InstructionTime {
  double start = 0;
  double end = 0;
};

struct RankOutcome {
  int64_t rank = 0;
  double finish_s = 0;          // when its last instruction finished
  double compute_s = 0;         // sum of its compute instructions' durations
  Breakdown breakdown;          // of [0, finish_s] on its compute stream; sums to finish_s
  // Of the breakdown's communication seconds: those spent in collectives (played with flows, all
  // members played) before the group's last member had started it, i.e. waiting for a late peer.
  double peer_wait_s = 0;
  // Of the breakdown's exposed communication (tp/cp/ep/pp/dp and optimizer-phase collectives,
  // not the bubble), the seconds charged to operations with flows between datacenters, from
  // when the exchange could begin: a receive's sender had posted, a collective's played members
  // had all started it (unplayed members are taken to start with their played images).
  double wan_exposed_s = 0;
  std::vector<InstructionTime> timeline;  // [instruction], when ExecutorOptions::record_timeline
};

using ExecutionStats = SimCounts;

// Bytes sent between datacenters in one iteration by every rank, played or not (unplayed ranks
// counted from the program of the rank that plays their part, with peers and groups renamed).
// Point-to-point messages count their bytes; collectives the bytes of their plan's flows
// (collectives.h) between members in different datacenters; all-to-alls their rail-aligned flows.
struct WanTraffic {
  std::vector<std::vector<double>> bytes;  // [source datacenter][destination datacenter]; empty with one
  double total() const {
    double sum = 0;
    for (const auto& row : bytes)
      for (double b : row) sum += b;
    return sum;
  }
};

struct ExecutionResult {
  std::vector<RankOutcome> ranks;  // one per played rank, in the order given
  double makespan_s = 0;           // max finish over played ranks
  size_t critical = 0;             // index into ranks of the rank that finishes last (first on ties)
  ExecutionStats stats;
  WanTraffic wan;                  // with several datacenters
};

// A played rank and the program it runs: its own, or that of a rank with the same pipeline
// coordinate (its symmetry class, program.h), whose Send/Recv peers are then renamed by
// rename_peer. Programs are shared, so a class is lowered once however many ranks play it.
struct PlayedRank {
  int64_t rank = 0;
  const RankProgram* program = nullptr;
};

// `peer` of the program of `program_rank`, seen from `rank`: shifted by the difference of the
// two ranks' tp, cp and dp coordinates (modulo their sizes); pp unchanged.
int64_t rename_peer(const ParallelGrid& grid, int64_t program_rank, int64_t rank, int64_t peer);

// Plays one program per played rank of `layout` (any order) on `platform`, GPU g = rank g.
// Runs the SimGrid engine to completion: call once per Platform. A program whose messages or
// collectives cannot match (a deadlock) is a programmer error (CHECK).
ExecutionResult execute(Platform& platform, Collectives& collectives, const ParallelGrid& grid,
                        const std::vector<PlayedRank>& played, const ReplicaLayout& layout,
                        const ExecutorOptions& options);
// Each program played by its own rank (programs[i].rank).
ExecutionResult execute(Platform& platform, Collectives& collectives, const ParallelGrid& grid,
                        const std::vector<RankProgram>& programs, const ReplicaLayout& layout,
                        const ExecutorOptions& options);

// Unit-cost timing for schedule checks: every compute instruction of action (microbatch, chunk,
// F/B/W) gets an equal share of that action's cost under `costs` (analysis.h), optimizer and
// setup work 0. Use with free_communication to reproduce analyze_schedule's makespan.
ComputeTimeFn unit_cost_time(const Schedule& schedule, const std::vector<RankProgram>& programs,
                             double forward = 1, double backward = 1, double weight = 1);

}  // namespace tandem::sim
