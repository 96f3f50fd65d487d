// The tokenizer factory, GPT-2 BPE and the Null tokenizer (tokenizer.h).
#include "data/tokenizer.h"

#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "data/byte_level_bpe.h"
#include "data/gpt2_split.h"

namespace tandem::data {

std::string read_file_for(const std::string& flag, const std::string& path) {
  if (path.empty()) throw UserError(flag + " is required for this --tokenizer-type");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_field_error(flag, path, "cannot read the file");
  std::ostringstream all;
  all << in.rdbuf();
  if (in.bad()) throw_field_error(flag, path, "cannot read the file");
  return all.str();
}

std::vector<int32_t> encode_text(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> ids;
  tokenizer.make_encoder()->encode(text, ids);
  return ids;
}

namespace {

// ---- GPT-2 BPE (Megatron's GPT2Tokenizer: no special tokens in text, unknown pieces are id 0) ----

class Gpt2Tokenizer final : public Tokenizer {
 public:
  Gpt2Tokenizer(std::vector<std::pair<std::string, int32_t>> vocab,
                std::vector<std::pair<std::string, std::string>> merges, const std::string& merge_source, int32_t eod)
      : bpe_(vocab, merges, merge_source), vocab_size_(vocab.size()), eod_(eod) {
    for (const auto& [token, id] : vocab) decoder_.add(id, token);
  }
  std::string name() const override { return "GPT2BPETokenizer"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_size_); }
  std::optional<int32_t> eod() const override { return eod_; }

  class Session final : public Encoder {
   public:
    explicit Session(const Gpt2Tokenizer& t) : t_(t) {}
    void encode(std::string_view text, std::vector<int32_t>& out) override {
      pieces_.clear();
      split_.split(text, pieces_);
      for (std::string_view p : pieces_) t_.bpe_.encode_word(p, out, cache_, 0, false);
    }

   private:
    const Gpt2Tokenizer& t_;
    Gpt2Split split_;
    ByteLevelBpe::Cache cache_;
    std::vector<std::string_view> pieces_;
  };
  std::unique_ptr<Encoder> make_encoder() const override { return std::make_unique<Session>(*this); }
  // Megatron's GPT2Tokenizer.decode: the tokens' bytes joined, decoded with errors="replace".
  std::string decode(std::span<const int32_t> ids) const override { return decoder_.decode(ids.data(), ids.size()); }

 private:
  ByteLevelBpe bpe_;
  ByteLevelDecoder decoder_;
  size_t vocab_size_;
  int32_t eod_;
};

// vocab.json: a JSON object of byte-level token -> id.
std::vector<std::pair<std::string, int32_t>> read_gpt2_vocab(const std::string& path) {
  const std::string text = read_file_for("--vocab-file", path);
  const std::string wrong = "not a GPT-2 vocabulary (expected a JSON object of token -> id, as vocab.json)";
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.empty()) throw_field_error("--vocab-file", path, wrong);
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > std::numeric_limits<int32_t>::max())
      throw_field_error("--vocab-file", path, wrong + "; entry '" + it.key() + "' is not an id");
    vocab.emplace_back(it.key(), it.value().get<int32_t>());
  }
  return vocab;
}

// merges.txt as Megatron reads it: split at '\n', drop the first line (the "#version" header) and
// the last (empty after the final newline); each line is "LEFT RIGHT".
std::vector<std::pair<std::string, std::string>> read_gpt2_merges(const std::string& path) {
  const std::string text = read_file_for("--merge-file", path);
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  if (!text.empty() && text.back() == '\n') lines.push_back("");  // split('\n') keeps the empty tail
  std::vector<std::pair<std::string, std::string>> merges;
  for (size_t i = 1; i + 1 < lines.size(); ++i) {
    std::istringstream words(lines[i]);
    std::vector<std::string> parts;
    for (std::string w; words >> w;) parts.push_back(w);
    if (parts.empty()) continue;
    if (parts.size() != 2)
      throw UserError("--merge-file = " + path + ": line " + std::to_string(i + 1) +
                      " is not a merge 'LEFT RIGHT' (not a GPT-2 merges file)");
    merges.emplace_back(parts[0], parts[1]);
  }
  if (merges.empty()) throw_field_error("--merge-file", path, "no merges (not a GPT-2 merges file)");
  return merges;
}

// ---- Null tokenizer: ids written as text ----

class NullTokenizer final : public Tokenizer {
 public:
  explicit NullTokenizer(int64_t vocab_size) : n_(vocab_size) {}
  std::string name() const override { return "NullTokenizer"; }
  int64_t vocab_size() const override { return n_ + 1; }
  std::optional<int32_t> eod() const override { return static_cast<int32_t>(n_); }

  class Session final : public Encoder {
   public:
    explicit Session(int64_t n) : n_(n) {}
    void encode(std::string_view text, std::vector<int32_t>& out) override {
      size_t i = 0;
      while (i < text.size()) {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        size_t j = i;
        while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
        if (j > i) out.push_back(parse(text.substr(i, j - i), i));
        i = j;
      }
    }

   private:
    int32_t parse(std::string_view word, size_t at) const {
      int64_t v = 0;
      size_t k = (word[0] == '+') ? 1 : 0;
      bool ok = k < word.size();
      for (; ok && k < word.size(); ++k) {
        if (!std::isdigit(static_cast<unsigned char>(word[k])) || v > n_)
          ok = false;
        else
          v = v * 10 + (word[k] - '0');
      }
      if (!ok || v > n_)
        throw UserError("NullTokenizer: '" + std::string(word.substr(0, 40)) + "' at character " + std::to_string(at) +
                        " is not a token id in [0, " + std::to_string(n_) + "]");
      return static_cast<int32_t>(v);
    }
    int64_t n_;
  };
  std::unique_ptr<Encoder> make_encoder() const override { return std::make_unique<Session>(n_); }
  // Megatron's _NullTokenizer.detokenize: the ids joined by single spaces (every id, in range or not).
  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) out += ' ';
      out += std::to_string(ids[i]);
    }
    return out;
  }

 private:
  int64_t n_;  // ids 0..n_-1, and n_ for EOD
};

}  // namespace

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& vocab_file, const std::string& merge_file) {
  auto vocab = read_gpt2_vocab(vocab_file);
  auto merges = read_gpt2_merges(merge_file);
  int32_t eod = -1;
  for (const auto& [token, id] : vocab)
    if (token == "<|endoftext|>") eod = id;
  if (eod < 0) throw_field_error("--vocab-file", vocab_file, "has no <|endoftext|> token (not a GPT-2 vocabulary)");
  return std::make_unique<Gpt2Tokenizer>(std::move(vocab), std::move(merges), "--merge-file = " + merge_file, eod);
}

std::unique_ptr<Tokenizer> make_null_tokenizer(int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size >= std::numeric_limits<int32_t>::max())
    throw_field_error("--vocab-size", vocab_size, "must be in [1, 2^31 - 1)");
  return std::make_unique<NullTokenizer>(vocab_size);
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerOptions& o) {
  if (o.type == "GPT2BPETokenizer") return make_gpt2_tokenizer(o.vocab_file, o.merge_file);
  if (o.type == "HuggingFaceTokenizer") {
    if (o.tokenizer_model.empty()) throw UserError("--tokenizer-model is required for HuggingFaceTokenizer");
    return make_hf_tokenizer(o.tokenizer_model);
  }
  if (o.type == "SentencePieceTokenizer") {
    if (o.tokenizer_model.empty()) throw UserError("--tokenizer-model is required for SentencePieceTokenizer");
    return make_sentencepiece_tokenizer(o.tokenizer_model);
  }
  if (o.type == "NullTokenizer") {
    if (!o.vocab_size) throw UserError("--vocab-size is required for NullTokenizer");
    return make_null_tokenizer(*o.vocab_size);
  }
  throw_field_error("--tokenizer-type", o.type.empty() ? std::string("(missing)") : o.type,
                    "expected GPT2BPETokenizer, HuggingFaceTokenizer, SentencePieceTokenizer or NullTokenizer");
}

}  // namespace tandem::data
