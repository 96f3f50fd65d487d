#pragma once
// What a real backend does for each (OpKind, Site) of a program: one table, shared by the
// ModelRunner (which calls the device and communicator) and the op timer (which times the same
// device calls). handler_of() is an exhaustive switch over Site, so a site added to
// program/op_site.h does not build until it is given a handler here (or declared not executable
// by real backends).
#include <cstdint>

#include "program/program.h"

namespace tandem::exec {

enum class Handler : std::uint8_t {
  None,   // not executed by the real backends (memory instructions: the program executor's)
  // Layers (runner_layer.cpp, runner_attention_cp.cpp).
  Norm, NormGrad, Gemm, GemmGradInput, GemmGradWeight, Rope, RopeGrad, Attention, AttentionGrad,
  Activation, ActivationGrad, Residual, ResidualGrad, EmbeddingDropout,
  // Embedding and head (runner_head.cpp).
  Embedding, EmbeddingGrad, CrossEntropy, CrossEntropyGrad, LossReduce, CeCollective,
  // Communication around layers and stages (runner_comm.cpp, runner_attention_cp.cpp).
  TpCollective, PpSend, PpRecv, PpGather, CpSend, CpRecv,
  // Gradients, optimizer, parameters (runner_optim.cpp).
  DpGrad, SpNormGrad, EmbeddingGradSync, GradNorm, OptimizerStep, ParamGather, MirrorSend, MirrorRecv,
  MirrorAdd,
  // MoE (runner_moe.cpp).
  Router, RouterGrad, RouterCounts, Permute, PermuteGrad, Unpermute, UnpermuteGrad, MoeCollective, MoeAdd,
  // Multi-latent attention's own elementwise op (runner_mla.cpp; its GEMMs and norms use the above).
  MlaAdd,
  // Aux-loss-free balancing: tokens-per-expert reductions and exchanges (runner_expert_bias.cpp).
  ExpertBias,
  // Multi-token prediction's own elementwise op (runner_mtp.cpp; its other ops use the above).
  MtpAdd,
};

// The handler of an instruction of `kind` at `site`; None when the real backends do not execute
// it (memory instructions: the program executor's).
Handler handler_of(OpKind kind, Site site);
const char* to_string(Handler handler);

}  // namespace tandem::exec
