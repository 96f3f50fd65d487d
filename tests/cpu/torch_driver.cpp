// Writes random inputs and tandem's CPU-kernel outputs and gradients for every op to a directory,
// for tests/cpu/torch_reference.py to recompute with PyTorch and compare.
//
// Usage: cpu_kernels_torch_driver --seed N --out DIR
// DIR/manifest.json lists the cases: {"cases": [{"name", "op", "params": {...},
//   "tensors": {NAME: {"file", "dtype": "float32"|"int32"|"uint8", "shape": [...]}}}]}; each tensor
// is a raw little-endian file. Inputs, tandem outputs and the upstream gradients used for the
// backward are all in the case; the script decides which are which by op.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/ops_activation.h"
#include "backends/cpu/ops_attention.h"
#include "backends/cpu/ops_cross_entropy.h"
#include "backends/cpu/ops_embedding.h"
#include "backends/cpu/ops_gemm.h"
#include "backends/cpu/ops_norm.h"
#include "backends/cpu/ops_optimizer.h"
#include "backends/cpu/ops_permute.h"
#include "backends/cpu/ops_rope.h"
#include "backends/cpu/ops_router.h"

namespace tandem::cpu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class CaseWriter {
 public:
  explicit CaseWriter(fs::path dir) : dir_(std::move(dir)) {}

  void begin(const std::string& name, const std::string& op, json params = json::object()) {
    current_ = {{"name", name}, {"op", op}, {"params", std::move(params)}, {"tensors", json::object()}};
  }
  void add(const std::string& name, const Tensor& t) { write(name, "float32", t.shape, t.data.data(), t.data.size() * 4); }
  void add(const std::string& name, const std::vector<int32_t>& v) {
    write(name, "int32", {static_cast<int64_t>(v.size())}, v.data(), v.size() * 4);
  }
  void add(const std::string& name, const std::vector<uint8_t>& v) {
    write(name, "uint8", {static_cast<int64_t>(v.size())}, v.data(), v.size());
  }
  void end() { cases_.push_back(std::move(current_)); }
  void finish() const {
    std::ofstream os(dir_ / "manifest.json");
    os << json{{"cases", cases_}}.dump(1) << '\n';
  }

 private:
  void write(const std::string& name, const char* dtype, const Shape& shape, const void* data, size_t bytes) {
    const std::string file = current_["name"].get<std::string>() + "." + name + ".bin";
    std::ofstream os(dir_ / file, std::ios::binary);
    os.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    current_["tensors"][name] = {{"file", file}, {"dtype", dtype}, {"shape", shape}};
  }

  fs::path dir_;
  json current_;
  json cases_ = json::array();
};

class Driver {
 public:
  Driver(uint64_t seed, CaseWriter& out) : rng_(seed), out_(out) {}

  Tensor random(Shape shape, float lo = -1.0f, float hi = 1.0f) {
    Tensor t(std::move(shape));
    std::uniform_real_distribution<float> dist(lo, hi);
    for (float& v : t.data) v = dist(rng_);
    return t;
  }
  std::vector<int32_t> ids(int64_t n, int32_t lo, int32_t hi) {
    std::uniform_int_distribution<int32_t> dist(lo, hi);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t& x : v) x = dist(rng_);
    return v;
  }
  static Tensor nan(Shape shape) { return Tensor(std::move(shape), std::numeric_limits<float>::quiet_NaN()); }

  void embedding();
  void norms();
  void gemms();
  void attention(const std::string& name, int64_t s_q, int64_t s_kv, int64_t b, int64_t hq, int64_t hkv, int64_t d,
                 std::vector<int32_t> q_pos, std::vector<int32_t> kv_pos);
  void rope();
  void activations();
  void cross_entropy();
  void router(const std::string& name, bool pre_softmax, double capacity_factor);
  void router_sigmoid(const std::string& name, int64_t groups, int64_t group_topk, bool bias, double scaling);
  void permute();
  void optimizer();

 private:
  std::mt19937_64 rng_;
  CaseWriter& out_;
};

void Driver::embedding() {
  const int64_t tokens = 9, v_local = 6, h = 5, vocab_start = 6;
  std::vector<int32_t> id = ids(tokens, 0, 17);
  id[1] = id[2] = 8;
  Tensor table = random({v_local, h}), y = nan({tokens, h}), dy = random({tokens, h}), d_table({v_local, h}, 0.0f);
  embedding_forward(id, table, vocab_start, y);
  embedding_backward(id, dy, vocab_start, d_table);
  out_.begin("embedding", "embedding", {{"vocab_start", vocab_start}});
  out_.add("ids", id);
  out_.add("table", table);
  out_.add("y", y);
  out_.add("dy", dy);
  out_.add("d_table", d_table);
  out_.end();
}

void Driver::norms() {
  const int64_t rows = 6, h = 16;
  const float eps = 1e-5f;
  Tensor x = random({rows, h}, -2, 2), gamma = random({h}, 0.5f, 1.5f), beta = random({h}), dy = random({rows, h});
  Tensor y = nan({rows, h}), mean = nan({rows}), rstd = nan({rows}), dx = nan({rows, h});
  Tensor dgamma({h}, 0.0f), dbeta({h}, 0.0f);
  layernorm_forward(x, gamma, beta, eps, y, mean, rstd);
  layernorm_backward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  out_.begin("layernorm", "layernorm", {{"eps", eps}});
  for (auto& [n, t] : std::vector<std::pair<std::string, Tensor*>>{
           {"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"y", &y}, {"dy", &dy}, {"dx", &dx},
           {"dgamma", &dgamma}, {"dbeta", &dbeta}}) {
    out_.add(n, *t);
  }
  out_.end();
  Tensor y2 = nan({rows, h}), rstd2 = nan({rows}), dx2 = nan({rows, h}), dgamma2({h}, 0.0f);
  rmsnorm_forward(x, gamma, eps, y2, rstd2);
  rmsnorm_backward(x, gamma, rstd2, dy, dx2, dgamma2);
  out_.begin("rmsnorm", "rmsnorm", {{"eps", eps}});
  out_.add("x", x);
  out_.add("gamma", gamma);
  out_.add("y", y2);
  out_.add("dy", dy);
  out_.add("dx", dx2);
  out_.add("dgamma", dgamma2);
  out_.end();
}

void Driver::gemms() {
  const int64_t m = 7, k = 12, n = 9;
  for (WeightLayout layout : {WeightLayout::InOut, WeightLayout::OutIn}) {
    const bool in_out = layout == WeightLayout::InOut;
    Tensor x = random({m, k}), w = random(in_out ? Shape{k, n} : Shape{n, k}), b = random({n}), dy = random({m, n});
    Tensor y = nan({m, n}), dx = nan({m, k}), dw(w.shape, 0.0f), db({n}, 0.0f);
    gemm_forward(x, w, b, layout, y);
    gemm_grad_input(dy, w, layout, dx);
    gemm_grad_weight(x, dy, layout, dw, db);
    out_.begin(in_out ? "gemm_in_out" : "gemm_out_in", "gemm", {{"layout", in_out ? "in_out" : "out_in"}});
    for (auto& [nm, t] : std::vector<std::pair<std::string, Tensor*>>{
             {"x", &x}, {"w", &w}, {"b", &b}, {"y", &y}, {"dy", &dy}, {"dx", &dx}, {"dw", &dw}, {"db", &db}}) {
      out_.add(nm, *t);
    }
    out_.end();
  }
  const std::vector<int64_t> counts = {3, 0, 4, 2};
  const int64_t rows = 9, experts = 4;
  Tensor x = random({rows, k}), w = random({experts, k, n}), dy = random({rows, n});
  Tensor y = nan({rows, n}), dx = nan({rows, k}), dw(w.shape, 0.0f);
  grouped_gemm_forward(x, w, counts, WeightLayout::InOut, y);
  grouped_gemm_grad_input(dy, w, counts, WeightLayout::InOut, dx);
  grouped_gemm_grad_weight(x, dy, counts, WeightLayout::InOut, dw);
  out_.begin("grouped_gemm", "grouped_gemm", {{"counts", counts}});
  for (auto& [nm, t] : std::vector<std::pair<std::string, Tensor*>>{
           {"x", &x}, {"w", &w}, {"y", &y}, {"dy", &dy}, {"dx", &dx}, {"dw", &dw}}) {
    out_.add(nm, *t);
  }
  out_.end();
}

void Driver::attention(const std::string& name, int64_t s_q, int64_t s_kv, int64_t b, int64_t hq, int64_t hkv,
                       int64_t d, std::vector<int32_t> q_pos, std::vector<int32_t> kv_pos) {
  Tensor q = random({s_q, b, hq, d}), k = random({s_kv, b, hkv, d}), v = random({s_kv, b, hkv, d});
  Tensor dout = random(q.shape), out = nan(q.shape), lse = nan({b, hq, s_q});
  Tensor dq = nan(q.shape), dk = nan(k.shape), dv = nan(v.shape);
  AttentionOptions opt;
  opt.q_positions = q_pos;
  opt.kv_positions = kv_pos;
  attention_forward(q, k, v, opt, out, lse);
  attention_backward(q, k, v, out, lse, dout, opt, dq, dk, dv);
  out_.begin(name, "attention");
  for (auto& [nm, t] : std::vector<std::pair<std::string, Tensor*>>{{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out},
                                                                    {"lse", &lse}, {"dout", &dout}, {"dq", &dq},
                                                                    {"dk", &dk}, {"dv", &dv}}) {
    out_.add(nm, *t);
  }
  if (q_pos.empty()) {
    for (int32_t i = 0; i < s_q; ++i) q_pos.push_back(i);
    for (int32_t i = 0; i < s_kv; ++i) kv_pos.push_back(i);
  }
  out_.add("q_pos", q_pos);
  out_.add("kv_pos", kv_pos);
  out_.end();
}

void Driver::rope() {
  const int64_t s = 6, b = 2, heads = 3, d = 8, rot = 6;
  const double base = 10000.0;
  std::vector<int32_t> positions = {0, 1, 2, 40, 41, 1000};
  Tensor x = random({s, b, heads, d}), dy = random(x.shape), y = nan(x.shape), dx = nan(x.shape);
  RopeOptions opt{rot, base, positions};
  rope_forward(x, opt, y);
  rope_backward(dy, opt, dx);
  out_.begin("rope", "rope", {{"rot_dim", rot}, {"base", base}});
  out_.add("positions", positions);
  out_.add("x", x);
  out_.add("y", y);
  out_.add("dy", dy);
  out_.add("dx", dx);
  out_.end();
}

void Driver::activations() {
  for (GeluForm form : {GeluForm::Tanh, GeluForm::Erf}) {
    Tensor x = random({5, 11}, -4, 4), dy = random(x.shape), y = nan(x.shape), dx = nan(x.shape);
    gelu_forward(x, form, y);
    gelu_backward(x, dy, form, dx);
    const bool tanh_form = form == GeluForm::Tanh;
    out_.begin(tanh_form ? "gelu_tanh" : "gelu_erf", "gelu", {{"approximate", tanh_form ? "tanh" : "none"}});
    out_.add("x", x);
    out_.add("y", y);
    out_.add("dy", dy);
    out_.add("dx", dx);
    out_.end();
  }
  Tensor x = random({5, 14}, -4, 4), dy = random({5, 7}), y = nan({5, 7}), dx = nan(x.shape);
  swiglu_forward(x, y);
  swiglu_backward(x, dy, dx);
  out_.begin("swiglu", "swiglu");
  out_.add("x", x);
  out_.add("y", y);
  out_.add("dy", dy);
  out_.add("dx", dx);
  out_.end();
}

void Driver::cross_entropy() {
  // Two vocabulary shards with the all-reduces done here, as the executor will do over TP.
  const int64_t tokens = 6, vocab = 10, shard = 5;
  Tensor logits = random({tokens, vocab}, -5, 5), d_loss = random({tokens});
  const std::vector<int32_t> targets = ids(tokens, 0, static_cast<int32_t>(vocab - 1));
  std::vector<Tensor> parts(2, Tensor({tokens, shard}));
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < shard; ++j) parts[r].data[t * shard + j] = logits.data[t * vocab + r * shard + j];
    }
  }
  Tensor mx({tokens}, -INFINITY), se({tokens}, 0.0f), tl({tokens}, 0.0f), m = nan({tokens}), s = nan({tokens}),
      l = nan({tokens});
  for (const Tensor& part : parts) {
    cross_entropy_local_max(part, m);
    for (int64_t t = 0; t < tokens; ++t) mx.data[t] = std::max(mx.data[t], m.data[t]);
  }
  for (int64_t r = 0; r < 2; ++r) {
    cross_entropy_local_sums(parts[r], targets, r * shard, mx, s, l);
    for (int64_t t = 0; t < tokens; ++t) {
      se.data[t] += s.data[t];
      tl.data[t] += l.data[t];
    }
  }
  Tensor loss = nan({tokens}), d_logits = nan(logits.shape), g = nan({tokens, shard});
  cross_entropy_loss(se, tl, loss);
  for (int64_t r = 0; r < 2; ++r) {
    cross_entropy_backward(parts[r], targets, r * shard, mx, se, d_loss, g);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < shard; ++j) d_logits.data[t * vocab + r * shard + j] = g.data[t * shard + j];
    }
  }
  out_.begin("cross_entropy_tp2", "cross_entropy");
  out_.add("logits", logits);
  out_.add("targets", targets);
  out_.add("loss", loss);
  out_.add("d_loss", d_loss);
  out_.add("d_logits", d_logits);
  out_.end();
}

void Driver::router(const std::string& name, bool pre_softmax, double capacity_factor) {
  const int64_t tokens = 16, experts = 4, k = 2;
  const double coeff = 0.1, d_aux = 0.5;
  Tensor logits = random({tokens, experts}, -2, 2), d_probs = random({tokens, k});
  const Routing r = router_forward(logits, {k, pre_softmax, capacity_factor});
  const AuxLossInputs aux{coeff, r.routed_per_expert, tokens};
  Tensor aux_loss({1}, static_cast<float>(router_aux_loss(r, aux))), d_logits = nan(logits.shape);
  router_backward(logits, r, d_probs, aux, d_aux, d_logits);
  out_.begin(name, "router",
             {{"topk", k}, {"pre_softmax", pre_softmax}, {"capacity_factor", capacity_factor}, {"coeff", coeff},
              {"d_aux", d_aux}, {"capacity", r.capacity}});
  out_.add("logits", logits);
  out_.add("expert", r.expert);
  out_.add("kept", r.kept);
  out_.add("probs", r.probs);
  out_.add("aux_loss", aux_loss);
  out_.add("d_probs", d_probs);
  out_.add("d_logits", d_logits);
  out_.end();
}

// DeepSeek-V3's router: sigmoid scores, an expert bias that steers the choice only, group-limited
// top-k, weights normalised over the chosen experts and scaled.
void Driver::router_sigmoid(const std::string& name, int64_t groups, int64_t group_topk, bool with_bias,
                            double scaling) {
  const int64_t tokens = 24, experts = 8, k = 2;
  Tensor logits = random({tokens, experts}, -2, 2), d_probs = random({tokens, k});
  Tensor bias = with_bias ? random({experts}, -0.3f, 0.3f) : Tensor({experts}, 0.0f);
  RouterOptions o{k, false, 0.0, true, {}, groups, group_topk, scaling};
  if (with_bias) o.expert_bias = bias.data;
  const Routing r = router_forward(logits, o);
  Tensor d_logits = nan(logits.shape);
  router_backward(logits, r, d_probs, AuxLossInputs{}, 0.0, d_logits);
  out_.begin(name, "router_sigmoid",
             {{"topk", k}, {"num_groups", groups}, {"group_topk", group_topk}, {"scaling", scaling}});
  out_.add("logits", logits);
  out_.add("bias", bias);
  out_.add("expert", r.expert);
  out_.add("probs", r.probs);
  out_.add("d_probs", d_probs);
  out_.add("d_logits", d_logits);
  out_.end();
}

void Driver::permute() {
  const int64_t tokens = 10, experts = 4, k = 2, h = 3;
  Tensor logits = random({tokens, experts}, -2, 2), x = random({tokens, h});
  const Routing r = router_forward(logits, {k, false, 1.0});   // with drops
  const PermutePlan plan = make_permute_plan(r);
  const int64_t n = static_cast<int64_t>(plan.source.size());
  Tensor permuted = nan({n, h}), d_permuted = random({n, h}), d_x = nan({tokens, h});
  permute_forward(x, plan, permuted);
  permute_backward(d_permuted, plan, d_x);
  Tensor expert_out = random({n, h}), y = nan({tokens, h}), d_y = random({tokens, h});
  Tensor d_expert_out = nan({n, h}), d_probs = nan({tokens, k});
  unpermute_forward(expert_out, plan, r.probs, y);
  unpermute_backward(expert_out, plan, r.probs, d_y, d_expert_out, d_probs);
  out_.begin("permute", "permute", {{"topk", k}, {"experts", experts}});
  out_.add("x", x);
  out_.add("expert", r.expert);
  out_.add("kept", r.kept);
  out_.add("probs", r.probs);
  out_.add("permuted", permuted);
  out_.add("d_permuted", d_permuted);
  out_.add("d_x", d_x);
  out_.add("expert_out", expert_out);
  out_.add("y", y);
  out_.add("d_y", d_y);
  out_.add("d_expert_out", d_expert_out);
  out_.add("d_probs", d_probs);
  out_.end();
}

void Driver::optimizer() {
  const int64_t n = 64, steps = 3;
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  Tensor p0 = random({n}), grads = random({steps, n}, -0.1f, 0.1f);
  Tensor p = p0, m({n}, 0.0f), v({n}, 0.0f);
  for (int64_t step = 1; step <= steps; ++step) {
    const std::span<const float> g(grads.data.data() + (step - 1) * n, static_cast<size_t>(n));
    adamw_step(p.data, g, m.data, v.data, kmath::adamw_step_constants(lr, b1, b2, eps, wd, step));
  }
  out_.begin("adamw", "adamw", {{"lr", lr}, {"beta1", b1}, {"beta2", b2}, {"eps", eps}, {"weight_decay", wd}});
  out_.add("p0", p0);
  out_.add("grads", grads);
  out_.add("p", p);
  out_.add("exp_avg", m);
  out_.add("exp_avg_sq", v);
  out_.end();
  Tensor x = random({257}, -1e3f, 1e3f);
  x.data[0] = 1.0f + std::ldexp(1.0f, -8);    // ties to even
  x.data[1] = 1.0f + 3 * std::ldexp(1.0f, -8);
  x.data[2] = std::ldexp(1.0f, -130);         // subnormal
  Tensor rounded = x, sq({1});
  round_to_bf16_in_place(rounded.data);
  sq.data[0] = static_cast<float>(sum_of_squares(x.data));
  out_.begin("bf16_and_norm", "bf16_and_norm");
  out_.add("x", x);
  out_.add("rounded", rounded);
  out_.add("sum_of_squares", sq);
  out_.end();
}

int run(int argc, char** argv) {
  uint64_t seed = 0;
  std::string dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--out") dir = argv[i + 1];
  }
  if (dir.empty()) {
    std::cerr << "usage: cpu_kernels_torch_driver --seed N --out DIR\n";
    return 2;
  }
  fs::create_directories(dir);
  CaseWriter writer(dir);
  Driver d(seed, writer);
  d.embedding();
  d.norms();
  d.gemms();
  d.attention("attention_gqa", 7, 7, 2, 4, 2, 8, {}, {});
  d.attention("attention_cp_shard", 4, 8, 1, 2, 1, 4, {0, 1, 6, 7}, {0, 1, 6, 7, 2, 3, 4, 5});
  d.rope();
  d.activations();
  d.cross_entropy();
  d.router("router_topk_softmax", false, 0.0);
  d.router("router_pre_softmax", true, 0.0);
  d.router("router_capacity", false, 1.0);
  d.router_sigmoid("router_sigmoid", 0, 0, false, 0.0);
  d.router_sigmoid("router_sigmoid_bias_groups", 4, 2, true, 2.5);
  d.permute();
  d.optimizer();
  writer.finish();
  std::cout << "wrote " << dir << "/manifest.json (gemm backend " << gemm_backend_name() << ")\n";
  return 0;
}

}  // namespace
}  // namespace tandem::cpu

int main(int argc, char** argv) { return tandem::cpu::run(argc, argv); }
