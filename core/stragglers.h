#pragma once
// Stragglers: degraded parts of a cluster, a hardware condition (not a Megatron flag).
//
//   kind    what runs slower                          unit it selects
//   gpu     compute: every compute kernel of the GPU   a GPU (= the rank it hosts)
//           takes 1/speed as long; the host's kernel
//           launches do not (the host CPU is healthy)
//   nvlink  the GPU's NVLink link, speed x bandwidth   a GPU
//   nic     a NIC link, speed x bandwidth              a NIC: (node, rail)
//   uplink  a leaf's rail uplink to the spine          an uplink: (leaf, rail)
//
// Where, exactly one of:
//   ranks    GPU indices (= ranks): those GPUs, the NIC each uses, the uplink of its leaf and rail
//   nodes    every unit of those nodes (for uplink: every rail uplink of their leaves)
//   leaves   every unit of those leaf groups
//   fraction of the kind's units, at least one, drawn by a seeded deterministic draw (`seed`)
// speed is in (0, 1]: a straggler is slower than the cluster file's datasheet rates (to model a
// faster part, describe another cluster). A straggler at speed 1 changes nothing and is ignored.
// Several stragglers that reach the same unit multiply their speeds.
//
// Text syntax (tandem's --straggler, JSON strings, the sweep axis "straggler"):
//   KIND:WHERE:SPEED[:seed=N]    WHERE = rank=LIST | node=LIST | leaf=LIST | fraction=F
//   LIST = 5 | 1,5,9 | 4-7 | 0,8-11      (the plural spellings ranks=, nodes=, leaves= also work)
//   e.g. gpu:rank=5:0.5   nic:node=3:0.5   nic:fraction=0.01:0.5:seed=1   uplink:leaf=0:0.25
// JSON object: {"kind": "gpu", "ranks": [5], "speed": 0.5} or {"kind": "nic", "fraction": 0.01,
// "speed": 0.5, "seed": 1}; a JSON string is read in the text syntax.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tandem {

struct ClusterSpec;

enum class StragglerKind { Gpu, Nvlink, Nic, Uplink };
enum class StragglerScope { Ranks, Nodes, Leaves, Fraction };

struct Straggler {
  StragglerKind kind = StragglerKind::Gpu;
  StragglerScope scope = StragglerScope::Ranks;
  std::vector<int64_t> indices;  // ranks, nodes or leaves (scope != Fraction), ascending, unique
  double fraction = 0;           // scope == Fraction: share of the kind's units, (0, 1]
  uint64_t seed = 0;             // scope == Fraction: seeds the draw
  double speed = 1;              // (0, 1]: share of the nominal compute speed or bandwidth
  std::string origin;            // where the user wrote it, for messages ("--straggler gpu:rank=5:0.5")
};

std::string to_string(StragglerKind kind);
std::string to_string(StragglerScope scope);

// Parses the text syntax; UserError naming `field`, the whole text and the bad piece.
Straggler parse_straggler(const std::string& text, const std::string& field);
// Several separated by ';' (the sweep axis); "none" or "" is no straggler.
std::vector<Straggler> parse_straggler_list(const std::string& text, const std::string& field);
// A JSON object or string (see above); UserError naming `field`.
Straggler straggler_from_json(const nlohmann::json& value, const std::string& field);
// The canonical text syntax ("gpu:rank=1,5:0.5").
std::string to_text(const Straggler& straggler);

// Counts of the cluster's parts for `world` GPUs (as backends/sim places them).
int64_t cluster_nodes(const ClusterSpec& cluster, int64_t world);
int64_t cluster_leaves(const ClusterSpec& cluster, int64_t world);
int64_t cluster_rails(const ClusterSpec& cluster);   // NICs per node as built: min(NICs, GPUs) per node

// Every straggler's indices lie inside the world (ranks), its nodes or its leaves; UserError
// naming the straggler as written and the bad index.
void validate_stragglers(const ClusterSpec& cluster, int64_t world);

// True when some straggler slows something (speed < 1).
bool has_effective_stragglers(const ClusterSpec& cluster);

// Deterministic draw of `count` distinct indices out of [0, n), ascending: a Fisher-Yates
// shuffle driven by splitmix64(seed), the same on every platform.
std::vector<int64_t> draw_indices(int64_t n, int64_t count, uint64_t seed);

}  // namespace tandem
