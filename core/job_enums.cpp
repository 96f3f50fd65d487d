#include "core/job_enums.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "core/check.h"
#include "core/job_fields.h"

namespace tandem {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::replace(s.begin(), s.end(), '_', '-');
  return s;
}

template <class E>
E lookup(const std::string& field, const std::string& text,
         const std::vector<std::pair<const char*, E>>& names) {
  const std::string want = lower(text);
  for (const auto& [name, value] : names)
    if (want == lower(name)) return value;
  std::string choices;
  for (const auto& [name, value] : names) choices += (choices.empty() ? "" : ", ") + std::string(name);
  throw_field_error(field, "'" + text + "'", "expected one of " + choices);
}

}  // namespace

template <> Normalization parse_enum<Normalization>(const std::string& f, const std::string& t) {
  return lookup<Normalization>(f, t, {{"LayerNorm", Normalization::LayerNorm}, {"RMSNorm", Normalization::RMSNorm}});
}
template <> PositionEmbedding parse_enum<PositionEmbedding>(const std::string& f, const std::string& t) {
  return lookup<PositionEmbedding>(f, t, {{"learned_absolute", PositionEmbedding::LearnedAbsolute},
                                         {"rope", PositionEmbedding::Rope}, {"none", PositionEmbedding::None}});
}
template <> DType parse_enum<DType>(const std::string& f, const std::string& t) {
  return lookup<DType>(f, t, {{"fp32", DType::FP32}, {"fp16", DType::FP16}, {"bf16", DType::BF16}});
}
template <> Fp8Format parse_enum<Fp8Format>(const std::string& f, const std::string& t) {
  return lookup<Fp8Format>(f, t, {{"none", Fp8Format::None}, {"e4m3", Fp8Format::E4M3}, {"hybrid", Fp8Format::Hybrid}});
}
template <> RecomputeGranularity parse_enum<RecomputeGranularity>(const std::string& f, const std::string& t) {
  return lookup<RecomputeGranularity>(f, t, {{"none", RecomputeGranularity::None},
                                            {"selective", RecomputeGranularity::Selective},
                                            {"full", RecomputeGranularity::Full}});
}
template <> RecomputeMethod parse_enum<RecomputeMethod>(const std::string& f, const std::string& t) {
  return lookup<RecomputeMethod>(f, t, {{"uniform", RecomputeMethod::Uniform}, {"block", RecomputeMethod::Block}});
}
template <> LrDecayStyle parse_enum<LrDecayStyle>(const std::string& f, const std::string& t) {
  return lookup<LrDecayStyle>(f, t, {{"constant", LrDecayStyle::Constant}, {"linear", LrDecayStyle::Linear},
                                    {"cosine", LrDecayStyle::Cosine},
                                    {"inverse-square-root", LrDecayStyle::InverseSquareRoot},
                                    {"WSD", LrDecayStyle::WSD}});
}
template <> TokenDispatcher parse_enum<TokenDispatcher>(const std::string& f, const std::string& t) {
  return lookup<TokenDispatcher>(f, t, {{"allgather", TokenDispatcher::AllGather}, {"alltoall", TokenDispatcher::AllToAll},
                                       {"alltoall_seq", TokenDispatcher::Alltoall_Seq}, {"flex", TokenDispatcher::Flex}});
}

template <> RouterScore parse_enum<RouterScore>(const std::string& f, const std::string& t) {
  return lookup<RouterScore>(f, t, {{"softmax", RouterScore::Softmax}, {"sigmoid", RouterScore::Sigmoid}});
}

template <> AttentionBackend parse_enum<AttentionBackend>(const std::string& f, const std::string& t) {
  return lookup<AttentionBackend>(f, t, {{"auto", AttentionBackend::Auto}, {"flash", AttentionBackend::Flash},
                                        {"fused", AttentionBackend::Fused}, {"unfused", AttentionBackend::Unfused},
                                        {"local", AttentionBackend::Local}});
}

std::string to_string(AttentionBackend v) {
  switch (v) {
    case AttentionBackend::Auto: return "auto";
    case AttentionBackend::Flash: return "flash";
    case AttentionBackend::Fused: return "fused";
    case AttentionBackend::Unfused: return "unfused";
    case AttentionBackend::Local: return "local";
  }
  return "?";
}

template <> MoeRouting parse_enum<MoeRouting>(const std::string& f, const std::string& t) {
  return lookup<MoeRouting>(f, t, {{"balanced", MoeRouting::Balanced}, {"zipf", MoeRouting::Zipf},
                                  {"trace", MoeRouting::Trace}});
}

std::string to_string(MoeRouting v) {
  switch (v) {
    case MoeRouting::Balanced: return "balanced";
    case MoeRouting::Zipf: return "zipf";
    case MoeRouting::Trace: return "trace";
  }
  return "?";
}

template <> DcPlacement parse_enum<DcPlacement>(const std::string& f, const std::string& t) {
  return lookup<DcPlacement>(f, t, {{"rank-order", DcPlacement::RankOrder}, {"pp", DcPlacement::Pipeline},
                                   {"dp", DcPlacement::Data}, {"ep", DcPlacement::Expert}});
}

std::string to_string(DcPlacement v) {
  switch (v) {
    case DcPlacement::RankOrder: return "rank-order";
    case DcPlacement::Pipeline: return "pp";
    case DcPlacement::Data: return "dp";
    case DcPlacement::Expert: return "ep";
  }
  return "?";
}

bool uses_flash_attention(AttentionBackend v) {
  return v == AttentionBackend::Auto || v == AttentionBackend::Flash || v == AttentionBackend::Fused;
}

std::string to_string(Normalization v) { return v == Normalization::LayerNorm ? "LayerNorm" : "RMSNorm"; }
std::string to_string(PositionEmbedding v) {
  switch (v) {
    case PositionEmbedding::LearnedAbsolute: return "learned_absolute";
    case PositionEmbedding::Rope: return "rope";
    case PositionEmbedding::None: return "none";
  }
  return "?";
}
std::string to_string(DType v) {
  switch (v) {
    case DType::FP32: return "fp32";
    case DType::FP16: return "fp16";
    case DType::BF16: return "bf16";
  }
  return "?";
}
std::string to_string(Fp8Format v) {
  switch (v) {
    case Fp8Format::None: return "none";
    case Fp8Format::E4M3: return "e4m3";
    case Fp8Format::Hybrid: return "hybrid";
  }
  return "?";
}
std::string to_string(RecomputeGranularity v) {
  switch (v) {
    case RecomputeGranularity::None: return "none";
    case RecomputeGranularity::Selective: return "selective";
    case RecomputeGranularity::Full: return "full";
  }
  return "?";
}
std::string to_string(RecomputeMethod v) { return v == RecomputeMethod::Uniform ? "uniform" : "block"; }

namespace {
const std::vector<std::pair<const char*, RecomputeModule>>& recompute_module_names() {
  static const std::vector<std::pair<const char*, RecomputeModule>> t = {
      {"core_attn", RecomputeModule::CoreAttn}, {"moe_act", RecomputeModule::MoeAct},
      {"layernorm", RecomputeModule::Layernorm}, {"mla_up_proj", RecomputeModule::MlaUpProj},
      {"mlp", RecomputeModule::Mlp},           {"moe", RecomputeModule::Moe},
      {"shared_experts", RecomputeModule::SharedExperts}};
  return t;
}
}  // namespace

std::string to_string(RecomputeModule v) {
  for (const auto& [name, m] : recompute_module_names())
    if (m == v) return name;
  return "?";
}

RecomputeModule parse_recompute_module(const std::string& field, const std::string& name) {
  std::string known;
  for (const auto& [n, m] : recompute_module_names()) {
    if (name == n) return m;
    known += std::string(known.empty() ? "" : ", ") + n;
  }
  throw_field_error(field, name, "not a module Megatron-Core recomputes (" + known + ")");
}
std::string to_string(LrDecayStyle v) {
  switch (v) {
    case LrDecayStyle::Constant: return "constant";
    case LrDecayStyle::Linear: return "linear";
    case LrDecayStyle::Cosine: return "cosine";
    case LrDecayStyle::InverseSquareRoot: return "inverse-square-root";
    case LrDecayStyle::WSD: return "WSD";
  }
  return "?";
}
std::string to_string(TokenDispatcher v) {
  switch (v) {
    case TokenDispatcher::AllGather: return "allgather";
    case TokenDispatcher::AllToAll: return "alltoall";
    case TokenDispatcher::Alltoall_Seq: return "alltoall_seq";
    case TokenDispatcher::Flex: return "flex";
  }
  return "?";
}

std::string to_string(RouterScore v) { return v == RouterScore::Sigmoid ? "sigmoid" : "softmax"; }

int64_t bytes_per_element(DType d) { return d == DType::FP32 ? 4 : 2; }

namespace {

// Tiny recursive-descent evaluator for Megatron's list expressions: terms joined by '+', each a
// list literal "[a,b,...]" optionally followed by "*N"; parentheses around the whole allowed.
class ListExpr {
 public:
  ListExpr(const std::string& field, const std::string& text) : field_(field), text_(text) {}
  std::vector<int> parse() {
    std::vector<int> out = sum();
    skip();
    if (pos_ != text_.size()) fail("unexpected '" + text_.substr(pos_, 1) + "'");
    return out;
  }

 private:
  std::vector<int> sum() {
    std::vector<int> out = product();
    while (peek('+')) {
      ++pos_;
      auto more = product();
      out.insert(out.end(), more.begin(), more.end());
    }
    return out;
  }
  std::vector<int> product() {
    std::vector<int> base = atom();
    while (peek('*')) {
      ++pos_;
      const int64_t n = number();
      if (n < 0 || n > 100000) fail("repeat count out of range");
      std::vector<int> rep;
      for (int64_t i = 0; i < n; ++i) rep.insert(rep.end(), base.begin(), base.end());
      base = std::move(rep);
    }
    return base;
  }
  std::vector<int> atom() {
    if (peek('(')) {
      ++pos_;
      auto inner = sum();
      expect(')');
      return inner;
    }
    expect('[');
    std::vector<int> out;
    while (!peek(']')) {
      const int64_t v = number();
      if (v != 0 && v != 1) fail("list entries must be 0 or 1");
      out.push_back(static_cast<int>(v));
      if (!peek(',')) break;
      ++pos_;
    }
    expect(']');
    return out;
  }
  int64_t number() {
    skip();
    size_t start = pos_;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    if (start == pos_ || pos_ - start > 9) fail("expected a number");
    return std::stoll(text_.substr(start, pos_ - start));
  }
  bool peek(char c) {
    skip();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  void skip() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  [[noreturn]] void fail(const std::string& why) {
    throw_field_error(field_, "'" + text_ + "'", why + " at character " + std::to_string(pos_));
  }
  std::string field_, text_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<int> parse_moe_layer_freq(const std::string& field, const std::string& text) {
  const bool is_list = text.find('[') != std::string::npos;
  if (!is_list) {
    const int64_t every = parse_int(field, text, 1, 100000);
    return {-static_cast<int>(every)};
  }
  return ListExpr(field, text).parse();
}

}  // namespace tandem
