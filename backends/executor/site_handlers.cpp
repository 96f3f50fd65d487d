// The (OpKind, Site) -> Handler table (site_handlers.h).
#include "backends/executor/site_handlers.h"

#include <initializer_list>

namespace tandem::exec {

namespace {

using K = OpKind;
using H = Handler;

struct KindHandler {
  OpKind kind;
  Handler handler;
};

// The handler for `kind` among the pairs a site accepts; None for any other kind.
Handler pick(OpKind kind, std::initializer_list<KindHandler> pairs) {
  for (const KindHandler& p : pairs)
    if (p.kind == kind) return p.handler;
  return H::None;
}

Handler only(OpKind kind, OpKind accepted, Handler handler) { return kind == accepted ? handler : H::None; }

Handler gemms(OpKind kind) {
  return pick(kind, {{K::Gemm, H::Gemm}, {K::GemmGradInput, H::GemmGradInput}, {K::GemmGradWeight, H::GemmGradWeight}});
}
Handler norms(OpKind kind) { return pick(kind, {{K::Norm, H::Norm}, {K::NormGrad, H::NormGrad}}); }
Handler activations(OpKind kind) {
  return pick(kind, {{K::Activation, H::Activation}, {K::ActivationGrad, H::ActivationGrad}});
}
Handler tp_collective(OpKind kind) {
  return pick(kind, {{K::AllReduce, H::TpCollective}, {K::ReduceScatter, H::TpCollective},
                     {K::AllGather, H::TpCollective}});
}
Handler moe_collective(OpKind kind) {
  return pick(kind, {{K::AllToAllV, H::MoeCollective}, {K::AllGather, H::MoeCollective},
                     {K::ReduceScatter, H::MoeCollective}});
}

}  // namespace

Handler handler_of(OpKind kind, Site site) {
  switch (site) {
    case Site::None: case Site::Alloc: case Site::Free:
      return H::None;
    // Embedding and head.
    case Site::Embedding: return pick(kind, {{K::Embedding, H::Embedding}, {K::EmbeddingGrad, H::EmbeddingGrad}});
    case Site::EmbedDropout: return only(kind, K::Elementwise, H::EmbeddingDropout);
    case Site::EmbedAr: case Site::EmbedRs: case Site::EmbedGradAg: case Site::OutputAg:
    case Site::OutputGradAr: case Site::OutputGradRs: case Site::OutputWgradAg:
      return tp_collective(kind);
    case Site::FinalNorm: return norms(kind);
    case Site::Output: return gemms(kind);
    case Site::Loss: return pick(kind, {{K::CrossEntropy, H::CrossEntropy}, {K::CrossEntropyGrad, H::CrossEntropyGrad}});
    case Site::LossReduce: return only(kind, K::Elementwise, H::LossReduce);
    case Site::CeMax: case Site::CeTarget: case Site::CeSum:
      return only(kind, K::AllReduce, H::CeCollective);
    // Attention.
    case Site::InputNorm: return norms(kind);
    case Site::Qkv: case Site::Proj:
      return gemms(kind);
    case Site::QkvAg: case Site::QkvGradAr: case Site::QkvGradRs: case Site::QkvWgradAg: case Site::ProjAr:
    case Site::ProjRs: case Site::ProjGradAg:
      return tp_collective(kind);
    case Site::Rope: return pick(kind, {{K::Rope, H::Rope}, {K::RopeGrad, H::RopeGrad}});
    case Site::Attn: return pick(kind, {{K::Attention, H::Attention}, {K::AttentionGrad, H::AttentionGrad}});
    case Site::AttnResidual: return only(kind, K::Elementwise, H::Residual);
    case Site::CpKv: case Site::CpKvDkv: case Site::CpDkv:
      return pick(kind, {{K::Send, H::CpSend}, {K::Recv, H::CpRecv}});
    // Multi-latent attention (runner_mla.cpp).
    case Site::Q: case Site::QDown: case Site::QUp: case Site::KvDown: case Site::KvUp:
      return gemms(kind);
    case Site::QNorm: case Site::KvNorm: return norms(kind);
    case Site::QAg: case Site::QGradAr: case Site::QGradRs: case Site::QWgradAg: case Site::MlaAg:
    case Site::MlaGradAr: case Site::MlaGradRs:
      return tp_collective(kind);
    case Site::MlaGradAdd: return only(kind, K::Elementwise, H::MlaAdd);
    // Dense MLP.
    case Site::PreMlpNorm: return norms(kind);
    case Site::Fc1: case Site::Fc2:
      return gemms(kind);
    case Site::Fc1Ag: case Site::Fc1GradAr: case Site::Fc1GradRs: case Site::Fc1WgradAg: case Site::Fc2Ar:
    case Site::Fc2Rs: case Site::Fc2GradAg:
      return tp_collective(kind);
    case Site::Act: return activations(kind);
    case Site::MlpResidual: return only(kind, K::Elementwise, H::Residual);
    case Site::ResidualGrad: return only(kind, K::Elementwise, H::ResidualGrad);
    // MoE.
    case Site::Router:
      return pick(kind, {{K::Router, H::Router}, {K::RouterGrad, H::RouterGrad}, {K::GemmGradWeight, H::GemmGradWeight}});
    case Site::RouterCounts: return only(kind, K::AllReduce, H::RouterCounts);
    case Site::Permute: return pick(kind, {{K::Permute, H::Permute}, {K::PermuteGrad, H::PermuteGrad}});
    case Site::Unpermute: return pick(kind, {{K::Unpermute, H::Unpermute}, {K::UnpermuteGrad, H::UnpermuteGrad}});
    case Site::DispatchA2a: case Site::DispatchAg: case Site::DispatchGradA2a: case Site::DispatchGradRs:
    case Site::CombineA2a: case Site::CombineRs: case Site::CombineGradA2a: case Site::CombineGradAg:
      return moe_collective(kind);
    case Site::ExpertFc1: case Site::ExpertFc2: case Site::SharedFc1: case Site::SharedFc2:
      return gemms(kind);
    case Site::ExpertAct: case Site::SharedAct:
      return activations(kind);
    case Site::MoeGradAdd: case Site::SharedAdd: case Site::SharedGradAdd:
      return only(kind, K::Elementwise, H::MoeAdd);
    case Site::SharedFc1Ag: case Site::SharedFc1GradAr: case Site::SharedFc1GradRs:
    case Site::SharedFc1WgradAg: case Site::SharedFc2Ar: case Site::SharedFc2Rs: case Site::SharedFc2GradAg:
      return tp_collective(kind);
    // Multi-token prediction (runner_mtp.cpp).
    case Site::MtpEmbedding:
      return pick(kind, {{K::Embedding, H::Embedding}, {K::EmbeddingGrad, H::EmbeddingGrad}});
    case Site::MtpEnorm: case Site::MtpHnorm: return norms(kind);
    case Site::MtpProj: return gemms(kind);
    case Site::MtpProjAg: case Site::MtpProjGradAg: case Site::MtpProjGradAr: case Site::MtpProjGradRs:
    case Site::MtpProjOutAg: case Site::MtpProjWgradAg:
      return tp_collective(kind);
    case Site::MtpGradAdd: return only(kind, K::Elementwise, H::MtpAdd);
    // Pipeline.
    case Site::PpActivation: case Site::PpGradient:
      return pick(kind, {{K::Send, H::PpSend}, {K::Recv, H::PpRecv}});
    case Site::PpGather: return only(kind, K::AllGather, H::PpGather);
    case Site::MirrorGrad: return pick(kind, {{K::Send, H::MirrorSend}, {K::Recv, H::MirrorRecv}});
    case Site::MirrorGradAdd: return only(kind, K::Elementwise, H::MirrorAdd);
    // Gradient sync and optimizer.
    case Site::DpGrad: case Site::EdpGrad:
      return pick(kind, {{K::AllReduce, H::DpGrad}, {K::ReduceScatter, H::DpGrad}});
    case Site::SpNormGrad: return only(kind, K::AllReduce, H::SpNormGrad);
    case Site::EmbeddingGrad: return only(kind, K::AllReduce, H::EmbeddingGradSync);
    case Site::GradNorm: case Site::GradNormExpert:
      return only(kind, K::AllReduce, H::GradNorm);
    case Site::ExpertBias:
      return pick(kind, {{K::AllReduce, H::ExpertBias}, {K::Send, H::ExpertBias}, {K::Recv, H::ExpertBias}});
    case Site::Adam: return only(kind, K::OptimizerStep, H::OptimizerStep);
    case Site::DpParamAg: case Site::EdpParamAg:
      return only(kind, K::AllGather, H::ParamGather);
  }
  return H::None;
}

const char* to_string(Handler handler) {
  switch (handler) {
    case H::None: return "none";
    case H::Norm: return "norm";
    case H::NormGrad: return "norm-grad";
    case H::Gemm: return "gemm";
    case H::GemmGradInput: return "gemm-grad-input";
    case H::GemmGradWeight: return "gemm-grad-weight";
    case H::Rope: return "rope";
    case H::RopeGrad: return "rope-grad";
    case H::Attention: return "attention";
    case H::AttentionGrad: return "attention-grad";
    case H::Activation: return "activation";
    case H::ActivationGrad: return "activation-grad";
    case H::Residual: return "residual";
    case H::ResidualGrad: return "residual-grad";
    case H::EmbeddingDropout: return "embedding-dropout";
    case H::Embedding: return "embedding";
    case H::EmbeddingGrad: return "embedding-grad";
    case H::CrossEntropy: return "cross-entropy";
    case H::CrossEntropyGrad: return "cross-entropy-grad";
    case H::LossReduce: return "loss-reduce";
    case H::CeCollective: return "ce-collective";
    case H::TpCollective: return "tp-collective";
    case H::PpSend: return "pp-send";
    case H::PpRecv: return "pp-recv";
    case H::PpGather: return "pp-gather";
    case H::CpSend: return "cp-send";
    case H::CpRecv: return "cp-recv";
    case H::DpGrad: return "dp-grad";
    case H::SpNormGrad: return "sp-norm-grad";
    case H::EmbeddingGradSync: return "embedding-grad-sync";
    case H::GradNorm: return "grad-norm";
    case H::OptimizerStep: return "optimizer-step";
    case H::ParamGather: return "param-gather";
    case H::MirrorSend: return "mirror-send";
    case H::MirrorRecv: return "mirror-recv";
    case H::MirrorAdd: return "mirror-add";
    case H::Router: return "router";
    case H::RouterGrad: return "router-grad";
    case H::RouterCounts: return "router-counts";
    case H::Permute: return "permute";
    case H::PermuteGrad: return "permute-grad";
    case H::Unpermute: return "unpermute";
    case H::UnpermuteGrad: return "unpermute-grad";
    case H::MoeCollective: return "moe-collective";
    case H::MoeAdd: return "moe-add";
    case H::MlaAdd: return "mla-add";
    case H::ExpertBias: return "expert-bias";
    case H::MtpAdd: return "mtp-add";
  }
  return "?";
}

}  // namespace tandem::exec
