// HuggingFaceTokenizer: a tokenizer.json of byte-level BPE, as GPT-2 and Llama 3 ship it
// (tokenizer.h). What is read:
//   added_tokens    matched in the raw text first, leftmost then longest; each is its own id
//   normalizer      null or NFC (Sequence of those)
//   pre_tokenizer   ByteLevel (add_prefix_space, use_regex: GPT-2's pattern), Split (Regex or
//                   String pattern, behaviour Isolated), Sequence of those; one ByteLevel required
//   model           BPE: vocab, merges ("a b" or ["a", "b"]), ignore_merges, unk_token
//   post_processor  null, ByteLevel, TemplateProcessing (its "single" template), Sequence
// As transformers' tokenizer(text).input_ids (what Megatron's HuggingFaceTokenizer.tokenize
// returns), the template's special tokens are added. Anything else is refused by name.
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/check.h"
#include "data/byte_level_bpe.h"
#include "data/gpt2_split.h"
#include "data/regex_split.h"
#include "data/tokenizer.h"

namespace tandem::data {
namespace {

using nlohmann::json;

struct AddedToken {
  std::string content;
  int32_t id;
};

struct PreStep {
  std::unique_ptr<RegexSplit> split;  // a Split step's regex
  bool gpt2_split = false;            // ByteLevel with use_regex: GPT-2's pattern (gpt2_split.h)
  bool add_prefix_space = false;      // ByteLevel: prepend ' ' to a piece that lacks one
};

struct HfSpec {
  std::string source;  // "--tokenizer-model = PATH"
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added;
  std::vector<PreStep> steps;
  bool nfc = false, ignore_merges = false;
  int32_t unk = -1;
  std::vector<int32_t> prefix, suffix;  // template ids around the sequence
  int64_t vocab_size = 0;
  std::optional<int32_t> eod;
};

[[noreturn]] void unsupported(const HfSpec& s, const std::string& what) {
  throw UserError(s.source + ": " + what + " is not supported (byte-level BPE tokenizer.json only)");
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "?";
}

void read_normalizer(HfSpec& s, const json& n) {
  if (n.is_null()) return;
  const std::string t = type_of(n);
  if (t == "NFC")
    s.nfc = true;
  else if (t == "Sequence" && n.contains("normalizers"))
    for (const auto& x : n["normalizers"]) read_normalizer(s, x);
  else
    unsupported(s, "normalizer '" + t + "'");
}

void read_pre_tokenizer(HfSpec& s, const json& p, bool& byte_level) {
  if (p.is_null()) return;
  const std::string t = type_of(p);
  if (t == "Sequence") {
    for (const auto& x : p.value("pretokenizers", json::array())) read_pre_tokenizer(s, x, byte_level);
  } else if (t == "ByteLevel") {
    byte_level = true;
    PreStep step;
    step.add_prefix_space = p.value("add_prefix_space", false);
    step.gpt2_split = p.value("use_regex", true);
    s.steps.push_back(std::move(step));
  } else if (t == "Split") {
    if (p.value("behavior", std::string()) != "Isolated" || p.value("invert", false))
      unsupported(s, "Split behaviour '" + p.value("behavior", std::string("?")) + "' (invert " +
                         (p.value("invert", false) ? "true" : "false") + ")");
    const json& pat = p.value("pattern", json::object());
    std::string regex;
    if (pat.contains("Regex"))
      regex = pat["Regex"].get<std::string>();
    else if (pat.contains("String"))
      regex = "\\Q" + pat["String"].get<std::string>() + "\\E";
    else
      unsupported(s, "Split pattern without Regex or String");
    PreStep step;
    step.split = std::make_unique<RegexSplit>(regex, s.source);
    s.steps.push_back(std::move(step));
  } else {
    unsupported(s, "pre_tokenizer '" + t + "'");
  }
}

int32_t id_of_token(const HfSpec& s, const std::string& token) {
  for (const auto& a : s.added)
    if (a.content == token) return a.id;
  for (const auto& [t, id] : s.vocab)
    if (t == token) return id;
  return -1;
}

void read_post_processor(HfSpec& s, const json& p) {
  if (p.is_null()) return;
  const std::string t = type_of(p);
  if (t == "ByteLevel") return;
  if (t == "Sequence") {
    for (const auto& x : p.value("processors", json::array())) read_post_processor(s, x);
    return;
  }
  if (t != "TemplateProcessing") unsupported(s, "post_processor '" + t + "'");
  const json& specials = p.value("special_tokens", json::object());
  bool after = false;
  for (const auto& item : p.value("single", json::array())) {
    if (item.contains("Sequence")) {
      after = true;
    } else if (item.contains("SpecialToken")) {
      const std::string name = item["SpecialToken"].value("id", std::string());
      if (!specials.contains(name)) unsupported(s, "template token '" + name + "' without special_tokens entry");
      for (const auto& id : specials[name].value("ids", json::array()))
        (after ? s.suffix : s.prefix).push_back(id.get<int32_t>());
    }
  }
}

void read_model(HfSpec& s, const json& m) {
  if (type_of(m) != "BPE") unsupported(s, "model type '" + type_of(m) + "'");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && m[key] != "") unsupported(s, std::string("model.") + key);
  if (m.value("byte_fallback", false)) unsupported(s, "model.byte_fallback");
  s.ignore_merges = m.value("ignore_merges", false);
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it)
    s.vocab.emplace_back(it.key(), it.value().get<int32_t>());
  for (const auto& x : m.value("merges", json::array())) {
    if (x.is_array() && x.size() == 2) {
      s.merges.emplace_back(x[0].get<std::string>(), x[1].get<std::string>());
    } else if (x.is_string()) {
      const std::string line = x.get<std::string>();
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        unsupported(s, "merge '" + line + "'");
      s.merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    } else {
      unsupported(s, "merge entry " + x.dump());
    }
  }
  if (m.contains("unk_token") && m["unk_token"].is_string()) s.unk = id_of_token(s, m["unk_token"].get<std::string>());
}

// eos_token of tokenizer_config.json (else special_tokens_map.json) beside tokenizer.json, as
// transformers reads it; without either, a well-known end-of-text token.
void find_eod(HfSpec& s, const std::filesystem::path& dir) {
  std::string eos;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const auto config = dir / name;
    if (!eos.empty() || !std::filesystem::exists(config)) continue;
    json c = json::parse(read_file_for("--tokenizer-model", config.string()), nullptr, false);
    if (c.is_object() && c.contains("eos_token")) {
      const json& e = c["eos_token"];
      if (e.is_string())
        eos = e.get<std::string>();
      else if (e.is_object())
        eos = e.value("content", std::string());
    }
  }
  const std::vector<std::string> known = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"};
  for (const std::string& name : eos.empty() ? known : std::vector<std::string>{eos}) {
    const int32_t id = id_of_token(s, name);
    if (id >= 0) {
      s.eod = id;
      return;
    }
  }
}

class HfTokenizer final : public Tokenizer {
 public:
  explicit HfTokenizer(HfSpec spec) : s_(std::move(spec)), bpe_(s_.vocab, s_.merges, s_.source) {
    std::sort(s_.added.begin(), s_.added.end(),
              [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    first_byte_.fill(false);
    for (const auto& a : s_.added)
      if (!a.content.empty()) first_byte_[static_cast<unsigned char>(a.content[0])] = true;
    for (const auto& [token, id] : s_.vocab) decoder_.add(id, token);
    for (const auto& a : s_.added) decoder_.add(a.id, a.content);   // an added token wins over the model's
  }
  std::string name() const override { return "HuggingFaceTokenizer"; }
  int64_t vocab_size() const override { return s_.vocab_size; }
  std::optional<int32_t> eod() const override { return s_.eod; }

  class Session final : public Encoder {
   public:
    explicit Session(const HfTokenizer& t) : t_(t) {
      for (const auto& step : t.s_.steps)
        matchers_.push_back(step.split ? std::make_unique<RegexSplit::Matcher>(*step.split) : nullptr);
    }
    void encode(std::string_view text, std::vector<int32_t>& out) override {
      out.insert(out.end(), t_.s_.prefix.begin(), t_.s_.prefix.end());
      size_t start = 0, i = 0;
      while (i < text.size()) {
        if (!t_.first_byte_[static_cast<unsigned char>(text[i])]) {
          ++i;
          continue;
        }
        const AddedToken* hit = nullptr;
        for (const auto& a : t_.s_.added)  // longest first
          if (!a.content.empty() && text.compare(i, a.content.size(), a.content) == 0) {
            hit = &a;
            break;
          }
        if (hit == nullptr) {
          ++i;
          continue;
        }
        segment(text.substr(start, i - start), out);
        out.push_back(hit->id);
        i += hit->content.size();
        start = i;
      }
      segment(text.substr(start), out);
      out.insert(out.end(), t_.s_.suffix.begin(), t_.s_.suffix.end());
    }

   private:
    void segment(std::string_view text, std::vector<int32_t>& out) {
      if (text.empty()) return;
      std::vector<std::string> pieces{normalized(text)};
      std::vector<std::string_view> cut;
      for (size_t k = 0; k < t_.s_.steps.size(); ++k) {
        std::vector<std::string> next;
        for (std::string& p : pieces) {
          if (t_.s_.steps[k].add_prefix_space && !p.empty() && p[0] != ' ') p.insert(p.begin(), ' ');
          cut.clear();
          if (matchers_[k])
            matchers_[k]->split(p, cut);
          else if (t_.s_.steps[k].gpt2_split)
            gpt2_.split(p, cut);
          else {
            next.push_back(std::move(p));
            continue;
          }
          for (std::string_view c : cut) next.emplace_back(c);
        }
        pieces.swap(next);
      }
      for (const std::string& p : pieces) t_.bpe_.encode_word(p, out, cache_, t_.s_.unk, t_.s_.ignore_merges);
    }
    std::string normalized(std::string_view text) const {
      if (!t_.s_.nfc) return std::string(text);
      UErrorCode status = U_ZERO_ERROR;
      const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
      TANDEM_CHECK(U_SUCCESS(status));
      icu::UnicodeString u =
          icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
      std::string result;
      nfc->normalize(u, status).toUTF8String(result);
      TANDEM_CHECK(U_SUCCESS(status));
      return result;
    }
    const HfTokenizer& t_;
    std::vector<std::unique_ptr<RegexSplit::Matcher>> matchers_;  // [steps], null but for Split steps
    Gpt2Split gpt2_;
    ByteLevelBpe::Cache cache_;
  };
  std::unique_ptr<Encoder> make_encoder() const override { return std::make_unique<Session>(*this); }
  // Hugging Face's decode(ids) with the ByteLevel decoder, special tokens kept (transformers'
  // default, as Megatron's HuggingFaceTokenizer.detokenize calls it); no clean-up of spaces.
  std::string decode(std::span<const int32_t> ids) const override { return decoder_.decode(ids.data(), ids.size()); }

 private:
  HfSpec s_;
  ByteLevelBpe bpe_;
  ByteLevelDecoder decoder_;
  std::array<bool, 256> first_byte_{};  // bytes that start an added token
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  HfSpec s;
  s.source = "--tokenizer-model = " + file.string();
  json j = json::parse(read_file_for("--tokenizer-model", file.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model") || !j["model"].is_object() ||
      !j["model"].contains("vocab") || !j["model"]["vocab"].is_object())
    throw UserError(s.source + ": not a Hugging Face tokenizer.json (expected a JSON object with model.vocab)");
  try {
    for (const auto& a : j.value("added_tokens", json::array())) {
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (a.value(flag, false))
          unsupported(s, std::string("added token with ") + flag + " (" + a.value("content", std::string()) + ")");
      s.added.push_back({a.at("content").get<std::string>(), a.at("id").get<int32_t>()});
    }
    read_normalizer(s, j.value("normalizer", json()));
    bool byte_level = false;
    read_pre_tokenizer(s, j.value("pre_tokenizer", json()), byte_level);
    if (!byte_level) unsupported(s, "a pre_tokenizer without ByteLevel");
    read_model(s, j["model"]);
    read_post_processor(s, j.value("post_processor", json()));
  } catch (const json::exception& e) { throw UserError(s.source + ": malformed tokenizer.json (" + e.what() + ")"); }
  std::set<int32_t> ids;
  for (const auto& v : s.vocab) ids.insert(v.second);
  for (const auto& a : s.added) ids.insert(a.id);
  s.vocab_size = static_cast<int64_t>(ids.size());
  find_eod(s, file.parent_path());
  return std::make_unique<HfTokenizer>(std::move(s));
}

}  // namespace tandem::data
