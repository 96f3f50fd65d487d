// ModelRunner, aux-loss-free load balancing (DeepSeek-V3 §2.1.2; Megatron-Core's TopKRouter
// expert_bias and finalize_model_grads' _update_router_expert_bias):
//
//   forward router (training, not its recompute): load[L][e] += tokens kept for expert e
//   expert-bias all-reduce (TP x DP x CP): load [MoE layers held, E] summed over the stage's ranks
//   expert-bias send / recv (DualPipe): the other holder of a mirrored stage adds its loads
//   optimizer step: bias[L][e] += rate * sign(mean_e load[L] - load[L][e]); loads reset
//
// The bias only steers which experts a token chooses (ops_router.h); it is not a parameter and
// gets no gradient. Every rank holding a layer ends the step with the same bias.
#include <algorithm>

#include "backends/executor/model_runner.h"
#include "core/check.h"

namespace tandem::exec {

std::vector<int32_t> ModelRunner::bias_layers(int chunk) const {
  std::vector<int32_t> out;
  for (const auto& p : params_.params())
    if (p->slot == lower::ParamSlot::Router && (chunk < 0 || p->chunk == chunk)) out.push_back(p->layer);
  std::sort(out.begin(), out.end());
  return out;
}

void ModelRunner::count_expert_tokens(int32_t layer, const std::vector<int64_t>& tokens_per_expert) {
  std::vector<double>& load = expert_load_[layer];
  load.resize(tokens_per_expert.size(), 0.0);
  for (size_t e = 0; e < load.size(); ++e) load[e] += static_cast<double>(tokens_per_expert[e]);
}

void ModelRunner::expert_bias_sync(const Instruction& ins) {
  const std::vector<int32_t> layers = bias_layers(ins.kind == OpKind::AllReduce ? -1 : ins.chunk);
  const int64_t e_n = dims_.experts;
  std::vector<float> host(static_cast<size_t>(int64_t(layers.size()) * e_n), 0.0f);
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::vector<double>& load = expert_load_[layers[i]];
    for (size_t e = 0; e < load.size(); ++e) host[i * static_cast<size_t>(e_n) + e] = static_cast<float>(load[e]);
  }
  DeviceTensor buf = fresh({int64_t(layers.size()), e_n});
  device_.upload(host, buf);
  check_bytes(ins, buf.numel());
  auto add_back = [this, layers, e_n](const DeviceTensor& t, bool replace) {
    const std::vector<float> got = device_.to_host(t);
    for (size_t i = 0; i < layers.size(); ++i) {
      std::vector<double>& load = expert_load_[layers[i]];
      load.resize(static_cast<size_t>(e_n), 0.0);
      for (size_t e = 0; e < load.size(); ++e) {
        const double v = got[i * static_cast<size_t>(e_n) + e];
        load[e] = replace ? v : load[e] + v;
      }
    }
  };
  switch (ins.kind) {
    case OpKind::AllReduce:   // counts are integers below 2^24: exact in fp32
      comm_.all_reduce(ParallelGroup::TpDpCp, buf, ReduceOp::Sum);
      add_back(buf, true);
      break;
    case OpKind::Send: comm_.send(ins.peer, ins.tag, buf); break;
    case OpKind::Recv: post_recv(ins, buf, [buf, add_back] { add_back(buf, false); }); break;
    default: TANDEM_CHECK_MSG(false, "expert-bias: unexpected " << op_trace_line(ins));
  }
}

void ModelRunner::set_expert_bias(const std::map<int32_t, std::vector<float>>& all) {
  if (settings_.expert_bias_rate < 0) return;
  for (int32_t layer : bias_layers(-1)) {
    const auto it = all.find(layer);
    if (it == all.end()) continue;   // saved without the bias: it starts again from 0
    if (static_cast<int64_t>(it->second.size()) != dims_.experts)
      throw UserError("--load: the checkpoint's expert bias of layer " + std::to_string(layer) + " has " +
                      std::to_string(it->second.size()) + " values, --num-experts is " + std::to_string(dims_.experts));
    expert_bias_[layer] = it->second;
  }
}

void ModelRunner::update_expert_bias() {
  if (settings_.expert_bias_rate < 0) return;
  const float rate = static_cast<float>(settings_.expert_bias_rate);
  for (int32_t layer : bias_layers(-1)) {
    std::vector<double>& load = expert_load_[layer];
    load.resize(static_cast<size_t>(dims_.experts), 0.0);
    double mean = 0;
    for (double v : load) mean += v;
    mean /= static_cast<double>(load.size());
    std::vector<float>& bias = expert_bias_[layer];
    bias.resize(load.size(), 0.0f);
    for (size_t e = 0; e < load.size(); ++e) {
      const double offset = mean - load[e];
      bias[e] += offset > 0 ? rate : (offset < 0 ? -rate : 0.0f);
    }
  }
  expert_load_.clear();
}

}  // namespace tandem::exec
