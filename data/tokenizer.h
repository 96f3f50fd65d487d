#pragma once
// Tokenizers of Megatron-LM's --tokenizer-type, as tools/preprocess_data.py builds them:
//   GPT2BPETokenizer       --vocab-file vocab.json --merge-file merges.txt (byte-level BPE; EOD is
//                          <|endoftext|>; vocabulary size = entries of vocab.json)
//   HuggingFaceTokenizer   --tokenizer-model tokenizer.json, or a directory holding it (byte-level
//                          BPE as GPT-2 and Llama 3 ship it: added tokens, split regexes, NFC,
//                          template post-processor; EOD = eos_token of tokenizer_config.json)
//   SentencePieceTokenizer --tokenizer-model tokenizer.model (Megatron adds <CLS> <SEP> <EOD> <MASK>
//                          and pad/bos/eos pieces when missing; EOD = <EOD>)
//   NullTokenizer          --vocab-size N: the text is whitespace-separated ids; EOD = N,
//                          vocabulary size N + 1
// The vocabulary size decides the .bin dtype (uint16 below 65,500, else int32).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::data {

// Turns texts into ids; one per worker thread (holds caches and matcher state).
class Encoder {
 public:
  virtual ~Encoder() = default;
  // Appends the ids of `text` (UTF-8). Throws UserError for text the tokenizer cannot take (a
  // NullTokenizer word that is not an id in range); the caller adds the file and line.
  virtual void encode(std::string_view text, std::vector<int32_t>& out) = 0;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int64_t vocab_size() const = 0;          // Megatron's tokenizer.vocab_size
  virtual std::optional<int32_t> eod() const = 0;  // none: --append-eod is refused
  virtual std::unique_ptr<Encoder> make_encoder() const = 0;
  // Text of `ids` as Megatron's tokenizer.detokenize gives it (UTF-8; byte sequences that are not
  // UTF-8 become U+FFFD, as Python's errors="replace"). An id the tokenizer does not have writes
  // nothing (as Hugging Face's tokenizers do): a model may have more ids than its tokenizer.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
};

struct TokenizerOptions {
  std::string type;                   // --tokenizer-type
  std::string vocab_file;             // --vocab-file
  std::string merge_file;             // --merge-file
  std::string tokenizer_model;        // --tokenizer-model
  std::optional<int64_t> vocab_size;  // --vocab-size
};

// Throws UserError naming the flag and file for a missing or wrong-kind file.
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerOptions& options);

// Per kind (tokenizer.cpp, hf_tokenizer.cpp, sentencepiece_tokenizer.cpp).
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& vocab_file, const std::string& merge_file);
std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_file);
std::unique_ptr<Tokenizer> make_null_tokenizer(int64_t vocab_size);

// Whole file as bytes; throws UserError "FLAG = PATH: cannot read" when it cannot be opened.
std::string read_file_for(const std::string& flag, const std::string& path);

// Encodes one text with a fresh Encoder (for one-off use; a long run keeps one Encoder per thread).
std::vector<int32_t> encode_text(const Tokenizer& tokenizer, std::string_view text);

}  // namespace tandem::data
