// Text tokenizers by --tokenizer-type name (text_tokenizer.h).
#include "core/text_tokenizer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "core/check.h"

namespace tandem {
namespace {

// Megatron's NullTokenizer: ids written as decimal integers separated by whitespace.
class NullTokenizer final : public TextTokenizer {
 public:
  explicit NullTokenizer(int64_t vocab_size) : vocab_size_(vocab_size) {}

  std::vector<int32_t> tokenize(const std::string& text) const override {
    std::vector<int32_t> ids;
    size_t at = 0;
    while (at < text.size()) {
      if (std::isspace(static_cast<unsigned char>(text[at]))) {
        ++at;
        continue;
      }
      size_t end = at;
      while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      const std::string word = text.substr(at, end - at);
      char* stop = nullptr;
      errno = 0;
      const long long id = std::strtoll(word.c_str(), &stop, 10);
      if (stop != word.c_str() + word.size() || errno != 0 || id < 0 || id >= vocab_size_)
        throw UserError("NullTokenizer: '" + word + "' at character " + std::to_string(at) +
                        " is not a token id in [0, " + std::to_string(vocab_size_) + ")");
      ids.push_back(static_cast<int32_t>(id));
      at = end;
    }
    return ids;
  }

  std::string detokenize(std::span<const int32_t> ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) out += ' ';
      out += std::to_string(ids[i]);
    }
    return out;
  }

  std::optional<int32_t> eod() const override { return static_cast<int32_t>(vocab_size_ - 1); }

 private:
  int64_t vocab_size_;
};

}  // namespace

std::vector<std::string> text_tokenizer_types() { return {"NullTokenizer"}; }

std::unique_ptr<TextTokenizer> make_text_tokenizer(const std::string& type, int64_t vocab_size) {
  TANDEM_CHECK(vocab_size >= 1);
  if (type == "NullTokenizer") return std::make_unique<NullTokenizer>(vocab_size);
  std::string known;
  for (const std::string& t : text_tokenizer_types()) {
    if (!known.empty()) known += ", ";
    known += t;
  }
  throw_field_error("--tokenizer-type", type, "unknown or not supported here (supported: " + known + ")");
}

}  // namespace tandem
