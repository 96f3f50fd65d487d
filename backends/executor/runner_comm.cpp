// ModelRunner, communication around layers: the TP collectives of column-/row-parallel layers
// and sequence parallelism, and the pipeline's point-to-point messages.
#include <cmath>
#include <cstring>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

enum class Scope { Layer, Head, Embedding, Hidden, Grad };

// What a TP collective of the program moves: slot `src` of its scope, result in `dst`
// (all-reduce: in place; reduce-scatter: replaces src; all-gather: a new slot).
struct TpCollective {
  Site site;
  Scope scope;
  const char* src;
  const char* dst;
};

constexpr TpCollective kTpCollectives[] = {
    {Site::EmbedAr, Scope::Hidden, "hidden", "hidden"},
    {Site::EmbedRs, Scope::Hidden, "hidden", "hidden"},
    {Site::QkvAg, Scope::Layer, "ln1", "ln1_full"},
    {Site::QAg, Scope::Layer, "ln1", "ln1_full"},
    {Site::MlaAg, Scope::Layer, "mla.latent", "mla.latent_full"},
    {Site::QWgradAg, Scope::Layer, "ln1", "q.in_w"},
    {Site::QGradAr, Scope::Layer, "mla.d_x_q", "mla.d_x_q"},
    {Site::QGradRs, Scope::Layer, "mla.d_x_q", "mla.d_x_q"},
    {Site::MlaGradAr, Scope::Layer, "mla.d_latent", "mla.d_latent"},
    {Site::MlaGradRs, Scope::Layer, "mla.d_latent", "mla.d_latent"},
    {Site::ProjAr, Scope::Layer, "proj", "proj"},
    {Site::ProjRs, Scope::Layer, "proj", "proj"},
    {Site::Fc1Ag, Scope::Layer, "ln2", "mlp.in_full"},
    {Site::SharedFc1Ag, Scope::Layer, "ln2", "shared.in_full"},
    {Site::Fc2Ar, Scope::Layer, "mlp.out", "mlp.out"},
    {Site::Fc2Rs, Scope::Layer, "mlp.out", "mlp.out"},
    {Site::SharedFc2Ar, Scope::Layer, "shared.out", "shared.out"},
    {Site::SharedFc2Rs, Scope::Layer, "shared.out", "shared.out"},
    {Site::OutputAg, Scope::Head, "final_ln", "in_full"},
    {Site::ProjGradAg, Scope::Layer, "g_attn", "d_proj_full"},
    {Site::QkvWgradAg, Scope::Layer, "ln1", "qkv.in_w"},
    {Site::QkvGradAr, Scope::Layer, "d_ln1", "d_ln1"},
    {Site::QkvGradRs, Scope::Layer, "d_ln1", "d_ln1"},
    {Site::Fc2GradAg, Scope::Layer, "g_mlp", "mlp.d_out_full"},
    {Site::SharedFc2GradAg, Scope::Layer, "g_mlp", "shared.d_out_full"},
    {Site::Fc1WgradAg, Scope::Layer, "ln2", "mlp.in_w"},
    {Site::SharedFc1WgradAg, Scope::Layer, "ln2", "shared.in_w"},
    {Site::Fc1GradAr, Scope::Layer, "d_mlp_in", "d_mlp_in"},
    {Site::Fc1GradRs, Scope::Layer, "d_mlp_in", "d_mlp_in"},
    {Site::SharedFc1GradAr, Scope::Layer, "shared.d_in", "shared.d_in"},
    {Site::SharedFc1GradRs, Scope::Layer, "shared.d_in", "shared.d_in"},
    {Site::OutputWgradAg, Scope::Head, "final_ln", "in_w"},
    {Site::OutputGradAr, Scope::Head, "d_final", "d_final"},
    {Site::OutputGradRs, Scope::Head, "d_final", "d_final"},
    {Site::EmbedGradAg, Scope::Grad, "grad", "d_full"},
};

const TpCollective& find_tp_collective(Site site) {
  for (const TpCollective& c : kTpCollectives)
    if (c.site == site) return c;
  TANDEM_CHECK_MSG(false, "no TP collective at site " << to_string(site));
  return kTpCollectives[0];
}

}  // namespace

void ModelRunner::check_bytes(const Instruction& ins, int64_t elements) const {
  if (dims_.e != 4) return;
  TANDEM_CHECK_MSG(std::fabs(ins.bytes - 4.0 * double(elements)) < 0.5,
                   op_trace_line(ins) << ": the runner moves " << elements << " fp32 elements");
}

void ModelRunner::tp_collective(const Instruction& ins) {
  switch (ins.site) {
    case Site::MtpProjAg: case Site::MtpProjGradAg: case Site::MtpProjGradAr: case Site::MtpProjGradRs:
    case Site::MtpProjOutAg: case Site::MtpProjWgradAg:
      return mtp_collective(ins);
    case Site::EmbedAr: case Site::EmbedRs: case Site::EmbedGradAg:   // the MTP module's embedding
      if (mtp_layer(ins.layer)) return mtp_collective(ins);
      break;
    default: break;
  }
  const TpCollective& c = find_tp_collective(ins.site);
  const int32_t mb = ins.microbatch;
  int32_t src_scope = ins.layer, dst_scope = ins.layer;
  switch (c.scope) {
    case Scope::Layer: break;
    case Scope::Head: src_scope = dst_scope = head_scope(ins); break;
    case Scope::Embedding: src_scope = dst_scope = kEmbedding; break;
    case Scope::Hidden: src_scope = dst_scope = stream_scope(ins.chunk); break;
    case Scope::Grad:
      src_scope = stream_scope(ins.chunk);
      dst_scope = kEmbedding;
      break;
  }
  const DeviceTensor src = at(src_scope, mb, c.src);
  const int64_t t = dims_.t, rows = src.dim(0), cols = src.numel() / rows;
  switch (ins.kind) {
    case OpKind::AllReduce:
      comm_.all_reduce(ParallelGroup::Tp, src, ReduceOp::Sum);
      check_bytes(ins, src.numel());
      break;
    case OpKind::ReduceScatter: {
      TANDEM_CHECK_MSG(rows % t == 0, to_string(ins.site) << ": " << rows << " rows over TP " << t);
      DeviceTensor out = fresh({rows / t, cols});
      comm_.reduce_scatter(ParallelGroup::Tp, src, out);
      put(dst_scope, mb, c.dst, out);
      check_bytes(ins, src.numel());
      break;
    }
    case OpKind::AllGather: {
      DeviceTensor out = fresh({rows * t, cols});
      comm_.all_gather(ParallelGroup::Tp, src, out);
      put(dst_scope, mb, c.dst, out);
      check_bytes(ins, out.numel());
      break;
    }
    default: TANDEM_CHECK_MSG(false, "not a TP collective: " << op_trace_line(ins));
  }
}

// ---- pipeline messages: [n/t, h] with SP; without SP and TP > 1, Megatron's scatter/gather
// sends the TP rank's 1/t of the flattened [n, h] tensor and the receiver all-gathers over TP.

void ModelRunner::pp_send(const Instruction& ins) {
  const bool act = ins.site == Site::PpActivation;
  DeviceTensor t = act ? hidden(ins) : grad(ins);
  if (!dims_.sp && dims_.t > 1) {
    const int64_t part = t.numel() / dims_.t;
    t = t.flat().slice(tp_rank_ * part, {part});
  }
  check_bytes(ins, t.numel());
  comm_.send(ins.peer, ins.tag, t);
}

void ModelRunner::pp_recv(const Instruction& ins) {
  const bool act = ins.site == Site::PpActivation;
  const int32_t scope = stream_scope(ins.chunk);
  DeviceTensor buf;
  if (!dims_.sp && dims_.t > 1) {
    buf = put(scope, ins.microbatch, act ? "recv_act" : "recv_grad", fresh({dims_.n * dims_.h / dims_.t}));
  } else {
    buf = put(scope, ins.microbatch, act ? "hidden" : "grad", fresh({dims_.sp_rows(), dims_.h}));
  }
  post_recv(ins, buf);
}

void ModelRunner::pp_gather(const Instruction& ins) {
  const bool act = ins.phase == Phase::Forward;
  const int32_t scope = stream_scope(ins.chunk);
  DeviceTensor out = fresh({dims_.n, dims_.h});
  comm_.all_gather(ParallelGroup::Tp, at(scope, ins.microbatch, act ? "recv_act" : "recv_grad"), out.flat());
  put(scope, ins.microbatch, act ? "hidden" : "grad", out);
  check_bytes(ins, out.numel());
}

}  // namespace tandem::exec
