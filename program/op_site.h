#pragma once
// What an instruction computes: its site in the model ("qkv projection", "fc1", "router",
// "logits"), one table for the whole project. Lowering stamps a Site on every instruction; the
// real executor, the op timer and the simulator switch over it, and the build treats an
// unhandled enumerator in a switch as an error (-Werror=switch, see the top CMakeLists.txt), so a
// site added here without a handler does not compile. The text is the site's name in op traces,
// Chrome traces and reports, and nothing parses it back.
//
// Adding a site: one X(...) line below, then build: every switch that must handle it fails
// until it does (backends/executor/runner_dispatch.cpp, backends/executor/op_timer.cpp,
// backends/sim/site_costs.cpp).
#include <cstdint>

// X(Enumerator, "trace text"), grouped by the part of the model that emits them.
#define TANDEM_OP_SITES(X) \
  /* memory */ \
  X(Alloc, "alloc") \
  X(Free, "free") \
  /* embedding and head */ \
  X(Embedding, "embedding") \
  X(EmbedDropout, "embed-dropout") \
  X(EmbedAr, "embed-ar") \
  X(EmbedRs, "embed-rs") \
  X(EmbedGradAg, "embed-grad-ag") \
  X(FinalNorm, "final-norm") \
  X(Output, "output") \
  X(OutputAg, "output-ag") \
  X(OutputGradAr, "output-grad-ar") \
  X(OutputGradRs, "output-grad-rs") \
  X(OutputWgradAg, "output-wgrad-ag") \
  X(Loss, "loss") \
  X(LossReduce, "loss-reduce") \
  X(CeMax, "ce-max") \
  X(CeTarget, "ce-target") \
  X(CeSum, "ce-sum") \
  /* attention */ \
  X(InputNorm, "input-norm") \
  X(Qkv, "qkv") \
  X(QkvAg, "qkv-ag") \
  X(QkvGradAr, "qkv-grad-ar") \
  X(QkvGradRs, "qkv-grad-rs") \
  X(QkvWgradAg, "qkv-wgrad-ag") \
  X(Rope, "rope") \
  X(Attn, "attn") \
  X(Proj, "proj") \
  X(ProjAr, "proj-ar") \
  X(ProjRs, "proj-rs") \
  X(ProjGradAg, "proj-grad-ag") \
  X(AttnResidual, "attn-residual") \
  X(CpKv, "cp-kv") \
  X(CpKvDkv, "cp-kv-dkv") \
  X(CpDkv, "cp-dkv") \
  /* multi-latent attention */ \
  X(Q, "q") \
  X(QAg, "q-ag") \
  X(QGradAr, "q-grad-ar") \
  X(QGradRs, "q-grad-rs") \
  X(QWgradAg, "q-wgrad-ag") \
  X(QDown, "q-down") \
  X(QNorm, "q-norm") \
  X(QUp, "q-up") \
  X(KvDown, "kv-down") \
  X(KvNorm, "kv-norm") \
  X(KvUp, "kv-up") \
  X(MlaAg, "mla-ag") \
  X(MlaGradAdd, "mla-grad-add") \
  X(MlaGradAr, "mla-grad-ar") \
  X(MlaGradRs, "mla-grad-rs") \
  /* dense mlp */ \
  X(PreMlpNorm, "pre-mlp-norm") \
  X(Fc1, "fc1") \
  X(Fc1Ag, "fc1-ag") \
  X(Fc1GradAr, "fc1-grad-ar") \
  X(Fc1GradRs, "fc1-grad-rs") \
  X(Fc1WgradAg, "fc1-wgrad-ag") \
  X(Act, "act") \
  X(Fc2, "fc2") \
  X(Fc2Ar, "fc2-ar") \
  X(Fc2Rs, "fc2-rs") \
  X(Fc2GradAg, "fc2-grad-ag") \
  X(MlpResidual, "mlp-residual") \
  X(ResidualGrad, "residual-grad") \
  /* moe */ \
  X(Router, "router") \
  X(RouterCounts, "router-counts") \
  X(Permute, "permute") \
  X(Unpermute, "unpermute") \
  X(DispatchA2a, "dispatch-a2a") \
  X(DispatchAg, "dispatch-ag") \
  X(DispatchGradA2a, "dispatch-grad-a2a") \
  X(DispatchGradRs, "dispatch-grad-rs") \
  X(CombineA2a, "combine-a2a") \
  X(CombineRs, "combine-rs") \
  X(CombineGradA2a, "combine-grad-a2a") \
  X(CombineGradAg, "combine-grad-ag") \
  X(ExpertFc1, "expert-fc1") \
  X(ExpertAct, "expert-act") \
  X(ExpertFc2, "expert-fc2") \
  X(MoeGradAdd, "moe-grad-add") \
  X(SharedFc1, "shared-fc1") \
  X(SharedFc1Ag, "shared-fc1-ag") \
  X(SharedFc1GradAr, "shared-fc1-grad-ar") \
  X(SharedFc1GradRs, "shared-fc1-grad-rs") \
  X(SharedFc1WgradAg, "shared-fc1-wgrad-ag") \
  X(SharedAct, "shared-act") \
  X(SharedFc2, "shared-fc2") \
  X(SharedFc2Ar, "shared-fc2-ar") \
  X(SharedFc2Rs, "shared-fc2-rs") \
  X(SharedFc2GradAg, "shared-fc2-grad-ag") \
  X(SharedAdd, "shared-add") \
  X(SharedGradAdd, "shared-grad-add") \
  /* multi-token prediction */ \
  X(MtpEmbedding, "mtp-embedding") \
  X(MtpEnorm, "mtp-enorm") \
  X(MtpHnorm, "mtp-hnorm") \
  X(MtpProj, "mtp-proj") \
  X(MtpProjAg, "mtp-proj-ag") \
  X(MtpProjGradAg, "mtp-proj-grad-ag") \
  X(MtpProjGradAr, "mtp-proj-grad-ar") \
  X(MtpProjGradRs, "mtp-proj-grad-rs") \
  X(MtpProjOutAg, "mtp-proj-out-ag") \
  X(MtpProjWgradAg, "mtp-proj-wgrad-ag") \
  X(MtpGradAdd, "mtp-grad-add") \
  /* pipeline */ \
  X(PpActivation, "pp-activation") \
  X(PpGradient, "pp-gradient") \
  X(PpGather, "pp-gather") \
  X(MirrorGrad, "mirror-grad") \
  X(MirrorGradAdd, "mirror-grad-add") \
  /* gradient sync and optimizer */ \
  X(DpGrad, "dp-grad") \
  X(EdpGrad, "edp-grad") \
  X(SpNormGrad, "sp-norm-grad") \
  X(EmbeddingGrad, "embedding-grad") \
  X(GradNorm, "grad-norm") \
  X(GradNormExpert, "grad-norm-expert") \
  X(ExpertBias, "expert-bias") \
  X(Adam, "adam") \
  X(DpParamAg, "dp-param-ag") \
  X(EdpParamAg, "edp-param-ag")

namespace tandem {

enum class Site : std::uint8_t {
  None,   // instructions made outside the lowering (tests, simulator-internal pieces)
#define TANDEM_SITE_ENUMERATOR(name, text) name,
  TANDEM_OP_SITES(TANDEM_SITE_ENUMERATOR)
#undef TANDEM_SITE_ENUMERATOR
};

// Number of sites, None included.
inline constexpr int kSiteCount = 1
#define TANDEM_SITE_COUNT(name, text) +1
    TANDEM_OP_SITES(TANDEM_SITE_COUNT)
#undef TANDEM_SITE_COUNT
    ;

// The site's trace text ("qkv", "fc1-ag", ...); "" for None.
const char* to_string(Site site);

}  // namespace tandem
