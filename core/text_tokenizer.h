#pragma once
// Text <-> token ids for commands that take or print text (`tandem generate --prompt`).
//
// A tokenizer is chosen by Megatron's --tokenizer-type name. Only NullTokenizer is built in:
// Megatron's _NullTokenizer reads a text of whitespace-separated integer ids and writes ids back
// joined by single spaces; its end-of-document id is its last id. Megatron's NullTokenizer for
// --vocab-size N holds N + 1 ids with EOD = N; tandem's model vocab_size counts every id the
// tokenizer has (core/job.h), so a NullTokenizer of a model with V ids has EOD = V - 1.
// Another tokenizer plugs in as one more TextTokenizer and one more branch in make_text_tokenizer.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tandem {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  // UserError naming the offending piece and its offset when `text` cannot be tokenized.
  virtual std::vector<int32_t> tokenize(const std::string& text) const = 0;
  virtual std::string detokenize(std::span<const int32_t> ids) const = 0;
  virtual std::optional<int32_t> eod() const = 0;   // end-of-document id, if the tokenizer has one
};

// `type`: a --tokenizer-type name; `vocab_size`: the model's (unpadded) vocabulary. UserError
// naming --tokenizer-type for an unknown or unsupported type.
std::unique_ptr<TextTokenizer> make_text_tokenizer(const std::string& type, int64_t vocab_size);

// The --tokenizer-type names make_text_tokenizer accepts.
std::vector<std::string> text_tokenizer_types();

}  // namespace tandem
