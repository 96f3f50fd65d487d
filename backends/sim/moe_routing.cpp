// The MoE routing model (moe_routing.h): draws, capacity, trace files, and the redrawn programs.
#include "backends/sim/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include <nlohmann/json.hpp>

#include "backends/sim/compute_model.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "models/accounting.h"
#include "program/model_layout.h"

namespace tandem::sim {
namespace {

using json = nlohmann::json;

// ---- counter-based random numbers: a pure function of the key, no state.
uint64_t mix(uint64_t x) {   // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

enum Stream : uint64_t { kPermutation = 1, kDraw = 2 };

uint64_t key(uint64_t seed, Stream stream, int64_t a, int64_t b = 0, int64_t c = 0, int64_t d = 0) {
  uint64_t h = mix(seed ^ (stream << 56));
  for (int64_t v : {a, b, c, d}) h = mix(h ^ static_cast<uint64_t>(v));
  return h;
}

double uniform(uint64_t k) { return static_cast<double>(mix(k) >> 11) * 0x1.0p-53; }   // [0, 1)

double normal(uint64_t k) {   // Box-Muller from two uniforms of the key
  const double u1 = 1.0 - uniform(k ^ 0x5851F42D4C957F2Dull);   // (0, 1]
  const double u2 = uniform(k ^ 0x14057B7EF767814Full);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Binomial(n, q): inversion below a mean of 30 (exact), else the normal approximation with
// continuity correction, clamped to [0, n].
int64_t binomial(int64_t n, double q, uint64_t k) {
  if (n <= 0 || q <= 0) return 0;
  if (q >= 1) return n;
  if (q > 0.5) return n - binomial(n, 1.0 - q, k);
  const double mean = double(n) * q;
  if (mean < 30) {
    const double u = uniform(k);
    double pmf = std::exp(double(n) * std::log1p(-q));
    double cdf = pmf;
    const double ratio = q / (1.0 - q);
    int64_t x = 0;
    while (u > cdf && x < n) {
      pmf *= double(n - x) / double(x + 1) * ratio;
      ++x;
      cdf += pmf;
    }
    return x;
  }
  const double x = std::floor(mean + std::sqrt(mean * (1.0 - q)) * normal(k) + 0.5);
  return static_cast<int64_t>(std::clamp(x, 0.0, double(n)));
}

// `counts` scaled to sum to `total` (largest remainder; ties to the lower expert).
std::vector<double> scale_counts(const std::vector<double>& counts, int64_t total) {
  const double sum = std::accumulate(counts.begin(), counts.end(), 0.0);
  if (sum == double(total)) return counts;
  std::vector<double> out(counts.size());
  std::vector<std::pair<double, size_t>> rest;
  int64_t given = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const double exact = counts[e] * double(total) / sum;
    out[e] = std::floor(exact);
    given += static_cast<int64_t>(out[e]);
    rest.emplace_back(-(exact - out[e]), e);
  }
  std::sort(rest.begin(), rest.end());
  for (size_t i = 0; given < total && i < rest.size(); ++i, ++given) out[rest[i].second] += 1;
  return out;
}

std::string trace_field(const std::string& path) { return "--moe-routing-trace = " + path; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// The model

MoeRoutingModel::MoeRoutingModel(const Job& job, const ParallelGrid& grid) {
  TANDEM_CHECK_MSG(job.model.is_moe(), "routing model for a dense model");
  const lower::Dims d = lower::dims_for_job(job, grid);
  const TrainingConfig& t = job.training;
  kind_ = t.moe_routing;
  zipf_s_ = t.moe_routing_zipf_s;
  seed_ = static_cast<uint64_t>(t.moe_routing_seed);
  tokens_ = d.sp_rows();
  topk_ = d.topk;
  experts_ = d.experts;
  ep_ = grid.ep_size();
  etp_ = grid.expert_tp_size();
  microbatches_ = std::max<int64_t>(1, t.num_microbatches);
  bytes_per_row_ = double(d.e) * double(d.h);
  const double cf = job.model.moe_expert_capacity_factor;
  if (cf > 0) capacity_ = std::ceil(double(copies()) / double(experts_) * cf);
  const int64_t L = job.model.num_layers;
  for (int64_t l = 0; l < L; ++l)
    if (is_moe_layer(job.model, l)) moe_layers_.push_back(l);
  if (is_moe_layer(job.model, L - 1))
    for (int64_t i = 0; i < job.model.mtp_num_layers; ++i) moe_layers_.push_back(L + i);
  for (size_t i = 0; i < moe_layers_.size(); ++i) ordinal_[moe_layers_[i]] = i;
  if (kind_ == MoeRouting::Trace) load_trace(t.moe_routing_trace);
  expected_ = kind_ == MoeRouting::Balanced && (capacity_ == 0 || capacity_ >= double(copies()) / double(experts_));
}

size_t MoeRoutingModel::ordinal(int64_t layer) const {
  auto it = ordinal_.find(layer);
  TANDEM_CHECK_MSG(it != ordinal_.end(), "layer " << layer << " is not an MoE layer");
  return it->second;
}

void MoeRoutingModel::load_trace(const std::string& path) {
  const std::string field = trace_field(path);
  json doc;
  try {
    doc = read_json_file(path);
  } catch (const UserError& e) {
    throw UserError(field + ": " + e.what());
  }
  auto need_int = [&](const char* name) -> int64_t {
    if (!doc.is_object() || !doc.contains(name) || !doc[name].is_number_integer())
      throw UserError(field + ": \"" + name + "\" must be an integer");
    return doc[name].get<int64_t>();
  };
  if (const int64_t e = need_int("experts"); e != experts_)
    throw UserError(field + ": the trace has " + std::to_string(e) + " experts, the job --num-experts = " +
                    std::to_string(experts_));
  if (const int64_t k = need_int("topk"); k != topk_)
    throw UserError(field + ": the trace has topk " + std::to_string(k) + ", the job --moe-router-topk = " +
                    std::to_string(topk_));
  if (!doc.contains("layers") || !doc["layers"].is_array())
    throw UserError(field + ": \"layers\" must be an array (one entry per MoE layer)");
  const json& layers = doc["layers"];
  if (layers.size() != moe_layers_.size())
    throw UserError(field + ": the trace has " + std::to_string(layers.size()) + " MoE layers, the job has " +
                    std::to_string(moe_layers_.size()));
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string where = field + ": layers[" + std::to_string(l) + "]";
    if (!layers[l].is_array() || layers[l].empty())
      throw UserError(where + " must be a non-empty array of micro-batches");
    auto& rows = trace_.emplace_back();
    for (size_t m = 0; m < layers[l].size(); ++m) {
      const json& row = layers[l][m];
      const std::string at = where + "[" + std::to_string(m) + "]";
      if (!row.is_array() || static_cast<int64_t>(row.size()) != experts_)
        throw UserError(at + " must list " + std::to_string(experts_) + " expert counts");
      std::vector<double> counts;
      for (const json& c : row) {
        if (!c.is_number_integer() || c.get<int64_t>() < 0)
          throw UserError(at + " = " + row.dump() + ": counts must be non-negative integers");
        counts.push_back(double(c.get<int64_t>()));
      }
      if (std::accumulate(counts.begin(), counts.end(), 0.0) <= 0) throw UserError(at + ": no token was routed");
      rows.push_back(std::move(counts));
    }
  }
}

std::vector<double> MoeRoutingModel::trace_loads(int64_t layer, int64_t microbatch) const {
  const auto& rows = trace_[ordinal(layer)];
  return scale_counts(rows[static_cast<size_t>(microbatch) % rows.size()], copies());
}

std::vector<double> MoeRoutingModel::zipf_loads(int64_t layer, int64_t microbatch, int64_t source) const {
  const auto E = static_cast<size_t>(experts_);
  // Popularity rank r -> expert order[r], a per-layer Fisher-Yates permutation.
  std::vector<size_t> order(E);
  std::iota(order.begin(), order.end(), size_t{0});
  for (size_t i = E - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(uniform(key(seed_, kPermutation, layer, int64_t(i))) * double(i + 1));
    std::swap(order[i], order[std::min(j, i)]);
  }
  std::vector<double> p(E);
  double norm = 0;
  for (size_t r = 0; r < E; ++r) norm += std::pow(double(r + 1), -zipf_s_);
  for (size_t r = 0; r < E; ++r) p[order[r]] = std::pow(double(r + 1), -zipf_s_) / norm;
  // Multinomial of the copies as conditional binomials in expert order.
  std::vector<double> counts(E, 0.0);
  int64_t left = copies();
  double mass = 1.0;
  for (size_t e = 0; e < E && left > 0; ++e) {
    const double q = e + 1 == E ? 1.0 : std::clamp(p[e] / std::max(mass, 1e-300), 0.0, 1.0);
    const int64_t c = binomial(left, q, key(seed_, kDraw, layer, microbatch, source, int64_t(e)));
    counts[e] = double(c);
    left -= c;
    mass -= p[e];
  }
  // Top-k picks distinct experts: at most `tokens` copies of one source per expert.
  double excess = 0;
  for (double& c : counts) {
    excess += std::max(0.0, c - double(tokens_));
    c = std::min(c, double(tokens_));
  }
  for (size_t r = 0; r < E && excess > 0; ++r) {
    const double add = std::min(excess, double(tokens_) - counts[order[r]]);
    counts[order[r]] += add;
    excess -= add;
  }
  return counts;
}

std::vector<double> MoeRoutingModel::source_loads(int64_t layer, int64_t microbatch, int64_t source) const {
  switch (kind_) {
    case MoeRouting::Balanced: return std::vector<double>(static_cast<size_t>(experts_), double(copies()) / double(experts_));
    case MoeRouting::Zipf: return zipf_loads(layer, microbatch, source);
    case MoeRouting::Trace: return trace_loads(layer, microbatch);
  }
  return {};
}

const RoutingDraw& MoeRoutingModel::draw(int64_t layer, int64_t microbatch) const {
  // Bounded cache: callers never hold a draw across another call.
  const double entry_bytes = 8.0 * double(ep_ * ep_ + 2 * experts_) + 64.0;
  if (draws_.size() > 16 && double(draws_.size()) * entry_bytes > 256e6 && !draws_.count({layer, microbatch}))
    draws_.clear();
  auto [it, fresh] = draws_.try_emplace({layer, microbatch});
  RoutingDraw& d = it->second;
  if (!fresh) return d;
  const auto E = static_cast<size_t>(experts_), P = static_cast<size_t>(ep_);
  const size_t local = E / P;
  d.sent.assign(P * P, 0.0);
  d.kept.assign(E, 0.0);
  d.routed.assign(E, 0.0);
  for (size_t i = 0; i < P; ++i) {
    const std::vector<double> loads = source_loads(layer, microbatch, int64_t(i));
    for (size_t e = 0; e < E; ++e) {
      const double kept = capacity_ > 0 ? std::min(loads[e], capacity_) : loads[e];
      d.routed[e] += loads[e];
      d.kept[e] += kept;
      d.dropped += loads[e] - kept;
      d.sent[i * P + e / local] += kept;
    }
  }
  return d;
}

RoutingSummary MoeRoutingModel::summary() const {
  RoutingSummary s;
  s.model = to_string(kind_);
  double routed_total = 0;
  for (int64_t layer : moe_layers_) {
    LayerImbalance li;
    li.layer = layer;
    double mean_sum = 0;
    // Balanced routing draws the same in every micro-batch.
    const int64_t distinct = kind_ == MoeRouting::Balanced ? 1 : microbatches_;
    for (int64_t mb = 0; mb < distinct; ++mb) {
      const RoutingDraw& d = draw(layer, mb);
      const double total = std::accumulate(d.routed.begin(), d.routed.end(), 0.0);
      const double mean = total / double(experts_);
      const double max = *std::max_element(d.routed.begin(), d.routed.end());
      li.max_over_mean = std::max(li.max_over_mean, mean > 0 ? max / mean : 1.0);
      li.max_load = std::max(li.max_load, max);
      mean_sum += mean;
      li.dropped += d.dropped * double(microbatches_ / distinct);
      routed_total += total * double(microbatches_ / distinct);
    }
    li.mean_load = mean_sum / double(distinct);
    s.max_over_mean = std::max(s.max_over_mean, li.max_over_mean);
    s.dropped_copies += li.dropped;
    s.layers.push_back(li);
  }
  s.dropped_fraction = routed_total > 0 ? s.dropped_copies / routed_total : 0;
  return s;
}

json summary_to_json(const RoutingSummary& s) {
  json layers = json::array();
  for (const LayerImbalance& l : s.layers)
    layers.push_back({{"layer", l.layer}, {"max_over_mean", l.max_over_mean}, {"max_load", l.max_load},
                      {"mean_load", l.mean_load}, {"dropped", l.dropped}});
  return {{"model", s.model}, {"max_over_mean", s.max_over_mean}, {"dropped_copies", s.dropped_copies},
          {"dropped_fraction", s.dropped_fraction}, {"layers", std::move(layers)}};
}

RoutingSummary summary_from_json(const json& j) {
  RoutingSummary s;
  s.model = j.at("model").get<std::string>();
  s.max_over_mean = j.at("max_over_mean").get<double>();
  s.dropped_copies = j.at("dropped_copies").get<double>();
  s.dropped_fraction = j.at("dropped_fraction").get<double>();
  for (const json& l : j.at("layers"))
    s.layers.push_back({l.at("layer").get<int64_t>(), l.at("max_over_mean").get<double>(), l.at("max_load").get<double>(),
                        l.at("mean_load").get<double>(), l.at("dropped").get<double>()});
  return s;
}

namespace {

// Direction of a routed all-to-all: true when it carries tokens to the experts (the dispatch in
// the forward, the combine's gradient in the backward).
bool sends_to_experts(Site site) {
  switch (site) {
    case Site::DispatchA2a:
    case Site::CombineGradA2a: return true;
    case Site::CombineA2a:
    case Site::DispatchGradA2a: return false;
    default: TANDEM_CHECK_MSG(false, "routed all-to-all '" << to_string(site) << "'"); return false;
  }
}

}  // namespace

std::shared_ptr<const std::vector<double>> MoeRoutingModel::shared_all_to_all_bytes(const Instruction& x) const {
  auto& slot = peer_bytes_[{x.layer, x.microbatch, sends_to_experts(x.site)}];
  if (!slot) slot = std::make_shared<const std::vector<double>>(all_to_all_bytes(*this, x));
  return slot;
}

std::vector<double> all_to_all_bytes(const MoeRoutingModel& model, const Instruction& x) {
  const RoutingDraw& d = model.draw(x.layer, x.microbatch);
  const bool to_experts = sends_to_experts(x.site);
  const auto P = static_cast<size_t>(model.ep());
  std::vector<double> bytes(P * P, 0.0);
  for (size_t i = 0; i < P; ++i)
    for (size_t j = 0; j < P; ++j)
      if (i != j) bytes[i * P + j] = (to_experts ? d.sent[i * P + j] : d.sent[j * P + i]) * model.bytes_per_row();
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Programs with routed sizes

namespace {

// What one rank (EP coordinate `ep_rank`) processes in one (layer, microbatch).
struct RankLoads {
  double sent = 0;                  // kept copies of this rank's tokens (leave it, come back)
  double to_others = 0;             // of them, copies for experts on other EP ranks
  double from_others = 0;           // copies other EP ranks send to this rank's experts
  double rows = 0;                  // rows of the local experts, ETP factor included
  std::vector<int64_t> expert_rows; // [local experts]
};

RankLoads rank_loads(const MoeRoutingModel& model, const RoutingDraw& d, int64_t ep_rank) {
  const auto P = static_cast<size_t>(model.ep()), me = static_cast<size_t>(ep_rank);
  const size_t local = static_cast<size_t>(model.experts()) / P;
  RankLoads r;
  for (size_t j = 0; j < P; ++j) {
    r.sent += d.sent[me * P + j];
    if (j != me) {
      r.to_others += d.sent[me * P + j];
      r.from_others += d.sent[j * P + me];
    }
  }
  for (size_t e = me * local; e < (me + 1) * local; ++e) {
    const double rows = double(model.etp()) * d.kept[e];
    r.rows += rows;
    r.expert_rows.push_back(std::llround(rows));
  }
  return r;
}


// Saved-activation bytes per routed row of a MoE layer (models/activations.cpp, mlp_bytes):
// fc1 input and fc2 output [h], fc1 output (x2 gated) and activation output [f_moe / ETP].
double activation_bytes_per_row(const lower::Dims& d) {
  const double e = double(d.e), f = double(d.f_moe) / double(d.etp);
  return 2.0 * e * double(d.h) + e * ((d.gated ? 2.0 : 1.0) * f + f);
}

// One routed instruction redrawn; `expected` = the lowering's basis (copies or rows).
void redraw(Instruction& x, const lower::Dims& d, const RankLoads& r, double copies, double rows,
            std::vector<int64_t>* expert_rows) {
  const bool alltoall = d.dispatcher != TokenDispatcher::AllGather;
  const double e = double(d.e);
  switch (x.kind) {
    case OpKind::AllToAllV:
      x.bytes = (sends_to_experts(x.site) ? r.to_others : r.from_others) * e *
                double(d.h);
      return;
    case OpKind::AllGather:
    case OpKind::ReduceScatter:
      if (x.group == ParallelGroup::ExpertTp) x.bytes *= r.rows / rows;   // ExpertTpEp: tokens, not routed
      return;
    case OpKind::Permute:
    case OpKind::PermuteGrad:
    case OpKind::Unpermute:
    case OpKind::UnpermuteGrad: {
      const double ratio = alltoall ? r.sent / copies : r.rows / rows;
      x.m = std::llround(alltoall ? r.sent : r.rows);
      x.bytes *= ratio;
      return;
    }
    case OpKind::Activation:
    case OpKind::ActivationGrad:
      x.m = std::llround(r.rows);
      x.bytes *= r.rows / rows;
      return;
    case OpKind::Gemm:
    case OpKind::GemmGradInput:
    case OpKind::GemmGradWeight: {
      const double b = double(std::max<int64_t>(1, x.batch)), n = double(x.n), k = double(x.k);
      x.m = std::llround(r.rows / b);
      x.flops = 2.0 * r.rows * n * k;
      x.bytes = e * (r.rows * (k + n) + b * k * n);
      *expert_rows = r.expert_rows;
      return;
    }
    default: TANDEM_CHECK_MSG(false, "routed " << to_string(x.kind) << " '" << to_string(x.site) << "'");
  }
}

// The saved activations of a decoder layer's microbatch (its own or a recompute replay's): the
// buffers whose size the routing decides.
bool routed_activation(const Buffer& b) {
  return b.role == BufferRole::Activation && (b.part == BufferPart::Layer || b.part == BufferPart::Replay) &&
         b.layer >= 0 && b.microbatch >= 0;
}

}  // namespace

RankProgram apply_routing(const RankProgram& base, const Job& job, const ParallelGrid& grid,
                          const MoeRoutingModel& model, int64_t ep_rank) {
  TANDEM_CHECK_MSG(ep_rank >= 0 && ep_rank < model.ep(), "EP coordinate " << ep_rank);
  const lower::Dims d = lower::dims_for_job(job, grid);
  const double copies = double(model.copies()), rows = copies * double(model.etp());
  RankProgram out = base;
  auto loads = [&](int64_t layer, int64_t mb) { return rank_loads(model, model.draw(layer, mb), ep_rank); };
  auto& ins = out.instructions;
  for (Instruction& x : ins) {
    if (!x.routed) continue;
    std::vector<int64_t> expert_rows;
    redraw(x, d, loads(x.layer, x.microbatch), copies, rows, &expert_rows);
    if (!expert_rows.empty() || x.kind == OpKind::AllToAllV) {
      auto note = std::make_shared<CostNote>();
      note->expert_rows = std::move(expert_rows);
      if (x.kind == OpKind::AllToAllV) note->peer_bytes = model.shared_all_to_all_bytes(x);
      x.cost = std::move(note);
    }
  }
  // Saved activations of MoE layers follow the rows the local experts really processed.
  const double per_row = activation_bytes_per_row(d);
  auto& buffers = out.buffers;
  std::vector<char> changed(buffers.size(), 0);
  for (size_t b = 0; b < buffers.size(); ++b) {
    const Buffer& buffer = buffers[b];
    if (!routed_activation(buffer) || !is_moe_layer(job.model, buffer.layer)) continue;
    buffers[b].bytes += (loads(buffer.layer, buffer.microbatch).rows - rows) * per_row;
    changed[b] = 1;
  }
  for (Instruction& x : ins)
    if (is_memory(x.kind) && x.buffer >= 0 && changed[static_cast<size_t>(x.buffer)])
      x.bytes = buffers[static_cast<size_t>(x.buffer)].bytes;
  return out;
}

double grouped_gemm_factor(const ComputeModel& model, const Instruction& x, const std::vector<int64_t>& rows) {
  if (rows.size() <= 1) return 1.0;
  const int64_t largest = *std::max_element(rows.begin(), rows.end());
  if (x.kind == OpKind::GemmGradWeight) {   // reduction over each expert's rows
    Instruction one = x;
    one.m = largest;
    one.batch = 1;
    one.flops = 2.0 * double(largest) * double(x.n) * double(x.k);
    one.bytes = x.bytes / double(rows.size());
    const double all = model.time(x);
    return all > 0 ? std::max(1.0, model.time(one) / all) : 1.0;
  }
  GemmProblem actual;
  actual.group_m = rows;
  actual.n = x.kind == OpKind::Gemm ? x.n : x.k;
  actual.k = x.kind == OpKind::Gemm ? x.k : x.n;
  actual.precision = x.dtype == DType::FP32 ? GemmPrecision::Fp32
                     : model.options().fp8  ? GemmPrecision::Fp8
                                            : GemmPrecision::Half;
  GemmProblem even = actual;
  even.group_m.assign(rows.size(), x.m);
  const double base = model.plan_gemm(even).time_s;
  return base > 0 ? model.plan_gemm(actual).time_s / base : 1.0;
}

}  // namespace tandem::sim
