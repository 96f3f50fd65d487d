// The MoE MLP block (Megatron-Core's MoELayer) on the [n/r, h] token shard after the pre-MLP norm.
//
//   shared expert (TP-split MLP of f_shared on the same input), then
//   router [n/r, h] x [h, E] + top-k -> permute the n/r * k token copies
//   alltoall dispatcher: all-to-all(v) over EP (expected bytes copies * h * (EP-1)/EP under
//                        balanced routing), then all-gather over expert-TP
//   allgather dispatcher: all-gather of the [n/r, h] tokens over the expert tp-ep group, then a
//                        local permutation of the copies routed to the local experts
//   expert GEMMs: E/EP local experts as one batched GEMM each for fc1 and fc2, expected
//                 rows per expert = copies * ETP / (E/EP); ETP splits the expert ffn
//   combine: the reverse collectives, unpermute with the routing probabilities.
//
// Expected copies on this rank after dispatch: n/r * k * ETP (each rank sends its k copies of
// its n/r tokens and, with balanced routing, receives as many; the expert-TP group then shares
// them). Instructions whose sizes depend on routing are marked `routed`.
#include <cmath>

#include "core/check.h"
#include "program/lower_context.h"

namespace tandem::lower {
namespace {

const MlpNames kSharedExpert{Site::SharedFc1Ag, Site::SharedFc1, Site::SharedAct, Site::SharedFc2, Site::SharedFc2Rs,
                             Site::SharedFc2Ar, Site::SharedFc2GradAg, Site::SharedFc1WgradAg, Site::SharedFc1GradRs,
                             Site::SharedFc1GradAr, ParamSlot::SharedFc1, ParamSlot::SharedFc2};

struct MoeSizes {
  double tokens = 0;        // n/r tokens entering the block on this rank
  double copies = 0;        // tokens * k routed copies leaving this rank
  double rows = 0;          // expected copies processed by the local experts (after dispatch)
  int64_t local_experts = 1;
  double rows_per_expert = 0;
  int64_t f_local = 0;      // expert ffn on this rank: f_moe / ETP
  bool alltoall = true;
};

MoeSizes moe_sizes(const Context& ctx) {
  const Dims& d = ctx.dims;
  MoeSizes z;
  z.tokens = double(d.sp_rows());
  z.copies = z.tokens * double(d.topk);
  z.rows = z.copies * double(ctx.etp);
  z.local_experts = d.experts / d.ep;
  z.rows_per_expert = z.rows / double(z.local_experts);
  z.f_local = d.f_moe / ctx.etp;
  z.alltoall = d.dispatcher != TokenDispatcher::AllGather;
  return z;
}

int64_t rounded(double v) { return static_cast<int64_t>(std::llround(v)); }

int32_t routed(Context& ctx, int32_t index) {
  if (index >= 0) ctx.em.program().instructions[static_cast<size_t>(index)].routed = true;
  return index;
}

int32_t routed_op(Context& ctx, OpKind kind, Site site, double rows, int64_t cols, double bytes, Deps deps) {
  return routed(ctx, ctx.em.op(kind, site, rounded(rows), cols, bytes, deps));
}

// Dispatch (forward) or the backward of combine: tokens/gradients to the experts.
int32_t to_experts(Context& ctx, const MoeSizes& z, Site a2a, Site gather, int32_t x) {
  const Dims& d = ctx.dims;
  const double e = double(d.e), h = double(d.h);
  if (!z.alltoall) {
    if (ctx.tp_ep == 1) return x;
    return routed(ctx, ctx.em.collective(OpKind::AllGather, ParallelGroup::ExpertTpEp, StreamKind::EpComm, gather,
                                         z.tokens * double(ctx.tp_ep) * h * e, {x}));
  }
  int32_t out = x;
  if (ctx.ep > 1)
    out = routed(ctx, ctx.em.collective(OpKind::AllToAllV, ParallelGroup::Ep, StreamKind::EpComm, a2a,
                                        z.copies * h * e * double(ctx.ep - 1) / double(ctx.ep), {out}));
  if (ctx.etp > 1)
    out = routed(ctx, ctx.em.collective(OpKind::AllGather, ParallelGroup::ExpertTp, StreamKind::EpComm, gather,
                                        z.rows * h * e, {out}));
  return out;
}

// Combine (forward) or the backward of dispatch: expert outputs back to the token owners.
int32_t from_experts(Context& ctx, const MoeSizes& z, Site a2a, Site scatter, int32_t x) {
  const Dims& d = ctx.dims;
  const double e = double(d.e), h = double(d.h);
  if (!z.alltoall) {
    if (ctx.tp_ep == 1) return x;
    return routed(ctx, ctx.em.collective(OpKind::ReduceScatter, ParallelGroup::ExpertTpEp, StreamKind::EpComm, scatter,
                                         z.tokens * double(ctx.tp_ep) * h * e, {x}));
  }
  int32_t out = x;
  if (ctx.etp > 1)
    out = routed(ctx, ctx.em.collective(OpKind::ReduceScatter, ParallelGroup::ExpertTp, StreamKind::EpComm, scatter,
                                        z.rows * h * e, {out}));
  if (ctx.ep > 1)
    out = routed(ctx, ctx.em.collective(OpKind::AllToAllV, ParallelGroup::Ep, StreamKind::EpComm, a2a,
                                        z.copies * h * e * double(ctx.ep - 1) / double(ctx.ep), {out}));
  return out;
}

int32_t expert_gemm(Context& ctx, OpKind kind, Site site, const MoeSizes& z, int64_t n, int64_t k, Deps deps) {
  return routed(ctx, ctx.em.gemm(kind, site, rounded(z.rows_per_expert), n, k, z.local_experts, deps, z.rows_per_expert));
}

int32_t expert_weight_grad(Context& ctx, Site site, const MoeSizes& z, int64_t n, int64_t k, int32_t layer,
                           ParamSlot slot, Deps deps) {
  Instruction ins;
  ins.kind = OpKind::GemmGradWeight;
  ins.site = site;
  ins.m = rounded(z.rows_per_expert);
  ins.n = n;
  ins.k = k;
  ins.batch = z.local_experts;
  ins.routed = true;
  const double m = z.rows_per_expert, e = double(ctx.dims.e), b = double(z.local_experts);
  ins.flops = 2.0 * m * double(n) * double(k) * b;
  ins.bytes = e * b * (m * double(k) + double(k) * double(n) + m * double(n));
  return ctx.em.weight_grad(std::move(ins), param_key(layer, slot), deps);
}

double router_bytes(const Context& ctx, const MoeSizes& z) {
  const Dims& d = ctx.dims;
  // Read [n/r, h] and the router weight [h, E]; write fp32 logits and scores [n/r, E].
  return double(d.e) * (z.tokens * double(d.h) + double(d.h) * double(d.experts)) + 8.0 * z.tokens * double(d.experts);
}

}  // namespace

int32_t moe_forward(Context& ctx, int32_t x) {
  const Dims& d = ctx.dims;
  const MoeSizes z = moe_sizes(ctx);
  const double e = double(d.e), h = double(d.h);
  int32_t shared = -1;
  if (d.f_shared > 0) shared = mlp_core_forward(ctx, kSharedExpert, d.f_shared, x);
  Instruction router;
  router.kind = OpKind::Router;
  router.site = Site::Router;
  router.m = d.sp_rows();
  router.n = d.experts;
  router.k = d.h;
  router.flops = 2.0 * z.tokens * h * double(d.experts);
  router.bytes = router_bytes(ctx, z);
  int32_t probs = ctx.em.add(std::move(router), {x});
  // The aux loss needs the routing counts summed over TP x CP (Megatron's TopKRouter all-reduces
  // tokens_per_expert over the tp-cp group before it returns the probabilities): E int64 counts.
  if (ctx.job.model.moe_aux_loss_coeff > 0 && ctx.tp * ctx.cp > 1)
    probs = ctx.em.collective(OpKind::AllReduce, ParallelGroup::TpCp, StreamKind::TpComm, Site::RouterCounts,
                              8.0 * double(d.experts), {probs});
  int32_t tokens = probs;
  if (z.alltoall) tokens = routed_op(ctx, OpKind::Permute, Site::Permute, z.copies, d.h, 2.0 * z.copies * h * e, {probs});
  int32_t in = to_experts(ctx, z, Site::DispatchA2a, Site::DispatchAg, tokens);
  if (!z.alltoall) in = routed_op(ctx, OpKind::Permute, Site::Permute, z.rows, d.h, 2.0 * z.rows * h * e, {in});
  const int64_t cols = d.mlp_fc1_cols(z.f_local);
  const int32_t fc1 = expert_gemm(ctx, OpKind::Gemm, Site::ExpertFc1, z, cols, d.h, {in});
  const double act_bytes = z.rows * double(z.f_local) * e * (d.gated ? 3.0 : 2.0);
  const int32_t act = routed_op(ctx, OpKind::Activation, Site::ExpertAct, z.rows, z.f_local, act_bytes, {fc1});
  const int32_t fc2 = expert_gemm(ctx, OpKind::Gemm, Site::ExpertFc2, z, d.h, z.f_local, {act});
  int32_t back = fc2;
  if (!z.alltoall) back = routed_op(ctx, OpKind::Unpermute, Site::Unpermute, z.rows, d.h, 2.0 * z.rows * h * e, {fc2});
  back = from_experts(ctx, z, Site::CombineA2a, Site::CombineRs, back);
  if (z.alltoall) back = routed_op(ctx, OpKind::Unpermute, Site::Unpermute, z.copies, d.h, 3.0 * z.copies * h * e, {back});
  if (shared < 0) return back;
  return ctx.em.op(OpKind::Elementwise, Site::SharedAdd, d.sp_rows(), d.h, 3.0 * z.tokens * h * e, {back, shared});
}

int32_t moe_backward(Context& ctx, int32_t layer, int32_t dy, const LayerOptions& options) {
  const Dims& d = ctx.dims;
  const MoeSizes z = moe_sizes(ctx);
  const double e = double(d.e), h = double(d.h);
  int32_t g = dy;
  if (z.alltoall) g = routed_op(ctx, OpKind::UnpermuteGrad, Site::Unpermute, z.copies, d.h, 3.0 * z.copies * h * e, {dy});
  g = to_experts(ctx, z, Site::CombineGradA2a, Site::CombineGradAg, g);
  if (!z.alltoall) g = routed_op(ctx, OpKind::UnpermuteGrad, Site::Unpermute, z.rows, d.h, 2.0 * z.rows * h * e, {g});
  const int64_t cols = d.mlp_fc1_cols(z.f_local);
  const int32_t dact = expert_gemm(ctx, OpKind::GemmGradInput, Site::ExpertFc2, z, d.h, z.f_local, {g});
  expert_weight_grad(ctx, Site::ExpertFc2, z, d.h, z.f_local, layer, ParamSlot::ExpertFc2, {g});
  if (options.moe_act) {   // the activation again from the kept fc1 output
    ctx.em.cursor.recompute = true;
    routed_op(ctx, OpKind::Activation, Site::ExpertAct, z.rows, z.f_local, z.rows * double(z.f_local) * e * (d.gated ? 3.0 : 2.0), {});
    ctx.em.cursor.recompute = false;
  }
  const double act_bytes = z.rows * double(z.f_local) * e * (d.gated ? 5.0 : 3.0);
  const int32_t dfc1 = routed_op(ctx, OpKind::ActivationGrad, Site::ExpertAct, z.rows, z.f_local, act_bytes, {dact});
  const int32_t dx = expert_gemm(ctx, OpKind::GemmGradInput, Site::ExpertFc1, z, cols, d.h, {dfc1});
  expert_weight_grad(ctx, Site::ExpertFc1, z, cols, d.h, layer, ParamSlot::ExpertFc1, {dfc1});
  int32_t back = dx;
  if (!z.alltoall) back = routed_op(ctx, OpKind::PermuteGrad, Site::Permute, z.rows, d.h, 2.0 * z.rows * h * e, {dx});
  back = from_experts(ctx, z, Site::DispatchGradA2a, Site::DispatchGradRs, back);
  if (z.alltoall) back = routed_op(ctx, OpKind::PermuteGrad, Site::Permute, z.copies, d.h, 2.0 * z.copies * h * e, {back});
  // Router: input gradient now, weight gradient with the other weight gradients.
  Instruction rg;
  rg.kind = OpKind::RouterGrad;
  rg.site = Site::Router;
  rg.m = d.sp_rows();
  rg.n = d.experts;
  rg.k = d.h;
  rg.flops = 2.0 * z.tokens * h * double(d.experts);
  rg.bytes = router_bytes(ctx, z);
  const int32_t drouter = ctx.em.add(std::move(rg), {back});
  Instruction rw;
  rw.kind = OpKind::GemmGradWeight;
  rw.site = Site::Router;
  rw.m = d.sp_rows();
  rw.n = d.experts;
  rw.k = d.h;
  rw.flops = 2.0 * z.tokens * h * double(d.experts);
  rw.bytes = router_bytes(ctx, z);
  ctx.em.weight_grad(std::move(rw), param_key(layer, ParamSlot::Router), {back});
  int32_t out = ctx.em.op(OpKind::Elementwise, Site::MoeGradAdd, d.sp_rows(), d.h, 3.0 * z.tokens * h * e, {drouter, back});
  if (d.f_shared > 0) {
    if (options.shared_experts) {
      ctx.em.cursor.recompute = true;
      mlp_core_forward(ctx, kSharedExpert, d.f_shared, -1);
      ctx.em.cursor.recompute = false;
    }
    const int32_t ds = mlp_core_backward(ctx, kSharedExpert, d.f_shared, layer, dy);
    out = ctx.em.op(OpKind::Elementwise, Site::SharedGradAdd, d.sp_rows(), d.h, 3.0 * z.tokens * h * e, {out, ds});
  }
  return out;
}

}  // namespace tandem::lower
