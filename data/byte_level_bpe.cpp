// Byte-level BPE (byte_level_bpe.h).
#include "data/byte_level_bpe.h"

#include <unicode/unistr.h>

#include <limits>

#include "core/check.h"

namespace tandem::data {

const std::vector<char32_t>& byte_to_unicode() {
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(256, 0);
    std::vector<bool> printable(256, false);
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = printable[b] ? static_cast<char32_t>(b) : next++;
    return t;
  }();
  return table;
}

namespace {

// code point -> byte for the 324 code points the map uses; -1 elsewhere.
const std::vector<int>& unicode_to_byte() {
  static const std::vector<int> table = [] {
    std::vector<int> t(512, -1);
    const auto& fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = b;
    return t;
  }();
  return table;
}

}  // namespace

bool decode_byte_level(std::string_view token, std::string& bytes) {
  bytes.clear();
  const auto& inv = unicode_to_byte();
  for (size_t i = 0; i < token.size();) {
    const auto c = static_cast<unsigned char>(token[i]);
    char32_t cp = 0;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < token.size()) {  // the map only reaches U+0143
      cp = (static_cast<char32_t>(c & 0x1F) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;
    }
    if (cp >= inv.size() || inv[cp] < 0) return false;
    bytes.push_back(static_cast<char>(inv[cp]));
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  // ICU substitutes U+FFFD per maximal subpart of an ill-formed sequence (Unicode 6.0+ practice).
  const icu::UnicodeString u =
      icu::UnicodeString::fromUTF8(icu::StringPiece(bytes.data(), static_cast<int32_t>(bytes.size())));
  std::string out;
  u.toUTF8String(out);
  return out;
}

void ByteLevelDecoder::add(int32_t id, std::string_view token_text) {
  TANDEM_CHECK(id >= 0);
  const auto at = static_cast<size_t>(id);
  if (at >= bytes_.size()) {
    bytes_.resize(at + 1);
    present_.resize(at + 1, false);
  }
  std::string raw;
  if (!decode_byte_level(token_text, raw)) raw.assign(token_text);
  bytes_[at] = std::move(raw);
  present_[at] = true;
}

std::string ByteLevelDecoder::decode(const int32_t* ids, size_t n) const {
  std::string raw;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && static_cast<size_t>(id) < bytes_.size() && present_[static_cast<size_t>(id)])
      raw += bytes_[static_cast<size_t>(id)];
  }
  return utf8_lossy(raw);
}

int32_t ByteLevelBpe::intern(const std::string& s) {
  auto [it, inserted] = symbol_of_.emplace(s, static_cast<int32_t>(token_of_symbol_.size()));
  if (inserted) token_of_symbol_.push_back(-1);
  return it->second;
}

ByteLevelBpe::ByteLevelBpe(const std::vector<std::pair<std::string, int32_t>>& vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges, const std::string& source) {
  for (int b = 0; b < 256; ++b) intern(std::string(1, static_cast<char>(b)));  // symbol b = byte b
  std::string bytes;
  for (const auto& [text, id] : vocab) {
    if (!decode_byte_level(text, bytes)) continue;  // e.g. an added token outside the byte map
    token_of_symbol_[static_cast<size_t>(intern(bytes))] = id;
  }
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    if (!decode_byte_level(merges[rank].first, left) || !decode_byte_level(merges[rank].second, right))
      throw UserError(source + ": merge " + std::to_string(rank + 1) + " ('" + merges[rank].first + " " +
                      merges[rank].second + "') is not byte-level BPE text");
    const int32_t a = intern(left), b = intern(right), ab = intern(left + right);
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    merges_[key] = Merge{static_cast<int32_t>(rank), ab};
  }
}

int32_t ByteLevelBpe::id_of(std::string_view bytes) const {
  auto it = symbol_of_.find(std::string(bytes));
  return it == symbol_of_.end() ? -1 : token_of_symbol_[static_cast<size_t>(it->second)];
}

// GPT-2's loop: take the adjacent pair of lowest rank, merge its every occurrence left to right,
// repeat until no adjacent pair is ranked. syms: [symbols of the word], shrinks in place.
void ByteLevelBpe::merge(std::vector<int32_t>& syms) const {
  std::vector<int32_t> next;
  while (syms.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    const Merge* best = nullptr;
    int32_t first = -1, second = -1;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(syms[i]) << 32) | static_cast<uint32_t>(syms[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best = &it->second;
        first = syms[i];
        second = syms[i + 1];
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < syms.size();) {
      if (i + 1 < syms.size() && syms[i] == first && syms[i + 1] == second) {
        next.push_back(best->result);
        i += 2;
      } else {
        next.push_back(syms[i]);
        i += 1;
      }
    }
    syms.swap(next);
  }
}

void ByteLevelBpe::encode_word(std::string_view word, std::vector<int32_t>& out, Cache& cache, int32_t unknown_id,
                               bool ignore_merges) const {
  if (word.empty()) return;
  std::string key(word);
  if (auto hit = cache.find(key); hit != cache.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<int32_t> ids;
  const int32_t whole = ignore_merges ? id_of(word) : -1;
  if (whole >= 0) {
    ids.push_back(whole);
  } else {
    std::vector<int32_t> syms(word.size());
    for (size_t i = 0; i < word.size(); ++i) syms[i] = static_cast<unsigned char>(word[i]);
    merge(syms);
    for (int32_t s : syms) {
      const int32_t id = token_of_symbol_[static_cast<size_t>(s)];
      if (id >= 0)
        ids.push_back(id);
      else if (unknown_id >= 0)
        ids.push_back(unknown_id);
    }
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache.size() > (1u << 18)) cache.clear();
  cache.emplace(std::move(key), std::move(ids));
}

}  // namespace tandem::data
