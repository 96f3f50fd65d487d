#pragma once
// Pre-tokenization by a regular expression with Unicode classes (GPT-2's and Llama 3's split
// patterns), through ICU. A text is cut into the pieces the pattern matches and, between them,
// the gaps it does not match (Hugging Face's "Isolated" split behaviour; the GPT-2 pattern leaves
// no gaps). `\s` and `\S` mean Unicode White_Space as in Python's `regex` module (ICU's own `\s`
// omits U+000B and U+0085).
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::data {

// GPT-2's pattern (gpt2_tokenization.py, Hugging Face's ByteLevel pre-tokenizer).
extern const char* const kGpt2SplitPattern;

class RegexSplit {
 public:
  // `source` names where the pattern came from, for the error on a pattern ICU rejects.
  RegexSplit(const std::string& pattern, const std::string& source);
  ~RegexSplit();
  RegexSplit(const RegexSplit&) = delete;
  RegexSplit& operator=(const RegexSplit&) = delete;

  // One per thread: holds ICU's matcher state.
  class Matcher {
   public:
    explicit Matcher(const RegexSplit& split);
    ~Matcher();
    Matcher(const Matcher&) = delete;
    Matcher& operator=(const Matcher&) = delete;
    // Appends the pieces of `text` (UTF-8) in order; they concatenate back to `text`.
    void split(std::string_view text, std::vector<std::string_view>& pieces);

   private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
  };

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::data
