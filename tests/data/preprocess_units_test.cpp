// Units of the data library: the indexed-dataset writer's bytes (Megatron's layout, written out
// by hand for a three-document case with an empty document), dtype choice, cleanup of unfinished
// files, line ends and gzip in the reader, the Null tokenizer, bad lines (error with FILE:LINE and
// nothing written, or skipped with a warning) and tokenizer files of the wrong kind.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "data/byte_level_bpe.h"
#include "data/indexed_dataset_writer.h"
#include "data/line_reader.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using namespace tandem;
using namespace tandem::data;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = fs::path(TANDEM_BINARY_DIR) / "tests" / "data" / "units" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// Little-endian bytes of an integer.
template <typename T>
std::string le(T v) {
  std::string s(sizeof(T), '\0');
  for (size_t i = 0; i < sizeof(T); ++i) s[i] = static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF);
  return s;
}

std::string user_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) { return e.what(); }
  return "(no error)";
}

}  // namespace

TEST(IndexedDatasetWriter, MegatronLayoutWithAnEmptyDocument) {
  const fs::path d = scratch("layout");
  {
    IndexedDatasetWriter w((d / "x").string(), TokenDtype::UInt16);
    w.add_document({5, 6, 7}, {2, 1});  // two sequences
    w.add_document({}, {});             // a document without tokens: no sequence
    w.add_document({65535}, {1});
    w.finalize();
  }
  EXPECT_EQ(slurp(d / "x.bin"), le<uint16_t>(5) + le<uint16_t>(6) + le<uint16_t>(7) + le<uint16_t>(65535));
  const std::string idx = std::string("MMIDIDX\0\0", 9) + le<uint64_t>(1) + le<uint8_t>(8) + le<uint64_t>(3) +
                          le<uint64_t>(4) + le<int32_t>(2) + le<int32_t>(1) + le<int32_t>(1) + le<int64_t>(0) +
                          le<int64_t>(4) + le<int64_t>(6) + le<int64_t>(0) + le<int64_t>(2) + le<int64_t>(2) +
                          le<int64_t>(3);
  EXPECT_EQ(slurp(d / "x.idx"), idx);
  EXPECT_FALSE(fs::exists(d / "x.bin.tmp"));
}

TEST(IndexedDatasetWriter, DtypeByVocabularySize) {
  EXPECT_EQ(optimal_dtype(50257), TokenDtype::UInt16);
  EXPECT_EQ(optimal_dtype(65499), TokenDtype::UInt16);
  EXPECT_EQ(optimal_dtype(65500), TokenDtype::Int32);
  EXPECT_EQ(optimal_dtype(128256), TokenDtype::Int32);
}

TEST(IndexedDatasetWriter, IdPastUint16IsAUserError) {
  const fs::path d = scratch("past-uint16");
  IndexedDatasetWriter w((d / "x").string(), TokenDtype::UInt16);
  EXPECT_NE(user_error([&] { w.add_document({70000}, {1}); }).find("token id 70000 does not fit uint16"),
            std::string::npos);
}

TEST(IndexedDatasetWriter, UnfinishedWriterLeavesNothing) {
  const fs::path d = scratch("unfinished");
  {
    IndexedDatasetWriter w((d / "x").string(), TokenDtype::Int32);
    w.add_document({1}, {1});
    EXPECT_TRUE(fs::exists(d / "x.bin.tmp"));
  }
  EXPECT_TRUE(fs::is_empty(d));
}

TEST(LineReader, UniversalNewlinesAndGzip) {
  const fs::path d = scratch("lines");
  const std::string text = "a\r\nb\rc\n\nlast";
  spit(d / "plain.txt", text);
  gzFile gz = gzopen((d / "z.txt.gz").c_str(), "wb");
  gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
  gzclose(gz);
  for (const char* name : {"plain.txt", "z.txt.gz"}) {
    LineReader r((d / name).string(), "--input");
    std::vector<std::string> lines;
    std::string line;
    int64_t number = 0, bytes = 0;
    while (r.next(line, number, bytes)) lines.push_back(line);
    EXPECT_EQ(lines, (std::vector<std::string>{"a", "b", "c", "", "last"})) << name;
    EXPECT_EQ(number, 5);
    EXPECT_EQ(bytes, static_cast<int64_t>(text.size()));
  }
  EXPECT_NE(user_error([&] { LineReader r((d / "missing.jsonl").string(), "--input"); }).find("--input = "),
            std::string::npos);
  // A .gz cut short is an error, not a shorter file.
  std::string big;
  for (int i = 0; i < 20000; ++i) big += "{\"text\": \"line " + std::to_string(i * 7919) + "\"}\n";
  gz = gzopen((d / "cut.jsonl.gz").c_str(), "wb");
  gzwrite(gz, big.data(), static_cast<unsigned>(big.size()));
  gzclose(gz);
  const std::string whole = slurp(d / "cut.jsonl.gz");
  spit(d / "cut.jsonl.gz", whole.substr(0, whole.size() / 2));
  const std::string e = user_error([&] {
    LineReader r((d / "cut.jsonl.gz").string(), "--input");
    std::string line;
    int64_t number = 0, bytes = 0;
    while (r.next(line, number, bytes)) {}
  });
  EXPECT_NE(e.find("truncated .gz"), std::string::npos) << e;
}

TEST(NullTokenizer, IdsAsTextEodAndRange) {
  auto t = make_null_tokenizer(100);
  EXPECT_EQ(t->vocab_size(), 101);
  EXPECT_EQ(t->eod().value(), 100);
  auto e = t->make_encoder();
  std::vector<int32_t> ids;
  e->encode("1 2  3\n+4 100", ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2, 3, 4, 100}));
  EXPECT_NE(user_error([&] { e->encode("5 x", ids); }).find("'x' at character 2"), std::string::npos);
  EXPECT_NE(user_error([&] { e->encode("101", ids); }).find("[0, 100]"), std::string::npos);
  EXPECT_NE(user_error([&] { e->encode("-1", ids); }).find("'-1'"), std::string::npos);
  EXPECT_EQ(t->decode(std::vector<int32_t>{3, 17, 100}), "3 17 100");
  EXPECT_EQ(encode_text(*t, " 3  17\n42 "), (std::vector<int32_t>{3, 17, 42}));
}

TEST(ByteLevelDecode, InvalidUtf8BecomesReplacementCharacters) {
  // Python: b"a\xffb\xe2\x82c\xe2\x82\xac".decode("utf-8", errors="replace") == "a\ufffdb\ufffdc\u20ac"
  EXPECT_EQ(utf8_lossy("a\xff" "b\xe2\x82" "c\xe2\x82\xac"), "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xe2\x82\xac");
  // A 4-byte lead with one continuation then the end: one U+FFFD for the maximal subpart.
  EXPECT_EQ(utf8_lossy("\xf0\x9f"), "\xef\xbf\xbd");
  ByteLevelDecoder d;
  d.add(0, "\xc4\xa0hi");   // "Ġhi": byte-level text of " hi"
  d.add(2, "<|x|>");          // ASCII: itself
  EXPECT_EQ(d.decode(std::vector<int32_t>{0, 1, 2, 7}.data(), 4), " hi<|x|>");   // ids 1 and 7 have no token
}

TEST(Preprocess, BadLineNamesFileAndLineAndWritesNothing) {
  const fs::path d = scratch("bad-line");
  spit(d / "in.jsonl", "{\"text\": \"1 2\"}\n{\"text\": \"3\"\n{\"text\": 4}\n{\"other\": \"5\"}\n{\"text\": \"6\"}\n");
  auto t = make_null_tokenizer(10);
  PreprocessOptions o;
  o.input = (d / "in.jsonl").string();
  o.output_prefix = (d / "out").string();
  const std::string e = user_error([&] { preprocess(o, *t); });
  EXPECT_NE(e.find("in.jsonl:2: invalid JSON"), std::string::npos) << e;
  EXPECT_EQ(std::distance(fs::directory_iterator(d), fs::directory_iterator()), 1) << "only the input is left";

  o.skip_bad_lines = true;
  o.append_eod = true;
  std::vector<std::string> warnings;
  PreprocessHooks hooks;
  hooks.warn = [&](const std::string& w) { warnings.push_back(w); };
  const PreprocessStats s = preprocess(o, *t, hooks);
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.skipped, 3);
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_NE(warnings[0].find("in.jsonl:2:"), std::string::npos);
  EXPECT_NE(warnings[1].find("in.jsonl:3: key 'text' is neither"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[2].find("in.jsonl:4: no key 'text'"), std::string::npos) << warnings[2];
  EXPECT_EQ(slurp(d / "out_text_document.bin"),
            le<uint16_t>(1) + le<uint16_t>(2) + le<uint16_t>(10) + le<uint16_t>(6) + le<uint16_t>(10));
}

TEST(Preprocess, LargeVocabularyWritesInt32) {
  const fs::path d = scratch("int32");
  spit(d / "in.jsonl", "{\"text\": \"69999 0\"}\n");
  auto t = make_null_tokenizer(70000);
  PreprocessOptions o;
  o.input = (d / "in.jsonl").string();
  o.output_prefix = (d / "out").string();
  o.append_eod = true;
  preprocess(o, *t);
  EXPECT_EQ(slurp(d / "out_text_document.bin"), le<int32_t>(69999) + le<int32_t>(0) + le<int32_t>(70000));
  EXPECT_EQ(slurp(d / "out_text_document.idx")[17], 4);  // dtype code int32
}

TEST(Tokenizers, WrongKindOfFileNamesFlagAndFile) {
  const fs::path d = scratch("wrong-kind");
  spit(d / "merges.txt", "#version: 0.2\n\xC4\xA0 t\nh e\n");
  spit(d / "vocab.json", "{\"h\": 0, \"e\": 1, \"he\": 2, \"<|endoftext|>\": 3}");
  const std::string merges = (d / "merges.txt").string(), vocab = (d / "vocab.json").string();
  std::string e = user_error([&] { make_gpt2_tokenizer(merges, merges); });
  EXPECT_NE(e.find("--vocab-file = " + merges), std::string::npos) << e;
  e = user_error([&] { make_gpt2_tokenizer(vocab, vocab); });
  EXPECT_NE(e.find("--merge-file = " + vocab), std::string::npos) << e;
  EXPECT_EQ(user_error([&] { make_gpt2_tokenizer(vocab, merges); }), "(no error)");
  e = user_error([&] { make_hf_tokenizer(merges); });
  EXPECT_NE(e.find("--tokenizer-model = " + merges), std::string::npos) << e;
  e = user_error([&] { make_sentencepiece_tokenizer(vocab); });
  EXPECT_TRUE(e.find("--tokenizer-model = " + vocab) != std::string::npos ||
              e.find("without SentencePiece") != std::string::npos)
      << e;
  e = user_error([&] { make_gpt2_tokenizer((d / "none.json").string(), merges); });
  EXPECT_NE(e.find("--vocab-file = "), std::string::npos) << e;
}
