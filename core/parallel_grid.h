#pragma once
// ParallelGrid: the rank layout of a Megatron-style training job, as a value (no globals).
//
// Ranks 0..world-1 are numbered on a mixed-radix grid whose digits are the parallel dimensions
// listed in `order`, fastest-varying first (Megatron's RankGenerator). With the default order
// "tp-cp-ep-dp-pp" a dense rank is
//     rank = tp + TP * (cp + CP * (dp + DP * pp))          (the ep digit has size 1 here)
// Dimensions absent from `order` are appended with size 1; an absent dimension of size > 1 is
// an error.
//
// Two numberings share the same ranks, as in Megatron's initialize_model_parallel:
//   dense side  (attention, dense MLP, embeddings): digits tp, cp, dp, pp   with ep := 1,
//                DP  = world / (TP * CP * PP);
//   expert side (MoE expert layers):                digits etp, ep, edp, pp with cp := 1,
//                EDP = world / (ETP * EP * PP).
// On the expert side the tokens `tp` and `dp` of a token spec mean expert-TP and expert-DP.
// Both sides must agree on the pipeline groups (checked at creation).
//
// Groups follow the masked-orthogonal rule (generate_masked_orthogonal_rank_groups): the group
// of spec "tp-pp" is a set of ranks that differ only in their tp and pp digits. Inside a group,
// members are listed by increasing mixed-radix index over the masked digits (in `order`, the
// first one fastest); groups are listed by the same rule over the unmasked digits.
// Worked example: 8 GPUs, order "tp-pp-dp", TP = PP = DP = 2, rank = tp + 2 pp + 4 dp:
//     TP groups [[0,1],[2,3],[4,5],[6,7]]    PP groups [[0,2],[1,3],[4,6],[5,7]]
//     DP groups [[0,4],[1,5],[2,6],[3,7]]
//
// Cost: coordinates are O(1); a group of one rank is O(group size); the full list of groups of
// one kind is O(world). Nothing is precomputed, so a grid of 16,384 ranks is a few integers.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/job.h"

namespace tandem {

// Sizes of the parallel dimensions. DP and expert-DP are derived from world.
struct GridSizes {
  int64_t world = 1;                     // ranks (GPUs)
  int64_t tp = 1;                        // tensor parallel
  int64_t cp = 1;                        // context parallel
  int64_t ep = 1;                        // expert (model) parallel
  int64_t etp = 1;                       // expert tensor parallel
  int64_t pp = 1;                        // pipeline parallel
  std::string order = "tp-cp-ep-dp-pp";  // Megatron's rank order, fastest-varying first
};

// Which numbering a token spec refers to: attention/dense layers or MoE expert layers.
enum class GridSide { Dense, Expert };

// Named groups built by Megatron's initialize_model_parallel.
enum class ParallelGroup {
  Tp,                 // dense "tp"
  Cp,                 // dense "cp"
  Dp,                 // dense "dp"
  DpCp,               // dense "dp-cp" (gradient reduction with context parallelism)
  TpCp,               // dense "tp-cp"
  TpDp,               // dense "tp-dp"
  TpDpCp,             // dense "tp-dp-cp"
  ModelParallel,      // dense "tp-pp"
  Pp,                 // dense "pp"
  Embedding,          // first and last stage of each PP group (just the first when PP = 1)
  PositionEmbedding,  // first stage of each PP group
  Ep,                 // expert "ep"
  ExpertTp,           // expert "tp"
  ExpertTpEp,         // expert "tp-ep"
  ExpertTpEpPp,       // expert "tp-ep-pp"
  ExpertDp,           // expert "dp"
};

std::string to_string(ParallelGroup kind);

// Coordinates of a rank on the dense side; each in [0, size of that dimension).
struct DenseCoord {
  int64_t tp = 0;
  int64_t cp = 0;
  int64_t dp = 0;
  int64_t pp = 0;
  bool operator==(const DenseCoord&) const = default;
};

// Coordinates of a rank on the expert side; each in [0, size of that dimension).
struct ExpertCoord {
  int64_t etp = 0;
  int64_t ep = 0;
  int64_t edp = 0;
  int64_t pp = 0;
  bool operator==(const ExpertCoord&) const = default;
};

// One group seen from one of its members.
struct GroupMembership {
  std::vector<int64_t> ranks;  // [group size] global ranks, in group order
  int64_t group_index = 0;     // position of this group in groups(kind)
  int64_t index_in_group = 0;  // position of the rank in `ranks` (its rank inside the group)
};

using RankGroups = std::vector<std::vector<int64_t>>;  // [num groups][group size] global ranks

class ParallelGrid {
 public:
  // Validates the sizes and the order; throws UserError naming the field and the value.
  static ParallelGrid create(const GridSizes& sizes);
  // From job.world_size (0: TP*PP*CP, as documented in Job) and job.parallel
  // (expert_tensor_parallel_size 0 means TP). A non-zero data_parallel_size must match.
  static ParallelGrid from_job(const Job& job);

  int64_t world_size() const { return world_; }
  int64_t tp_size() const { return tp_; }
  int64_t cp_size() const { return cp_; }
  int64_t dp_size() const { return dp_; }
  int64_t pp_size() const { return pp_; }
  int64_t ep_size() const { return ep_; }
  int64_t expert_tp_size() const { return etp_; }
  int64_t expert_dp_size() const { return edp_; }
  const std::string& order() const { return order_; }

  // Rank <-> coordinates. Out-of-range ranks or coordinates are programmer errors (CHECK).
  DenseCoord dense_coord(int64_t rank) const;
  int64_t dense_rank(const DenseCoord& c) const;
  ExpertCoord expert_coord(int64_t rank) const;
  int64_t expert_rank(const ExpertCoord& c) const;

  // Megatron's RankGenerator.get_ranks: spec is '-'-joined tokens from {tp, cp, ep, dp, pp},
  // each at most once, in any order (member order always follows `order`).
  // Throws UserError (field "token_spec") on an unknown, empty or repeated token.
  RankGroups groups(std::string_view token_spec, GridSide side) const;
  // The group of `rank` under a token spec.
  GroupMembership group_of(int64_t rank, std::string_view token_spec, GridSide side) const;

  // Named groups. Every rank is in exactly one group of each kind, except Embedding and
  // PositionEmbedding, which hold only first/last pipeline stages.
  RankGroups groups(ParallelGroup kind) const;
  int64_t num_groups(ParallelGroup kind) const;
  int64_t group_size(ParallelGroup kind) const;
  std::vector<int64_t> group_at(ParallelGroup kind, int64_t group_index) const;  // O(group size)
  // The group holding `rank`; nullopt only for embedding kinds on a middle stage.
  std::optional<GroupMembership> find_group(int64_t rank, ParallelGroup kind) const;
  // As find_group, but the rank must belong to a group of that kind (CHECK).
  GroupMembership group_of(int64_t rank, ParallelGroup kind) const;

  RankGroups tp_groups() const { return groups(ParallelGroup::Tp); }
  RankGroups cp_groups() const { return groups(ParallelGroup::Cp); }
  RankGroups dp_groups() const { return groups(ParallelGroup::Dp); }
  RankGroups dp_cp_groups() const { return groups(ParallelGroup::DpCp); }
  RankGroups tp_cp_groups() const { return groups(ParallelGroup::TpCp); }
  RankGroups model_parallel_groups() const { return groups(ParallelGroup::ModelParallel); }
  RankGroups pp_groups() const { return groups(ParallelGroup::Pp); }
  RankGroups embedding_groups() const { return groups(ParallelGroup::Embedding); }
  RankGroups position_embedding_groups() const { return groups(ParallelGroup::PositionEmbedding); }
  RankGroups ep_groups() const { return groups(ParallelGroup::Ep); }
  RankGroups expert_tp_groups() const { return groups(ParallelGroup::ExpertTp); }
  RankGroups expert_tp_ep_groups() const { return groups(ParallelGroup::ExpertTpEp); }
  RankGroups expert_dp_groups() const { return groups(ParallelGroup::ExpertDp); }

  bool operator==(const ParallelGrid&) const = default;

 private:
  static constexpr int kDims = 5;  // tp, cp, ep, dp, pp: the index of a dimension everywhere
  using DimMask = unsigned;        // bit d set: dimension d is inside the group

  // One numbering (Megatron's RankGenerator). rank = sum over d of coord[d] * stride[d].
  struct Layout {
    std::array<int, kDims> digits{};      // digits[k] = dimension of digit k; digit 0 fastest
    std::array<int64_t, kDims> size{};    // indexed by dimension
    std::array<int64_t, kDims> stride{};  // indexed by dimension
    bool operator==(const Layout&) const = default;
  };

  ParallelGrid() = default;
  const Layout& layout(GridSide side) const;
  static Layout make_layout(const std::array<int64_t, kDims>& size, const std::vector<int>& order,
                            const std::string& order_text, GridSide side);
  static DimMask parse_spec(std::string_view token_spec);
  static int64_t masked_size(const Layout& l, DimMask mask);
  static std::vector<int64_t> members(const Layout& l, DimMask mask, int64_t group_index);
  static GroupMembership locate(const Layout& l, DimMask mask, int64_t rank);
  void check_rank(int64_t rank) const;
  void check_pipelines_agree() const;

  int64_t world_ = 1;
  int64_t tp_ = 1, cp_ = 1, dp_ = 1, pp_ = 1, ep_ = 1, etp_ = 1, edp_ = 1;
  std::string order_;
  Layout dense_;
  Layout expert_;
};

}  // namespace tandem
