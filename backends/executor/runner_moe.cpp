// ModelRunner, the MoE block (program/lower_moe.cpp). The all-to-all token dispatcher:
//
//   ln2 [T, h] -router-> moe.logits [T, E] + routing (host: experts, kept, counts; probs [T, k])
//   -permute-> moe.perm [N, h] (expert-major, N kept copies)
//   -dispatch-a2a (EP)-> moe.in [N_local, h] (this rank's experts; grouped by local expert)
//   -expert-fc1 / expert-act / expert-fc2 (grouped GEMMs)-> moe.out_local [N_local, h]
//   -combine-a2a (EP)-> moe.y_perm [N, h] -unpermute (x probs)-> moe.out [T, h] (+ shared expert)
//
// The dispatch all-to-all first exchanges the per-expert counts (Megatron's dispatcher does
// the same before its token all-to-all), then the rows; received rows arrive per source rank
// and are regrouped per local expert (Megatron's sort_chunks_by_idxs). Without EP the
// collectives are absent and the local experts are all experts. Backward mirrors it:
// unpermute -> combine-grad-a2a -> experts -> dispatch-grad-a2a -> permute -> router (+ aux loss).
//
// The all-gather dispatcher (Megatron's default) over the expert tensor-and-expert group:
//   ln2 [T, h] -dispatch-ag-> moe.x_full [T x TPxEP, h] (+ everyone's routing) -permute (the copies
//   routed to this rank's experts)-> moe.in -experts-> moe.out_local -unpermute (x probs)->
//   moe.y_full [T x TPxEP, h] -combine-rs-> moe.out [T, h]
// With expert tensor parallelism the experts' fc1 is column- and fc2 row-split over ETP; the
// reduce-scatter then also sums the ETP partial outputs. Its backward reduce-scatters the token
// and the routing-weight gradients (dispatch-grad-rs).
#include <numeric>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

using lower::ParamSlot;

// Rows grouped by expert 0..E-1, inside an expert by increasing token (ops_permute.h's order).
PermutationPlan make_plan(const RoutingResult& r) {
  PermutationPlan plan;
  plan.tokens = r.tokens;
  plan.topk = r.topk;
  plan.tokens_per_expert = r.tokens_per_expert;
  std::vector<int64_t> next(static_cast<size_t>(r.experts) + 1, 0);
  for (int64_t e = 0; e < r.experts; ++e) next[static_cast<size_t>(e) + 1] = next[static_cast<size_t>(e)] + r.tokens_per_expert[static_cast<size_t>(e)];
  plan.source.assign(static_cast<size_t>(next.back()), 0);
  for (size_t i = 0; i < r.expert.size(); ++i)
    if (r.kept[i]) plan.source[static_cast<size_t>(next[static_cast<size_t>(r.expert[i])]++)] = static_cast<int64_t>(i);
  return plan;
}


}  // namespace

// Per-local-expert row counts of the expert GEMMs.
static std::vector<int64_t> local_counts(const std::vector<int64_t>& from_sources, int64_t local_experts) {
  std::vector<int64_t> out(static_cast<size_t>(local_experts), 0);
  for (size_t i = 0; i < from_sources.size(); ++i) out[i % static_cast<size_t>(local_experts)] += from_sources[i];
  return out;
}

void ModelRunner::router(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const DeviceTensor& x = at(L, mb, "ln2");
  const DeviceTensor logits = put(L, mb, "moe.logits", fresh({x.dim(0), dims_.experts}));
  device_.gemm_forward(x, params_.get(L, ParamSlot::Router).value, {}, WeightLayout::InOut, logits);
  RouterArgs args = settings_.router;
  if (settings_.expert_bias_rate >= 0) {
    std::vector<float>& bias = expert_bias_[L];
    bias.resize(static_cast<size_t>(dims_.experts), 0.0f);
    args.expert_bias = bias;
  }
  RoutingResult r = device_.router_forward(logits, args);
  if (on_routing && !ins.recompute) on_routing(L, mb, r.tokens, r.routed_per_expert);
  if (settings_.expert_bias_rate >= 0 && update_ && !ins.recompute) count_expert_tokens(L, r.tokens_per_expert);
  plans_[{L, mb}] = make_plan(r);
  const std::vector<int64_t> routed = r.routed_per_expert;
  const int64_t tokens = r.tokens;
  routing_[{L, mb}] = std::move(r);
  if (settings_.aux_loss_coeff > 0 && dims_.t * dims_.cp == 1) aux_loss(L, mb, routed, tokens);
}

// The counts the aux loss is normalised by, over the TP x CP group (exact in fp32 below 2^24).
void ModelRunner::router_counts(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const RoutingResult& r = routing_.at({L, mb});
  std::vector<float> counts(r.routed_per_expert.begin(), r.routed_per_expert.end());
  DeviceTensor t = fresh({static_cast<int64_t>(counts.size())});
  device_.upload(counts, t);
  comm_.all_reduce(ParallelGroup::TpCp, t, ReduceOp::Sum);
  const std::vector<float> sum = device_.to_host(t);
  aux_loss(L, mb, std::vector<int64_t>(sum.begin(), sum.end()), r.tokens * dims_.t * dims_.cp);
}

// This rank's share of the aux loss (its tokens' scores against the group's counts).
void ModelRunner::aux_loss(int32_t L, int32_t mb, std::vector<int64_t> routed, int64_t tokens) {
  totals_.aux_loss += device_.router_aux_loss(routing_.at({L, mb}), settings_.aux_loss_coeff, routed, tokens);
  aux_counts_[{L, mb}] = {std::move(routed), tokens};
}

void ModelRunner::permute(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const bool gathered = !alltoall() && exchanged();
  const PermutationPlan& plan = expert_plan(L, mb);
  DeviceTensor out = fresh({static_cast<int64_t>(plan.source.size()), dims_.h});
  device_.permute_forward(at(L, mb, gathered ? "moe.x_full" : "ln2"), plan, out);
  put(L, mb, gathered ? "moe.in" : "moe.perm", out);
}

const PermutationPlan& ModelRunner::expert_plan(int32_t L, int32_t mb) const {
  return !alltoall() && exchanged() ? gathered_plans_.at({L, mb}) : plans_.at({L, mb});
}

std::vector<int64_t> ModelRunner::my_expert_counts(int32_t L, int32_t mb) const {
  if (alltoall() && dims_.ep > 1) return local_counts(counts_.at({L, mb}), dims_.experts / dims_.ep);
  return expert_plan(L, mb).tokens_per_expert;
}

std::vector<int64_t> ModelRunner::expert_counts(int32_t L, int32_t mb) const {
  if (!alltoall() || dims_.etp == 1) return my_expert_counts(L, mb);
  const int64_t el = dims_.experts / dims_.ep;
  return local_counts(etp_counts_.at({L, mb}), el);   // summed over the ETP members
}

// Names of the MoE slots for this layer's dispatcher (see the file comment).
namespace {
struct MoeSlots {
  const char* y_perm;      // expert outputs in permuted order, unpermute's input
  const char* unpermuted;  // unpermute's output
  const char* probs_src;   // "" = the local routing's probs
  const char* dy;          // unpermute's output gradient
  const char* d_expert;    // unpermute's input gradient (expert-row order)
  const char* d_probs;     // routing-weight gradient
  const char* d_perm;      // permute's output gradient
  const char* d_tokens;    // permute's input gradient
};
MoeSlots moe_slots(bool alltoall, int64_t ep, int64_t etp) {
  if (!alltoall && ep * etp > 1)
    return {"moe.out_local", "moe.y_full", "moe.probs_full", "moe.d_y_full", "moe.d_out_local", "moe.d_probs_full",
            "moe.d_in_local", "moe.d_x_full"};
  // all-to-all (or nothing to exchange): after the EP all-to-all, or the ETP scatter, or local.
  const char* y_perm = ep > 1 ? "moe.y_perm" : (etp > 1 ? "moe.out_mine" : "moe.out_local");
  const char* d_perm = ep > 1 ? "moe.d_perm" : (etp > 1 ? "moe.d_in_mine" : "moe.d_in_local");
  return {y_perm, "moe.out", "", "g_mlp", "moe.d_y_perm", "moe.d_probs", d_perm, "moe.d_x_perm"};
}
}  // namespace

void ModelRunner::unpermute(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const MoeSlots n = moe_slots(alltoall(), dims_.ep, dims_.etp);
  const PermutationPlan& plan = expert_plan(L, mb);
  const DeviceTensor probs = *n.probs_src ? at(L, mb, n.probs_src) : routing_.at({L, mb}).probs;
  DeviceTensor out = fresh({plan.tokens, dims_.h});
  device_.unpermute_forward(at(L, mb, n.y_perm), plan, probs, out);
  put(L, mb, n.unpermuted, out);
}

void ModelRunner::unpermute_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const MoeSlots n = moe_slots(alltoall(), dims_.ep, dims_.etp);
  const DeviceTensor& y_perm = at(L, mb, n.y_perm);
  const DeviceTensor probs = *n.probs_src ? at(L, mb, n.probs_src) : routing_.at({L, mb}).probs;
  DeviceTensor d_perm = fresh(y_perm.shape), d_probs = fresh(probs.shape);
  device_.unpermute_backward(y_perm, expert_plan(L, mb), probs, at(L, mb, n.dy), d_perm, d_probs);
  put(L, mb, n.d_expert, d_perm);
  put(L, mb, n.d_probs, d_probs);
}

void ModelRunner::permute_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const MoeSlots n = moe_slots(alltoall(), dims_.ep, dims_.etp);
  const PermutationPlan& plan = expert_plan(L, mb);
  DeviceTensor dx = fresh({plan.tokens, dims_.h});
  device_.permute_backward(at(L, mb, n.d_perm), plan, dx);
  put(L, mb, n.d_tokens, dx);
}

void ModelRunner::router_grad(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const RoutingResult& r = routing_.at({L, mb});
  const DeviceTensor& logits = at(L, mb, "moe.logits");
  DeviceTensor d_logits = fresh(logits.shape);
  const auto aux = aux_counts_.find({L, mb});
  const bool with_aux = aux != aux_counts_.end();
  device_.router_backward(logits, r, at(L, mb, "moe.d_probs"), with_aux ? settings_.aux_loss_coeff : 0.0,
                          with_aux ? std::span<const int64_t>(aux->second.first) : std::span<const int64_t>(),
                          with_aux ? aux->second.second : r.tokens, settings_.aux_grad, d_logits);
  put(L, mb, "moe.d_logits", d_logits);
  DeviceTensor dx = fresh({r.tokens, dims_.h});
  device_.gemm_grad_input(d_logits, params_.get(L, ParamSlot::Router).value, WeightLayout::InOut, dx);
  put(L, mb, "moe.d_x_router", dx);
}

void ModelRunner::moe_add(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  if (ins.site == Site::SharedAdd) {
    DeviceTensor& out = at(L, mb, "moe.out");
    device_.add(out, at(L, mb, "shared.out"), out);
  } else if (ins.site == Site::MoeGradAdd) {
    const DeviceTensor& a = at(L, mb, "moe.d_x_perm");
    DeviceTensor sum = fresh(a.shape);
    device_.add(a, at(L, mb, "moe.d_x_router"), sum);
    put(L, mb, "d_mlp_in", sum);
  } else {   // shared-grad-add
    DeviceTensor& d = at(L, mb, "d_mlp_in");
    device_.add(d, at(L, mb, "shared.d_in"), d);
  }
}

// ---- expert GEMMs (grouped over the local experts) -----------------------------------------

void ModelRunner::expert_gemm(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const std::vector<int64_t> counts = expert_counts(L, mb);
  const bool fc1 = ins.site == Site::ExpertFc1;
  const DeviceTensor& x = at(L, mb, fc1 ? expert_input() : "moe.act");
  const Param& w = params_.get(L, fc1 ? ParamSlot::ExpertFc1 : ParamSlot::ExpertFc2);
  DeviceTensor y = fresh({x.dim(0), w.shape[2]});
  device_.grouped_gemm_forward(x, w.value, counts, y);
  put(L, mb, fc1 ? "moe.fc1" : "moe.out_local", y);
}

void ModelRunner::expert_gemm_grad_input(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const std::vector<int64_t> counts = expert_counts(L, mb);
  const bool fc1 = ins.site == Site::ExpertFc1;
  const DeviceTensor& dy = at(L, mb, fc1 ? "moe.d_fc1" : (exchanged() ? "moe.d_out_local" : "moe.d_y_perm"));
  const Param& w = params_.get(L, fc1 ? ParamSlot::ExpertFc1 : ParamSlot::ExpertFc2);
  DeviceTensor dx = fresh({dy.dim(0), w.shape[1]});
  device_.grouped_gemm_grad_input(dy, w.value, counts, dx);
  put(L, mb, fc1 ? "moe.d_in_local" : "moe.d_act", dx);
}

void ModelRunner::expert_gemm_grad_weight(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  if (ins.site == Site::Router) {
    device_.gemm_grad_weight(at(L, mb, "ln2"), at(L, mb, "moe.d_logits"), WeightLayout::InOut,
                             params_.get(L, ParamSlot::Router).grad, {});
    return;
  }
  const std::vector<int64_t> counts = expert_counts(L, mb);
  const bool fc1 = ins.site == Site::ExpertFc1;
  const DeviceTensor& x = at(L, mb, fc1 ? expert_input() : "moe.act");
  const DeviceTensor& dy = at(L, mb, fc1 ? "moe.d_fc1" : (exchanged() ? "moe.d_out_local" : "moe.d_y_perm"));
  device_.grouped_gemm_grad_weight(x, dy, counts, params_.get(L, fc1 ? ParamSlot::ExpertFc1 : ParamSlot::ExpertFc2).grad);
}

// ---- expert-parallel all-to-alls ------------------------------------------------------------

// Tokens to the experts (dispatch, and the backward of combine): rows of `src` in global-expert
// order go to the expert owners; what arrives is regrouped by local expert.
DeviceTensor ModelRunner::to_experts(int32_t L, int32_t mb, const DeviceTensor& src) {
  const int64_t ep = dims_.ep, el = dims_.experts / ep;
  const std::vector<int64_t>& tpe = plans_.at({L, mb}).tokens_per_expert;
  std::vector<int64_t> send(static_cast<size_t>(ep), 0), recv_rows(static_cast<size_t>(ep), 0);
  for (int64_t e = 0; e < dims_.experts; ++e) send[static_cast<size_t>(e / el)] += tpe[static_cast<size_t>(e)];
  if (!counts_.count({L, mb})) counts_[{L, mb}] = comm_.all_to_all_counts(ParallelGroup::Ep, tpe);
  const std::vector<int64_t>& got = counts_.at({L, mb});   // [source][local expert]
  for (size_t i = 0; i < got.size(); ++i) recv_rows[i / static_cast<size_t>(el)] += got[i];
  const int64_t rows = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  DeviceTensor arrived = fresh({rows, dims_.h});
  comm_.all_to_all_v(ParallelGroup::Ep, src, send, arrived, recv_rows);
  // [source][expert] blocks -> [expert][source] blocks.
  std::vector<int64_t> offset(got.size() + 1, 0), index;
  for (size_t i = 0; i < got.size(); ++i) offset[i + 1] = offset[i] + got[i];
  for (int64_t e = 0; e < el; ++e)
    for (int64_t s = 0; s < ep; ++s) {
      const size_t b = static_cast<size_t>(s * el + e);
      for (int64_t r = offset[b]; r < offset[b + 1]; ++r) index.push_back(r);
    }
  DeviceTensor out = fresh({rows, dims_.h});
  device_.gather_rows(arrived, index, out);
  return out;
}

// Expert outputs back to the token owners (combine, and the backward of dispatch).
DeviceTensor ModelRunner::from_experts(int32_t L, int32_t mb, const DeviceTensor& src) {
  const int64_t ep = dims_.ep, el = dims_.experts / ep;
  const std::vector<int64_t>& tpe = plans_.at({L, mb}).tokens_per_expert;
  const std::vector<int64_t>& got = counts_.at({L, mb});
  std::vector<int64_t> send(static_cast<size_t>(ep), 0), recv_rows(static_cast<size_t>(ep), 0);
  for (size_t i = 0; i < got.size(); ++i) send[i / static_cast<size_t>(el)] += got[i];
  for (int64_t e = 0; e < dims_.experts; ++e) recv_rows[static_cast<size_t>(e / el)] += tpe[static_cast<size_t>(e)];
  // [expert][source] blocks -> [source][expert] blocks.
  std::vector<int64_t> sorted_offset(got.size() + 1, 0), index;   // block (e, s) at e * ep + s
  for (int64_t e = 0; e < el; ++e)
    for (int64_t s = 0; s < ep; ++s) {
      const size_t k = static_cast<size_t>(e * ep + s);
      sorted_offset[k + 1] = sorted_offset[k] + got[static_cast<size_t>(s * el + e)];
    }
  for (int64_t s = 0; s < ep; ++s)
    for (int64_t e = 0; e < el; ++e) {
      const size_t k = static_cast<size_t>(e * ep + s);
      for (int64_t r = sorted_offset[k]; r < sorted_offset[k + 1]; ++r) index.push_back(r);
    }
  DeviceTensor ordered = fresh(src.shape);
  device_.gather_rows(src, index, ordered);
  const int64_t rows = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  DeviceTensor out = fresh({rows, dims_.h});
  comm_.all_to_all_v(ParallelGroup::Ep, ordered, send, out, recv_rows);
  return out;
}

void ModelRunner::moe_collective(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  if (!alltoall()) return allgather_dispatch(ins);
  if (ins.kind != OpKind::AllToAllV) return etp_exchange(ins);
  const bool etp = dims_.etp > 1;
  if (ins.site == Site::DispatchA2a) {
    put(L, mb, "moe.in", to_experts(L, mb, at(L, mb, "moe.perm")));
  } else if (ins.site == Site::CombineA2a) {
    put(L, mb, "moe.y_perm", from_experts(L, mb, at(L, mb, etp ? "moe.out_mine" : "moe.out_local")));
  } else if (ins.site == Site::CombineGradA2a) {
    put(L, mb, etp ? "moe.d_out_mine" : "moe.d_out_local", to_experts(L, mb, at(L, mb, "moe.d_y_perm")));
  } else {
    put(L, mb, "moe.d_perm", from_experts(L, mb, at(L, mb, etp ? "moe.d_in_mine" : "moe.d_in_local")));
  }
}

// ---- all-to-all dispatcher with expert tensor parallelism ----------------------------------------
// After the EP all-to-all each ETP member holds its own rows, grouped by local expert. dispatch-ag
// gathers every member's rows (variable sizes) and regroups them by expert, so every member runs
// its fc1 column slice / fc2 row slice over the same rows; combine-rs sums the fc2 partials and
// hands each member its rows back. The backward gathers the output gradients and reduce-scatters
// the input gradients the same way.

namespace {

// Row index lists between member-major ([member][expert] blocks) and expert-major order.
std::vector<int64_t> regroup(const std::vector<int64_t>& counts, int64_t members, int64_t experts, bool to_expert_major) {
  std::vector<int64_t> member_off(counts.size() + 1, 0), expert_off(counts.size() + 1, 0), index;
  for (size_t i = 0; i < counts.size(); ++i) member_off[i + 1] = member_off[i] + counts[i];   // i = m * E + e
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t m = 0; m < members; ++m) {
      const size_t k = static_cast<size_t>(e * members + m);
      expert_off[k + 1] = expert_off[k] + counts[static_cast<size_t>(m * experts + e)];
    }
  if (to_expert_major) {
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t m = 0; m < members; ++m) {
        const size_t b = static_cast<size_t>(m * experts + e);
        for (int64_t r = member_off[b]; r < member_off[b + 1]; ++r) index.push_back(r);
      }
  } else {
    for (int64_t m = 0; m < members; ++m)
      for (int64_t e = 0; e < experts; ++e) {
        const size_t k = static_cast<size_t>(e * members + m);
        for (int64_t r = expert_off[k]; r < expert_off[k + 1]; ++r) index.push_back(r);
      }
  }
  return index;
}

}  // namespace

const char* ModelRunner::expert_input() const {
  if (!alltoall()) return exchanged() ? "moe.in" : "moe.perm";
  return dims_.etp > 1 ? "moe.in_etp" : (dims_.ep > 1 ? "moe.in" : "moe.perm");
}

void ModelRunner::etp_exchange(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const ParallelGroup g = ParallelGroup::ExpertTp;
  const int64_t members = dims_.etp, el = dims_.experts / dims_.ep, h = dims_.h;
  if (!etp_counts_.count({L, mb})) {   // every member's rows per local expert
    const std::vector<int64_t> mine = my_expert_counts(L, mb);
    std::vector<int64_t> out;
    for (int64_t m = 0; m < members; ++m) out.insert(out.end(), mine.begin(), mine.end());
    etp_counts_[{L, mb}] = comm_.all_to_all_counts(g, out);
  }
  const std::vector<int64_t>& counts = etp_counts_.at({L, mb});
  std::vector<int64_t> rows(static_cast<size_t>(members), 0);
  for (size_t i = 0; i < counts.size(); ++i) rows[i / static_cast<size_t>(el)] += counts[i];
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  const int64_t me = comm_.group_rank(g);
  const bool gather = ins.kind == OpKind::AllGather;
  const char* src = ins.site == Site::DispatchAg ? (dims_.ep > 1 ? "moe.in" : "moe.perm")
                    : ins.site == Site::CombineGradAg ? (dims_.ep > 1 ? "moe.d_out_mine" : "moe.d_y_perm")
                    : ins.site == Site::CombineRs ? "moe.out_local" : "moe.d_in_local";
  const char* dst = ins.site == Site::DispatchAg ? "moe.in_etp" : ins.site == Site::CombineGradAg ? "moe.d_out_local"
                    : ins.site == Site::CombineRs ? "moe.out_mine" : "moe.d_in_mine";
  const DeviceTensor& in = at(L, mb, src);
  if (gather) {
    DeviceTensor arrived = fresh({total, h}), out = fresh({total, h});
    comm_.all_gather_v(g, in, arrived, rows);
    device_.gather_rows(arrived, regroup(counts, members, el, true), out);
    put(L, mb, dst, out);   // (the program's bytes are the expected size under balanced routing)
    return;
  }
  DeviceTensor ordered = fresh({total, h}), out = fresh({rows[static_cast<size_t>(me)], h});
  device_.gather_rows(in, regroup(counts, members, el, false), ordered);
  comm_.reduce_scatter_v(g, ordered, out, rows);
  put(L, mb, dst, out);
}

// ---- all-gather dispatcher ---------------------------------------------------------------------

namespace {

// Rows of the gathered tokens routed to experts [first, first + count), grouped by expert.
PermutationPlan local_plan(const std::vector<float>& routing, int64_t tokens, int64_t k, int64_t first, int64_t count) {
  PermutationPlan plan;
  plan.tokens = tokens;
  plan.topk = k;
  plan.tokens_per_expert.assign(static_cast<size_t>(count), 0);
  for (int64_t e = 0; e < count; ++e)
    for (int64_t i = 0; i < tokens * k; ++i) {
      const int64_t t = i / k, slot = i % k;
      const float* row = routing.data() + t * 3 * k;
      if (row[k + slot] > 0.5f && static_cast<int64_t>(row[slot]) == first + e) {
        plan.source.push_back(i);
        ++plan.tokens_per_expert[static_cast<size_t>(e)];
      }
    }
  return plan;
}

}  // namespace

void ModelRunner::allgather_dispatch(const Instruction& ins) {
  const int32_t L = ins.layer, mb = ins.microbatch;
  const ParallelGroup g = ParallelGroup::ExpertTpEp;
  const int64_t members = comm_.group_size(g), k = dims_.topk, h = dims_.h;
  if (ins.site == Site::DispatchAg) {   // tokens and routing of every member
    const DeviceTensor& x = at(L, mb, "ln2");
    const int64_t T = x.dim(0);
    DeviceTensor full = fresh({T * members, h});
    comm_.all_gather(g, x, full);
    check_bytes(ins, full.numel());
    put(L, mb, "moe.x_full", full);
    const RoutingResult& r = routing_.at({L, mb});
    std::vector<float> mine(static_cast<size_t>(T * 3 * k));   // per token [experts | kept | probs]
    const std::vector<float> probs = device_.to_host(r.probs);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < k; ++s) {
        const size_t i = static_cast<size_t>(t * k + s), row = static_cast<size_t>(t * 3 * k);
        mine[row + static_cast<size_t>(s)] = static_cast<float>(r.expert[i]);
        mine[row + static_cast<size_t>(k + s)] = r.kept[i] ? 1.0f : 0.0f;
        mine[row + static_cast<size_t>(2 * k + s)] = probs[i];
      }
    DeviceTensor local = fresh({T, 3 * k}), all = fresh({T * members, 3 * k});
    device_.upload(mine, local);
    comm_.all_gather(g, local, all);
    const std::vector<float> routing = device_.to_host(all);
    const int64_t el = dims_.experts / dims_.ep;
    gathered_plans_[{L, mb}] = local_plan(routing, T * members, k, grid_.expert_coord(rank_).ep * el, el);
    DeviceTensor probs_full = fresh({T * members, k});
    device_.copy_columns(all, 2 * k, probs_full);
    put(L, mb, "moe.probs_full", probs_full);
  } else if (ins.site == Site::CombineRs) {   // token outputs back to their owners, ETP partials summed
    const DeviceTensor& y = at(L, mb, "moe.y_full");
    DeviceTensor out = fresh({y.dim(0) / members, h});
    comm_.reduce_scatter(g, y, out);
    check_bytes(ins, y.numel());
    put(L, mb, "moe.out", out);
  } else if (ins.site == Site::CombineGradAg) {
    const DeviceTensor& dy = at(L, mb, "g_mlp");
    DeviceTensor full = fresh({dy.dim(0) * members, h});
    comm_.all_gather(g, dy, full);
    check_bytes(ins, full.numel());
    put(L, mb, "moe.d_y_full", full);
  } else {   // dispatch-grad-rs: token gradients and routing-weight gradients to their owners
    const DeviceTensor& dx = at(L, mb, "moe.d_x_full");
    DeviceTensor out = fresh({dx.dim(0) / members, h});
    comm_.reduce_scatter(g, dx, out);
    check_bytes(ins, dx.numel());
    put(L, mb, "moe.d_x_perm", out);
    const DeviceTensor& dp = at(L, mb, "moe.d_probs_full");
    DeviceTensor mine = fresh({dp.dim(0) / members, k});
    comm_.reduce_scatter(g, dp, mine);
    put(L, mb, "moe.d_probs", mine);
  }
}

}  // namespace tandem::exec
