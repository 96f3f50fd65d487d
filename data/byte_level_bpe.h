#pragma once
// Byte-level BPE as GPT-2 defines it (Radford et al. 2019; Megatron's gpt2_tokenization.py and
// Hugging Face's byte-level BPE model): every byte of a pre-token is one initial symbol, and
// adjacent symbol pairs are merged by ascending merge rank until no ranked pair is left.
//
// Vocabulary and merges files write bytes through GPT-2's byte-to-unicode map (printable bytes
// stand for themselves, the other 68 bytes for U+0100.. in byte order); this class decodes them
// back, so its symbols are raw byte strings and symbol ids 0..255 are the single bytes.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tandem::data {

// GPT-2's byte-to-unicode map: byte -> code point (256 entries).
const std::vector<char32_t>& byte_to_unicode();
// Decodes one byte-level token (UTF-8 of byte-to-unicode code points) into raw bytes; false when
// the text holds a code point outside the map (then the token is not byte-level).
bool decode_byte_level(std::string_view token, std::string& bytes);
// Raw bytes -> valid UTF-8: each maximal ill-formed subsequence becomes U+FFFD (Unicode's
// recommended practice, as Python's bytes.decode("utf-8", errors="replace") and Rust's
// String::from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

// Id -> the raw bytes of its token, for decoding: byte-level token text through the byte map,
// any other text (an added token outside the map) as its own UTF-8. Ids without a token are absent.
class ByteLevelDecoder {
 public:
  void add(int32_t id, std::string_view token_text);
  // Concatenated bytes of the ids' tokens (ids without a token skipped), then utf8_lossy.
  std::string decode(const int32_t* ids, size_t n) const;

 private:
  std::vector<std::string> bytes_;    // [id] token bytes
  std::vector<bool> present_;         // [id] has a token
};

class ByteLevelBpe {
 public:
  // vocab: byte-level token text -> id; merges in rank order (rank = position), each a pair of
  // byte-level token texts. A pair listed twice keeps its last rank (as Python's dict(zip(...))).
  // `source` names the flag and file for error messages. Throws UserError when a merge is not
  // byte-level text.
  ByteLevelBpe(const std::vector<std::pair<std::string, int32_t>>& vocab,
               const std::vector<std::pair<std::string, std::string>>& merges, const std::string& source);

  // Per-thread memo of word -> ids (GPT-2's cache); bounded so a long run does not grow without end.
  using Cache = std::unordered_map<std::string, std::vector<int32_t>>;

  // Appends the ids of one pre-token `word` (raw bytes). A symbol missing from the vocabulary is
  // written as `unknown_id`, or dropped when unknown_id < 0. With ignore_merges (Llama 3's
  // tokenizer.json), a word that is itself in the vocabulary is that one id.
  void encode_word(std::string_view word, std::vector<int32_t>& out, Cache& cache, int32_t unknown_id,
                   bool ignore_merges) const;

  // Id of a raw byte string in the vocabulary, or -1.
  int32_t id_of(std::string_view bytes) const;

 private:
  int32_t intern(const std::string& s);
  void merge(std::vector<int32_t>& syms) const;

  struct Merge {
    int32_t rank;
    int32_t result;  // symbol id of the concatenation
  };
  std::unordered_map<std::string, int32_t> symbol_of_;  // raw bytes -> symbol id
  std::vector<int32_t> token_of_symbol_;                // symbol id -> vocabulary id or -1
  std::unordered_map<uint64_t, Merge> merges_;          // (left << 32 | right) -> merge
};

}  // namespace tandem::data
