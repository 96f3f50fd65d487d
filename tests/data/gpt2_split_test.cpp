// GPT-2's split by hand (data/gpt2_split.h) equals ICU's regex engine running GPT-2's pattern
// (data/regex_split.h) on random strings over the classes that matter: ASCII letters, digits,
// contractions' letters and apostrophes, spaces, tabs, newlines, Unicode letters of every general
// category (Lu Ll Lt Lm Lo), numbers (Nd Nl No), combining marks (not letters), emoji, and the
// whitespace characters outside ASCII (NBSP, NEL, ideographic space, line separator).
#include "data/gpt2_split.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "data/regex_split.h"

using namespace tandem::data;

namespace {

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
}

}  // namespace

TEST(Gpt2Split, EqualsTheRegexOnRandomText) {
  const std::vector<char32_t> pool = {'a',     'Z',    's',    't',    'r',    'e',    'v',    'l',    'd',    'm',
                                      'S',     '\'',   '\'',   ' ',    ' ',    ' ',    '\t',   '\n',   '\r',   '\v',
                                      '\f',    '1',    '0',    '!',    '.',    ',',    '-',    '_',    '"',    0x1C,
                                      0xE9,    0x01C5, 0x02B0, 0x65E5, 0x0416, 0x0661, 0x2160, 0x00BD, 0x0301, 0x1F600,
                                      0x1F44D, 0x200D, 0x00A0, 0x0085, 0x3000, 0x2028, 0x2009, 0xFEFF, 0x00AD};
  RegexSplit regex(kGpt2SplitPattern, "test");
  RegexSplit::Matcher matcher(regex);
  Gpt2Split by_hand;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20000; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) append_utf8(text, pool[rng() % pool.size()]);
    std::vector<std::string_view> want, got;
    matcher.split(text, want);
    by_hand.split(text, got);
    ASSERT_EQ(got, want) << "text: '" << text << "'";
  }
}

TEST(Gpt2Split, KnownPieces) {
  Gpt2Split s;
  std::vector<std::string_view> got;
  s.split("Hello world's   end\t\tx 42 ½!! ", got);
  EXPECT_EQ(got, (std::vector<std::string_view>{"Hello", " world", "'s", "  ", " end", "\t", "\t", "x", " 42", " ½",
                                                "!!", " "}));
}
