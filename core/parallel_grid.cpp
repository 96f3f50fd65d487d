#include "core/parallel_grid.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <sstream>

#include "core/check.h"

namespace tandem {
namespace {

// Dimension indices, shared by ParallelGrid::Layout arrays and DimMask bits.
constexpr int kTp = 0, kCp = 1, kEp = 2, kDp = 3, kPp = 4;
constexpr std::array<const char*, 5> kTokens = {"tp", "cp", "ep", "dp", "pp"};
constexpr const char* kExpectedTokens = "expected tokens tp, cp, ep, dp, pp joined by '-'";

// a * b, or nullopt when the product does not fit in int64 (all factors are >= 1).
std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  if (a > std::numeric_limits<int64_t>::max() / b) return std::nullopt;
  return a * b;
}

int token_index(std::string_view token) {
  for (int d = 0; d < static_cast<int>(kTokens.size()); ++d) {
    if (token == kTokens[d]) return d;
  }
  return -1;
}

std::vector<std::string> split_tokens(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t dash = text.find('-', start);
    std::string token(text.substr(start, dash == std::string_view::npos ? dash : dash - start));
    for (char& ch : token) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out.push_back(std::move(token));
    if (dash == std::string_view::npos) return out;
    start = dash + 1;
  }
}

// Parses Megatron's order string into dimension indices, fastest first. Unknown, empty or
// repeated tokens are user errors on `field`.
std::vector<int> parse_tokens(std::string_view text, const std::string& field) {
  std::vector<int> dims;
  for (const std::string& token : split_tokens(text)) {
    int d = token_index(token);
    if (d < 0) {
      throw_field_error(field, std::string(text),
                        "unknown token '" + token + "'; " + kExpectedTokens);
    }
    if (std::find(dims.begin(), dims.end(), d) != dims.end()) {
      throw_field_error(field, std::string(text), "token '" + token + "' appears more than once");
    }
    dims.push_back(d);
  }
  return dims;
}

// world must be a multiple of the product of the three named sizes.
void check_divides(int64_t world, const char* names, const std::array<int64_t, 3>& factors) {
  std::optional<int64_t> product = 1;
  for (int64_t f : factors) product = product ? checked_mul(*product, f) : std::nullopt;
  if (product && world % *product == 0) return;
  std::ostringstream reason;
  reason << "not divisible by " << names << " = " << factors[0] << " * " << factors[1] << " * "
         << factors[2];
  if (product) {
    reason << " = " << *product;
  } else {
    reason << " (overflows int64)";
  }
  throw_field_error("world_size", world, reason.str());
}

void check_at_least_one(const char* field, int64_t value) {
  if (value < 1) throw_field_error(field, value, "must be at least 1");
}

// How a size-carrying dimension is called in messages, per side.
std::string size_name(int dim, GridSide side) {
  const bool dense = side == GridSide::Dense;
  switch (dim) {
    case kTp: return dense ? "tensor_model_parallel_size" : "expert_tensor_parallel_size";
    case kCp: return "context_parallel_size";
    case kEp: return "expert_model_parallel_size";
    case kDp:
      return dense ? "data_parallel_size (world_size / (TP*CP*PP))"
                   : "expert data-parallel size (world_size / (ETP*EP*PP))";
    default: return "pipeline_model_parallel_size";
  }
}

// Token spec and side of a named group; embedding kinds are derived from the "pp" groups.
struct KindInfo {
  GridSide side;
  const char* spec;
  const char* name;
};

KindInfo kind_info(ParallelGroup kind) {
  using G = ParallelGroup;
  constexpr GridSide D = GridSide::Dense, E = GridSide::Expert;
  switch (kind) {
    case G::Tp: return {D, "tp", "tp"};
    case G::Cp: return {D, "cp", "cp"};
    case G::Dp: return {D, "dp", "dp"};
    case G::DpCp: return {D, "dp-cp", "dp-cp"};
    case G::TpCp: return {D, "tp-cp", "tp-cp"};
    case G::TpDp: return {D, "tp-dp", "tp-dp"};
    case G::TpDpCp: return {D, "tp-dp-cp", "tp-dp-cp"};
    case G::ModelParallel: return {D, "tp-pp", "model-parallel (tp-pp)"};
    case G::Pp: return {D, "pp", "pp"};
    case G::Embedding: return {D, "pp", "embedding"};
    case G::PositionEmbedding: return {D, "pp", "position-embedding"};
    case G::Ep: return {E, "ep", "ep"};
    case G::ExpertTp: return {E, "tp", "expert-tp"};
    case G::ExpertTpEp: return {E, "tp-ep", "expert-tp-ep"};
    case G::ExpertTpEpPp: return {E, "tp-ep-pp", "expert-tp-ep-pp"};
    case G::ExpertDp: return {E, "dp", "expert-dp"};
  }
  TANDEM_CHECK_MSG(false, "unhandled ParallelGroup " << static_cast<int>(kind));
  return {D, "", ""};
}

bool is_embedding_kind(ParallelGroup kind) {
  return kind == ParallelGroup::Embedding || kind == ParallelGroup::PositionEmbedding;
}

// Megatron's default_embedding_ranks / default_position_embedding_ranks of one PP group.
std::vector<int64_t> embedding_ranks(const std::vector<int64_t>& pp_group, ParallelGroup kind) {
  TANDEM_CHECK(!pp_group.empty());
  if (kind == ParallelGroup::PositionEmbedding || pp_group.size() == 1) return {pp_group.front()};
  return {pp_group.front(), pp_group.back()};
}

}  // namespace

std::string to_string(ParallelGroup kind) { return kind_info(kind).name; }

// ---- construction -------------------------------------------------------------------------

ParallelGrid ParallelGrid::create(const GridSizes& s) {
  check_at_least_one("tensor_model_parallel_size", s.tp);
  check_at_least_one("context_parallel_size", s.cp);
  check_at_least_one("expert_model_parallel_size", s.ep);
  check_at_least_one("expert_tensor_parallel_size", s.etp);
  check_at_least_one("pipeline_model_parallel_size", s.pp);
  check_at_least_one("world_size", s.world);
  const std::vector<int> order = parse_tokens(s.order, "order");
  check_divides(s.world,
                "tensor_model_parallel_size * context_parallel_size * pipeline_model_parallel_size",
                {s.tp, s.cp, s.pp});
  check_divides(s.world,
                "expert_tensor_parallel_size * expert_model_parallel_size * "
                "pipeline_model_parallel_size",
                {s.etp, s.ep, s.pp});

  ParallelGrid g;
  g.world_ = s.world;
  g.tp_ = s.tp;
  g.cp_ = s.cp;
  g.pp_ = s.pp;
  g.ep_ = s.ep;
  g.etp_ = s.etp;
  g.dp_ = s.world / (s.tp * s.cp * s.pp);
  g.edp_ = s.world / (s.etp * s.ep * s.pp);
  for (size_t k = 0; k < order.size(); ++k)
    g.order_ += (k ? "-" : "") + std::string(kTokens[order[k]]);
  // Dense numbering has no ep digit, expert numbering no cp digit (Megatron's two generators).
  g.dense_ = make_layout({g.tp_, g.cp_, 1, g.dp_, g.pp_}, order, s.order, GridSide::Dense);
  g.expert_ = make_layout({g.etp_, 1, g.ep_, g.edp_, g.pp_}, order, s.order, GridSide::Expert);
  g.check_pipelines_agree();
  return g;
}

ParallelGrid ParallelGrid::from_job(const Job& job) {
  const ParallelConfig& p = job.parallel;
  GridSizes s;
  s.tp = p.tensor_model_parallel_size;
  s.cp = p.context_parallel_size;
  s.pp = p.pipeline_model_parallel_size;
  s.ep = p.expert_model_parallel_size;
  s.etp = p.expert_tensor_parallel_size == 0 ? p.tensor_model_parallel_size
                                             : p.expert_tensor_parallel_size;
  s.order = p.order;
  s.world = job.world_size;
  if (s.world == 0 && s.tp >= 1 && s.cp >= 1 && s.pp >= 1) {
    std::optional<int64_t> tp_cp = checked_mul(s.tp, s.cp);
    std::optional<int64_t> model = tp_cp ? checked_mul(*tp_cp, s.pp) : std::nullopt;
    if (!model) throw_field_error("world_size", 0, "default TP*CP*PP overflows int64");
    s.world = *model;
  }
  ParallelGrid grid = create(s);
  if (p.data_parallel_size != 0 && p.data_parallel_size != grid.dp_size()) {
    throw_field_error("data_parallel_size", p.data_parallel_size,
                      "does not match world_size / (TP*CP*PP) = " + std::to_string(grid.world_) +
                          " / " + std::to_string(grid.tp_ * grid.cp_ * grid.pp_) + " = " +
                          std::to_string(grid.dp_size()));
  }
  return grid;
}

// Completes `order` with the absent dimensions (size 1 only) and computes the strides.
ParallelGrid::Layout ParallelGrid::make_layout(const std::array<int64_t, kDims>& size,
                                               const std::vector<int>& order,
                                               const std::string& order_text, GridSide side) {
  Layout l;
  l.size = size;
  std::vector<int> digits = order;
  for (int d = 0; d < kDims; ++d) {
    if (std::find(order.begin(), order.end(), d) != order.end()) continue;
    if (size[d] != 1) {
      throw_field_error("order", order_text,
                        std::string("token '") + kTokens[d] + "' is missing but " +
                            size_name(d, side) + " is " + std::to_string(size[d]));
    }
    digits.push_back(d);
  }
  TANDEM_CHECK(digits.size() == static_cast<size_t>(kDims));
  int64_t stride = 1;
  for (int k = 0; k < kDims; ++k) {
    l.digits[k] = digits[k];
    l.stride[digits[k]] = stride;
    stride *= size[digits[k]];
  }
  return l;
}

// Megatron asserts both numberings give the same pipeline groups, and that DP sizes agree
// when pp is not the slowest digit. The PP groups agree iff the pp strides are equal.
void ParallelGrid::check_pipelines_agree() const {
  if (pp_ == 1) return;
  const bool pp_last = order_.ends_with("pp");
  if (!pp_last && dp_ != edp_) {
    throw_field_error("order", order_,
                      "with pipeline_model_parallel_size > 1 and pp not last, the dense "
                      "data-parallel size (" +
                          std::to_string(dp_) + ") must equal the expert data-parallel size (" +
                          std::to_string(edp_) + ")");
  }
  if (dense_.stride[kPp] != expert_.stride[kPp]) {
    throw_field_error("order", order_,
                      "dense and expert layouts give different pipeline groups (pp stride " +
                          std::to_string(dense_.stride[kPp]) + " vs " +
                          std::to_string(expert_.stride[kPp]) + ")");
  }
}

// ---- coordinates --------------------------------------------------------------------------

const ParallelGrid::Layout& ParallelGrid::layout(GridSide side) const {
  return side == GridSide::Dense ? dense_ : expert_;
}

void ParallelGrid::check_rank(int64_t rank) const {
  TANDEM_CHECK_MSG(rank >= 0 && rank < world_, "rank " << rank << " outside [0, " << world_ << ")");
}

DenseCoord ParallelGrid::dense_coord(int64_t rank) const {
  check_rank(rank);
  auto digit = [&](int d) { return (rank / dense_.stride[d]) % dense_.size[d]; };
  return {digit(kTp), digit(kCp), digit(kDp), digit(kPp)};
}

int64_t ParallelGrid::dense_rank(const DenseCoord& c) const {
  TANDEM_CHECK(c.tp >= 0 && c.tp < tp_ && c.cp >= 0 && c.cp < cp_);
  TANDEM_CHECK(c.dp >= 0 && c.dp < dp_ && c.pp >= 0 && c.pp < pp_);
  return c.tp * dense_.stride[kTp] + c.cp * dense_.stride[kCp] + c.dp * dense_.stride[kDp] +
         c.pp * dense_.stride[kPp];
}

ExpertCoord ParallelGrid::expert_coord(int64_t rank) const {
  check_rank(rank);
  auto digit = [&](int d) { return (rank / expert_.stride[d]) % expert_.size[d]; };
  return {digit(kTp), digit(kEp), digit(kDp), digit(kPp)};
}

int64_t ParallelGrid::expert_rank(const ExpertCoord& c) const {
  TANDEM_CHECK(c.etp >= 0 && c.etp < etp_ && c.ep >= 0 && c.ep < ep_);
  TANDEM_CHECK(c.edp >= 0 && c.edp < edp_ && c.pp >= 0 && c.pp < pp_);
  return c.etp * expert_.stride[kTp] + c.ep * expert_.stride[kEp] + c.edp * expert_.stride[kDp] +
         c.pp * expert_.stride[kPp];
}

// ---- masked-orthogonal groups -------------------------------------------------------------

ParallelGrid::DimMask ParallelGrid::parse_spec(std::string_view token_spec) {
  DimMask mask = 0;
  for (int d : parse_tokens(token_spec, "token_spec")) mask |= 1u << d;
  return mask;
}

int64_t ParallelGrid::masked_size(const Layout& l, DimMask mask) {
  int64_t n = 1;
  for (int d = 0; d < kDims; ++d) {
    if (mask & (1u << d)) n *= l.size[d];
  }
  return n;
}

// Group `group_index` of spec `mask`: the unmasked digits come from group_index and the masked
// digits run over all their values, both decoded in digit order (first digit fastest).
std::vector<int64_t> ParallelGrid::members(const Layout& l, DimMask mask, int64_t group_index) {
  int64_t base = 0;
  int64_t rest = group_index;
  for (int d : l.digits) {
    if (mask & (1u << d)) continue;
    base += (rest % l.size[d]) * l.stride[d];
    rest /= l.size[d];
  }
  TANDEM_CHECK_MSG(rest == 0 && group_index >= 0, "group index " << group_index << " out of range");
  std::vector<int64_t> ranks(static_cast<size_t>(masked_size(l, mask)));
  for (size_t j = 0; j < ranks.size(); ++j) {
    int64_t offset = 0;
    int64_t r = static_cast<int64_t>(j);
    for (int d : l.digits) {
      if (!(mask & (1u << d))) continue;
      offset += (r % l.size[d]) * l.stride[d];
      r /= l.size[d];
    }
    ranks[j] = base + offset;
  }
  return ranks;
}

// Inverse of members(): the group index and the position of `rank` inside its group.
GroupMembership ParallelGrid::locate(const Layout& l, DimMask mask, int64_t rank) {
  GroupMembership m;
  int64_t group_radix = 1;
  int64_t member_radix = 1;
  for (int d : l.digits) {
    const int64_t digit = (rank / l.stride[d]) % l.size[d];
    if (mask & (1u << d)) {
      m.index_in_group += digit * member_radix;
      member_radix *= l.size[d];
    } else {
      m.group_index += digit * group_radix;
      group_radix *= l.size[d];
    }
  }
  m.ranks = members(l, mask, m.group_index);
  TANDEM_CHECK(m.ranks[static_cast<size_t>(m.index_in_group)] == rank);
  return m;
}

RankGroups ParallelGrid::groups(std::string_view token_spec, GridSide side) const {
  const Layout& l = layout(side);
  const DimMask mask = parse_spec(token_spec);
  const int64_t count = world_ / masked_size(l, mask);
  RankGroups out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t g = 0; g < count; ++g) out.push_back(members(l, mask, g));
  return out;
}

GroupMembership ParallelGrid::group_of(int64_t rank, std::string_view token_spec,
                                       GridSide side) const {
  check_rank(rank);
  return locate(layout(side), parse_spec(token_spec), rank);
}

// ---- named groups -------------------------------------------------------------------------

int64_t ParallelGrid::group_size(ParallelGroup kind) const {
  if (kind == ParallelGroup::PositionEmbedding) return 1;
  if (kind == ParallelGroup::Embedding) return pp_ == 1 ? 1 : 2;
  const KindInfo info = kind_info(kind);
  return masked_size(layout(info.side), parse_spec(info.spec));
}

int64_t ParallelGrid::num_groups(ParallelGroup kind) const {
  const KindInfo info = kind_info(kind);
  return world_ / masked_size(layout(info.side), parse_spec(info.spec));
}

std::vector<int64_t> ParallelGrid::group_at(ParallelGroup kind, int64_t group_index) const {
  const KindInfo info = kind_info(kind);
  std::vector<int64_t> ranks = members(layout(info.side), parse_spec(info.spec), group_index);
  return is_embedding_kind(kind) ? embedding_ranks(ranks, kind) : ranks;
}

RankGroups ParallelGrid::groups(ParallelGroup kind) const {
  const int64_t count = num_groups(kind);
  RankGroups out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t g = 0; g < count; ++g) out.push_back(group_at(kind, g));
  return out;
}

std::optional<GroupMembership> ParallelGrid::find_group(int64_t rank, ParallelGroup kind) const {
  check_rank(rank);
  const KindInfo info = kind_info(kind);
  GroupMembership m = locate(layout(info.side), parse_spec(info.spec), rank);
  if (!is_embedding_kind(kind)) return m;
  // m is the rank's PP group and index_in_group its stage.
  const int64_t stage = m.index_in_group;
  const bool first = stage == 0;
  const bool last = stage == pp_ - 1;
  if (!first && !(last && kind == ParallelGroup::Embedding)) return std::nullopt;
  m.ranks = embedding_ranks(m.ranks, kind);
  m.index_in_group = first ? 0 : 1;
  return m;
}

GroupMembership ParallelGrid::group_of(int64_t rank, ParallelGroup kind) const {
  std::optional<GroupMembership> m = find_group(rank, kind);
  TANDEM_CHECK_MSG(m.has_value(),
                   "rank " << rank << " belongs to no " << to_string(kind) << " group");
  return *std::move(m);
}

}  // namespace tandem
