// ParamStore: real tensors for the lowering's parameter list, bucket buffers, init (param_store.h).
#include "backends/executor/param_store.h"

#include <algorithm>
#include <cmath>

#include "backends/executor/init_rng.h"
#include "core/check.h"

namespace tandem::exec {

namespace {

using lower::ParamSlot;

// Initial value and shard rule of one tensor, as add_tensor spells it.
struct Cut {
  Param::Init init;
  int64_t rows, cols;
  ShardKind shard;
  int64_t parts, part;
};

void check_divisible(const char* field, int64_t value, int64_t parts, const char* by) {
  if (parts > 0 && value % parts != 0)
    throw_field_error(field, value, std::string("must be divisible by ") + by + " = " + std::to_string(parts) +
                                        " for the CPU backend");
}

// One real tensor of lowering entry `t`.
std::unique_ptr<Param> make_param(const lower::ParamTensor& t, int chunk, std::string name, bool bias, const Cut& c,
                                  int64_t experts, int64_t first_expert) {
  const ShardRule cut{c.rows, c.cols, c.shard, c.parts, c.part};
  auto p = std::make_unique<Param>();
  p->name = std::move(name);
  p->key = t.key;
  p->layer = t.layer;
  p->slot = t.slot;
  p->chunk = chunk;
  p->bias = bias;
  p->tp_replicated = t.tp_replicated || cut.kind == ShardKind::Replicated;
  p->sp_grad_sync = t.tp_replicated;
  p->expert = t.expert;
  p->no_weight_decay = bias || c.init == Param::Init::Ones;
  p->init = c.init;
  p->full_rows = cut.rows;
  p->full_cols = cut.cols;
  p->shard = cut.kind;
  p->parts = cut.parts;
  p->part = cut.part;
  p->experts = experts;
  p->first_expert = first_expert;
  if (cut.kind != ShardKind::Replicated)
    check_divisible((p->name + " rows/cols").c_str(), cut.kind == ShardKind::Rows ? cut.rows : cut.cols,
                    cut.parts * (cut.kind == ShardKind::GatedColumns ? 2 : 1), "its split");
  p->shape = cut.rows == 1 ? Shape{cut.local_cols()} : Shape{cut.local_rows(), cut.local_cols()};
  if (t.expert) p->shape.insert(p->shape.begin(), experts);
  return p;
}

std::vector<float> draw(const std::string& name, int64_t count, Param::Init init, int64_t seed, double std_dev) {
  std::vector<float> v(static_cast<size_t>(count));
  if (init == Param::Init::Ones || init == Param::Init::Zeros) {
    std::fill(v.begin(), v.end(), init == Param::Init::Ones ? 1.0f : 0.0f);
    return v;
  }
  NormalStream rng(stream_seed(seed, name));
  for (float& x : v) x = static_cast<float>(std_dev * rng.normal());
  return v;
}

// What the real backends' multi-latent attention covers (runner_mla.cpp).
void check_mla(const lower::Dims& d) {
  if (d.bias)
    throw UserError("--multi-latent-attention with linear biases is not supported by the CPU backend (Megatron-Core's "
                    "MLA projections have none; pass --disable-bias-linear)");
  if (d.cp > 1)
    throw_field_error("context_parallel_size", d.cp, "multi-latent attention with context parallelism is not "
                                                      "supported by the CPU backend yet");
}

}  // namespace

int64_t ShardRule::full_index(int64_t r, int64_t c) const {
  int64_t src_r = r, src_c = c;
  switch (kind) {
    case ShardKind::Replicated: break;
    case ShardKind::Rows: src_r = part * local_rows() + r; break;
    case ShardKind::Columns: src_c = part * local_cols() + c; break;
    case ShardKind::GatedColumns: {
      const int64_t half = local_cols() / 2;
      src_c = c < half ? part * half + c : cols / 2 + part * half + (c - half);
      break;
    }
  }
  return src_r * cols + src_c;
}

std::vector<float> ShardRule::cut(const std::vector<float>& full) const {
  TANDEM_CHECK(static_cast<int64_t>(full.size()) == rows * cols);
  const int64_t lr = local_rows(), lc = local_cols();
  std::vector<float> out(static_cast<size_t>(lr * lc));
  for (int64_t r = 0; r < lr; ++r)
    for (int64_t c = 0; c < lc; ++c) out[static_cast<size_t>(r * lc + c)] = full[static_cast<size_t>(full_index(r, c))];
  return out;
}

ParamStore::ParamStore(Device& device, const Job& job, const ParallelGrid& grid, const Schedule& schedule,
                       int64_t rank)
    : device_(device),
      job_(job),
      grid_(grid),
      rank_(rank),
      schedule_(schedule),
      layout_(lower::rank_parameters(job, grid, schedule, rank)) {
  distributed_ = job.parallel.use_distributed_optimizer;
  const lower::Dims& d = layout_.dims;
  if (d.mla) check_mla(d);
  if (job.model.moe_router_score_function == RouterScore::Sigmoid && job.model.moe_aux_loss_coeff > 0)
    throw_field_error("moe_aux_loss_coeff", job.model.moe_aux_loss_coeff,
                      "the aux loss with --moe-router-score-function sigmoid is not supported by the CPU backend yet "
                      "(DeepSeek-V3 balances with --moe-router-enable-expert-bias)");
  if (d.mtp_layers > 0 && d.cp > 1)
    throw_field_error("context_parallel_size", d.cp, "multi-token prediction with context parallelism is not "
                                                      "supported by the CPU backend yet");
  check_divisible("num_query_groups", d.g, d.t, "--tensor-model-parallel-size");
  check_divisible("num_attention_heads", d.a, d.g, "num_query_groups");
  for (int c = 0; c < schedule.num_chunks(); ++c)
    for (const lower::ParamTensor& t : layout_.tensors[static_cast<size_t>(c)]) add_tensor(t, c);
  build_buckets();
}

void ParamStore::add_tensor(const lower::ParamTensor& t, int chunk) {
  const lower::Dims& d = layout_.dims;
  const DenseCoord dc = grid_.dense_coord(rank_);
  const ExpertCoord ec = grid_.expert_coord(rank_);
  const int64_t tp = d.t, tpr = dc.tp;
  const std::string layer = "layers." + std::to_string(t.layer) + ".";
  int64_t total = 0;
  auto add = [&](std::string name, bool bias, const Cut& c, int64_t experts = 1, int64_t first_expert = 0) {
    params_.push_back(make_param(t, chunk, std::move(name), bias, c, experts, first_expert));
    total += numel_of(params_.back()->shape);
  };
  auto norm = [&](const std::string& name, int64_t width = 0) {
    const int64_t w = width > 0 ? width : d.h;
    add(name + ".weight", false, {Param::Init::Ones, 1, w, ShardKind::Replicated, 1, 0});
    if (d.norm_factor == 2) add(name + ".bias", true, {Param::Init::Zeros, 1, w, ShardKind::Replicated, 1, 0});
  };
  auto column = [&](const std::string& name, int64_t in, int64_t out, bool gated, bool bias) {
    const ShardKind k = gated ? ShardKind::GatedColumns : ShardKind::Columns;
    add(name + ".weight", false, {Param::Init::Normal, in, out, k, tp, tpr});
    if (bias) add(name + ".bias", true, {Param::Init::Zeros, 1, out, k, tp, tpr});
  };
  auto row = [&](const std::string& name, int64_t in, int64_t out) {
    if (t.tp_replicated) add(name + ".bias", true, {Param::Init::Zeros, 1, out, ShardKind::Replicated, 1, 0});
    else add(name + ".weight", false, {Param::Init::ScaledNormal, in, out, ShardKind::Rows, tp, tpr});
  };
  const int64_t local_experts = d.experts > 0 ? d.experts / d.ep : 0;
  const int64_t q_in = d.q_lora > 0 ? d.q_lora : d.h, q_cols = d.a * (d.d_nope + d.d_rope);
  auto whole = [&](const std::string& name, int64_t in, int64_t out) {   // TP-replicated weight
    add(name + ".weight", false, {Param::Init::Normal, in, out, ShardKind::Replicated, 1, 0});
  };
  switch (t.slot) {
    case ParamSlot::InputNorm: norm(layer + "input_norm"); break;
    case ParamSlot::PreMlpNorm: norm(layer + "pre_mlp_norm"); break;
    case ParamSlot::FinalNorm: norm("final_norm"); break;
    case ParamSlot::Qkv: column(layer + "qkv", d.h, (d.a + 2 * d.g) * d.d, false, d.qkv_bias); break;
    case ParamSlot::Proj: row(layer + "proj", d.a * (d.mla ? d.d_v : d.d), d.h); break;
    // Multi-latent attention: down projections and their norms whole on every TP rank, up
    // projections column-parallel (whole heads per rank: [per head q_nope | q_pe], [k_nope | v]).
    case ParamSlot::QDown: whole(layer + "q_down", d.h, d.q_lora); break;
    case ParamSlot::QNorm: norm(layer + "q_norm", d.q_lora); break;
    case ParamSlot::QUp: column(layer + (d.q_lora > 0 ? "q_up" : "q"), q_in, q_cols, false, false); break;
    case ParamSlot::KvDown: whole(layer + "kv_down", d.h, d.kv_lora + d.d_rope); break;
    case ParamSlot::KvNorm: norm(layer + "kv_norm", d.kv_lora); break;
    case ParamSlot::KvUp: column(layer + "kv_up", d.kv_lora, d.a * (d.d_nope + d.d_v), false, false); break;
    // Multi-token prediction: enorm, hnorm and the module's final norm; eh_proj [2h, h]
    // column-parallel (Megatron-Core's MultiTokenPredictionLayer).
    case ParamSlot::MtpNorms: for (const char* n : {"enorm", "hnorm", "final_norm"}) norm(layer + "mtp." + n); break;
    case ParamSlot::MtpProj: column(layer + "mtp.eh_proj", 2 * d.h, d.h, false, false); break;
    case ParamSlot::Fc1: column(layer + "fc1", d.h, d.mlp_fc1_cols(d.f), d.gated, d.bias); break;
    case ParamSlot::Fc2: row(layer + "fc2", d.f, d.h); break;
    case ParamSlot::SharedFc1: column(layer + "shared_fc1", d.h, d.mlp_fc1_cols(d.f_shared), d.gated, d.bias); break;
    case ParamSlot::SharedFc2: row(layer + "shared_fc2", d.f_shared, d.h); break;
    case ParamSlot::Router:
      add(layer + "router.weight", false, {Param::Init::Normal, d.h, d.experts, ShardKind::Replicated, 1, 0});
      break;
    case ParamSlot::ExpertFc1:
    case ParamSlot::ExpertFc2: {
      if (d.bias) throw UserError("MoE with linear biases is not supported by the CPU backend (pass --disable-bias-linear)");
      const bool fc1 = t.slot == ParamSlot::ExpertFc1;
      const Cut cut = fc1 ? Cut{Param::Init::Normal, d.h, d.mlp_fc1_cols(d.f_moe),
                                d.gated ? ShardKind::GatedColumns : ShardKind::Columns, d.etp, ec.etp}
                          : Cut{Param::Init::ScaledNormal, d.f_moe, d.h, ShardKind::Rows, d.etp, ec.etp};
      add(layer + (fc1 ? "experts.fc1.weight" : "experts.fc2.weight"), false, cut, local_experts, ec.ep * local_experts);
      break;
    }
    case ParamSlot::WordEmbedding: {
      add("embedding.word", false, {Param::Init::Normal, d.vocab, d.h, ShardKind::Rows, tp, tpr});
      const int stage = schedule_.stage_of(layout_.pipeline_rank, chunk);
      params_.back()->shared_copy = t.shared_embedding && stage != 0;
      break;
    }
    case ParamSlot::Positions:
      add("embedding.position", false, {Param::Init::Normal, d.positions, d.h, ShardKind::Replicated, 1, 0});
      break;
    case ParamSlot::Output: add("output.weight", false, {Param::Init::Normal, d.vocab, d.h, ShardKind::Rows, tp, tpr}); break;
    default:
      throw UserError("parameter slot " + std::to_string(static_cast<int>(t.slot)) +
                      " is not supported by the CPU backend yet");
  }
  TANDEM_CHECK_MSG(total == std::llround(t.elements), "parameter key " << t.key << ": " << total
                                                                        << " elements, the lowering counts " << t.elements);
}

void ParamStore::build_buckets() {
  const int chunks = schedule_.num_chunks();
  buckets_.assign(static_cast<size_t>(chunks), {});
  const int64_t tp_rank = grid_.dense_coord(rank_).tp;
  for (int c = 0; c < chunks; ++c) {
    const int mirror_rank = layout_.mirror_pipeline_rank[static_cast<size_t>(c)];
    const bool mirror = mirror_rank >= 0 && mirror_rank < layout_.pipeline_rank;
    const std::vector<lower::Bucket>& list = layout_.buckets[static_cast<size_t>(c)];
    for (size_t i = 0; i < list.size(); ++i) {
      ParamBucket b;
      b.chunk = c;
      b.index = static_cast<int>(i);
      b.expert = list[i].expert;
      b.group = b.expert ? ParallelGroup::ExpertDp : ParallelGroup::DpCp;
      const GroupMembership m = grid_.group_of(rank_, b.group);
      b.dp = static_cast<int64_t>(m.ranks.size());
      b.dp_rank = m.index_in_group;
      for (int64_t key : list[i].keys)
        for (auto& p : params_)
          if (p->chunk == c && p->key == key) b.params.push_back(p.get());
      for (Param* p : b.params) b.elements += numel_of(p->shape);
      TANDEM_CHECK_MSG(b.elements == std::llround(list[i].elements),
                       "bucket " << i << " of chunk " << c << ": " << b.elements << " vs " << list[i].elements);
      b.shard = distributed_ ? (b.elements + b.dp - 1) / b.dp : b.elements;
      const int64_t size = distributed_ ? b.dp * b.shard : b.elements;
      b.values = device_.zeros({size});
      b.grads = device_.zeros({size});
      int64_t offset = 0;
      for (Param* p : b.params) {
        p->mirror_copy = mirror;
        p->value = b.values.slice(offset, p->shape);
        p->grad = b.grads.slice(offset, p->shape);
        const int64_t n = numel_of(p->shape);
        const int64_t lo = distributed_ ? b.dp_rank * b.shard : 0, hi = distributed_ ? lo + b.shard : b.elements;
        const int64_t begin = std::max(offset, lo), end = std::min(offset + n, hi);
        if (begin < end) {
          OptimSegment s;
          s.param = p;
          s.begin = begin - offset;
          s.end = end - offset;
          s.exp_avg = device_.zeros({end - begin});
          s.exp_avg_sq = device_.zeros({end - begin});
          s.in_norm = !(p->tp_replicated && !p->expert && tp_rank != 0) && !p->shared_copy && !p->mirror_copy;
          b.segments.push_back(std::move(s));
        }
        offset += n;
      }
      buckets_[static_cast<size_t>(c)].push_back(std::move(b));
    }
  }
  for (auto& p : params_)
    TANDEM_CHECK_MSG(p->value.defined(), "parameter " << p->name << " is in no bucket");
}

void ParamStore::initialize(int64_t seed, double init_std) {
  const double scaled = init_std / std::sqrt(2.0 * double(job_.model.num_layers));
  for (auto& p : params_) {
    const ShardRule cut = p->rule();
    const double sd = p->init == Param::Init::ScaledNormal ? scaled : init_std;
    std::vector<float> local;
    for (int64_t e = 0; e < p->experts; ++e) {
      const std::vector<float> part = cut.cut(draw(p->full_name(e), p->full_rows * p->full_cols, p->init, seed, sd));
      local.insert(local.end(), part.begin(), part.end());
    }
    device_.upload(local, p->value);
  }
  for (auto& chunk : buckets_)
    for (ParamBucket& b : chunk)
      for (OptimSegment& s : b.segments) {
        device_.fill(s.exp_avg, 0.0f);
        device_.fill(s.exp_avg_sq, 0.0f);
      }
  zero_grads();
}

void ParamStore::zero_grads() {
  for (auto& chunk : buckets_)
    for (ParamBucket& b : chunk) device_.fill(b.grads, 0.0f);
}

Param* ParamStore::find(int32_t layer, lower::ParamSlot slot, bool bias) {
  const int64_t key = lower::param_key(layer, slot);
  for (auto& p : params_)
    if (p->key == key && p->bias == bias) return p.get();
  return nullptr;
}

Param& ParamStore::get(int32_t layer, lower::ParamSlot slot, bool bias) {
  Param* p = find(layer, slot, bias);
  TANDEM_CHECK_MSG(p != nullptr, "no parameter for layer " << layer << " slot " << static_cast<int>(slot)
                                                           << (bias ? " (bias)" : ""));
  return *p;
}

ParamBucket& ParamStore::bucket(int chunk, int index) {
  TANDEM_CHECK_MSG(chunk >= 0 && static_cast<size_t>(chunk) < buckets_.size() && index >= 0 &&
                       static_cast<size_t>(index) < buckets_[static_cast<size_t>(chunk)].size(),
                   "no bucket " << index << " in chunk " << chunk);
  return buckets_[static_cast<size_t>(chunk)][static_cast<size_t>(index)];
}

}  // namespace tandem::exec
