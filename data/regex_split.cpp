// Regex pre-tokenization through ICU (regex_split.h).
#include "data/regex_split.h"

#include <unicode/regex.h>
#include <unicode/utext.h>

#include "core/check.h"

namespace tandem::data {

const char* const kGpt2SplitPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// \s -> \p{White_Space}, \S -> \P{White_Space}; other escapes copied as they are.
std::string with_unicode_whitespace(const std::string& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's')
        out += "\\p{White_Space}";
      else if (next == 'S')
        out += "\\P{White_Space}";
      else
        out += pattern.substr(i, 2);
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

}  // namespace

struct RegexSplit::Impl {
  std::unique_ptr<icu::RegexPattern> pattern;
};

RegexSplit::RegexSplit(const std::string& pattern, const std::string& source) : impl_(std::make_unique<Impl>()) {
  UErrorCode status = U_ZERO_ERROR;
  UParseError where{};
  const icu::UnicodeString text = icu::UnicodeString::fromUTF8(with_unicode_whitespace(pattern));
  impl_->pattern.reset(icu::RegexPattern::compile(text, 0, where, status));
  if (U_FAILURE(status) || !impl_->pattern)
    throw UserError(source + ": split pattern '" + pattern + "' is not a regular expression ICU accepts (" +
                    u_errorName(status) + " at offset " + std::to_string(where.offset) + ")");
}

RegexSplit::~RegexSplit() = default;

struct RegexSplit::Matcher::Impl {
  std::unique_ptr<icu::RegexMatcher> matcher;
  UText* text = nullptr;
  ~Impl() {
    if (text != nullptr) utext_close(text);
  }
};

RegexSplit::Matcher::Matcher(const RegexSplit& split) : impl_(std::make_unique<Impl>()) {
  UErrorCode status = U_ZERO_ERROR;
  impl_->matcher.reset(split.impl_->pattern->matcher(status));
  TANDEM_CHECK_MSG(U_SUCCESS(status) && impl_->matcher, "ICU matcher: " << u_errorName(status));
}

RegexSplit::Matcher::~Matcher() = default;

void RegexSplit::Matcher::split(std::string_view text, std::vector<std::string_view>& pieces) {
  if (text.empty()) return;
  UErrorCode status = U_ZERO_ERROR;
  impl_->text = utext_openUTF8(impl_->text, text.data(), static_cast<int64_t>(text.size()), &status);
  TANDEM_CHECK_MSG(U_SUCCESS(status), "ICU utext_openUTF8: " << u_errorName(status));
  icu::RegexMatcher& m = *impl_->matcher;
  m.reset(impl_->text);
  size_t last = 0;  // byte offset: the UTF-8 UText's native index is the byte offset
  while (m.find(status)) {
    const auto start = static_cast<size_t>(m.start64(status));
    const auto end = static_cast<size_t>(m.end64(status));
    if (start > last) pieces.push_back(text.substr(last, start - last));
    if (end > start) pieces.push_back(text.substr(start, end - start));
    last = end;
  }
  TANDEM_CHECK_MSG(U_SUCCESS(status), "ICU regex find: " << u_errorName(status));
  if (last < text.size()) pieces.push_back(text.substr(last));
}

}  // namespace tandem::data
