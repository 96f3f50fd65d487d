// GPT-2's split by hand (gpt2_split.h).
#include "data/gpt2_split.h"

#include <unicode/uchar.h>

namespace tandem::data {

Gpt2Split::Class Gpt2Split::classify(char32_t c) {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return Class::Letter;
    if (c >= '0' && c <= '9') return Class::Number;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return Class::Space;
    return Class::Other;
  }
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return Class::Letter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return Class::Number;
    default:
      return u_isUWhiteSpace(static_cast<UChar32>(c)) ? Class::Space : Class::Other;
  }
}

void Gpt2Split::split(std::string_view text, std::vector<std::string_view>& pieces) {
  offset_.clear();
  cp_.clear();
  cls_.clear();
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t bytes = text.size();
  for (size_t i = 0; i < bytes;) {  // UTF-8 decode; the JSON parser has validated it
    offset_.push_back(static_cast<unsigned>(i));
    char32_t c = s[i];
    size_t len = 1;
    if (c >= 0xF0 && i + 3 < bytes) {
      c = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
      len = 4;
    } else if (c >= 0xE0 && i + 2 < bytes) {
      c = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
      len = 3;
    } else if (c >= 0xC0 && i + 1 < bytes) {
      c = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F);
      len = 2;
    }
    cp_.push_back(c);
    cls_.push_back(classify(c));
    i += len;
  }
  const size_t n = cp_.size();
  offset_.push_back(static_cast<unsigned>(bytes));
  auto run = [&](size_t j, Class c) {  // end of the run of class c from j
    while (j < n && cls_[j] == c) ++j;
    return j;
  };
  size_t i = 0;
  while (i < n) {
    size_t end = i;
    const char32_t c = cp_[i];
    const char32_t next = i + 1 < n ? cp_[i + 1] : 0;
    const char32_t after = i + 2 < n ? cp_[i + 2] : 0;
    if (c == '\'' && (next == 's' || next == 't' || next == 'm' || next == 'd')) {
      end = i + 2;
    } else if (c == '\'' &&
               ((next == 'r' && after == 'e') || (next == 'v' && after == 'e') || (next == 'l' && after == 'l'))) {
      end = i + 3;
    } else {
      // " ?X+" for X = letter, number, other: an optional space then a run of one class.
      const size_t j = (c == ' ' && i + 1 < n && cls_[i + 1] != Class::Space) ? i + 1 : i;
      if (cls_[j] != Class::Space) {
        end = run(j, cls_[j]);
      } else {  // whitespace: \s+(?!\S) leaves the last one for the next piece, unless at the end
        const size_t k = run(i, Class::Space);
        end = (k == n || k - i == 1) ? k : k - 1;
      }
    }
    pieces.push_back(text.substr(offset_[i], offset_[end] - offset_[i]));
    i = end;
  }
}

}  // namespace tandem::data
