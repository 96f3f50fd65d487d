// `tandem preprocess --input FILE.jsonl[.gz] --output-prefix P --tokenizer-type TYPE [...]`:
// Megatron-LM's tools/preprocess_data.py (without sentence splitting) — JSONL text to the indexed
// datasets P_KEY_document.{bin,idx} that `tandem train -- --data-path` and Megatron read
// (data/preprocess.h). The files are byte-identical to Megatron's for the same input and tokenizer.
#include <unistd.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/command_registry.h"
#include "cli/table.h"
#include "core/check.h"
#include "data/indexed_dataset_writer.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"

namespace tandem::cli {
namespace {

void print_help() {
  std::printf(
      "usage: tandem preprocess --input FILE.jsonl[.gz] --output-prefix P --tokenizer-type TYPE\n"
      "                         [--vocab-file F] [--merge-file F] [--tokenizer-model F] [--vocab-size N]\n"
      "                         [--json-keys KEY...] [--append-eod] [--workers N] [--skip-bad-lines]\n\n"
      "Tokenizes one JSON object per line and writes P_KEY_document.bin/.idx for every KEY (default\n"
      "text), in Megatron's indexed-dataset format, as tools/preprocess_data.py does.\n\n"
      "TYPE and its files:\n"
      "  GPT2BPETokenizer        --vocab-file vocab.json --merge-file merges.txt\n"
      "  HuggingFaceTokenizer    --tokenizer-model tokenizer.json (or its directory; EOD from\n"
      "                          tokenizer_config.json's eos_token when present)\n"
      "  SentencePieceTokenizer  --tokenizer-model tokenizer.model\n"
      "  NullTokenizer           --vocab-size N (text holds whitespace-separated ids; EOD = N)\n\n"
      "--append-eod    end every non-empty document with the tokenizer's end-of-document token\n"
      "--workers N     tokenize on N threads (output identical for any N; default 1)\n"
      "--skip-bad-lines  warn about a line that is not a JSON object with the keys, and go on\n"
      "                  (default: stop with FILE:LINE and write nothing)\n"
      "Megatron's --log-interval N, --partitions 1 and --dataset-impl mmap are accepted.\n");
}

struct Args {
  data::PreprocessOptions run;
  data::TokenizerOptions tokenizer;
  bool help = false;
};

int64_t parse_count(const std::string& flag, const std::string& text, int64_t min) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) { used = 0; }
  if (text.empty() || used != text.size()) throw_field_error(flag, text, "expected an integer");
  if (v < min) throw_field_error(flag, text, "must be at least " + std::to_string(min));
  return v;
}

Args parse_args(const std::vector<std::string>& args) {
  Args a;
  std::map<std::string, std::string*> text = {{"--input", &a.run.input},
                                              {"--output-prefix", &a.run.output_prefix},
                                              {"--tokenizer-type", &a.tokenizer.type},
                                              {"--vocab-file", &a.tokenizer.vocab_file},
                                              {"--merge-file", &a.tokenizer.merge_file},
                                              {"--tokenizer-model", &a.tokenizer.tokenizer_model}};
  bool keys_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool has_value = false;
    if (const size_t eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() {
      if (has_value) return value;
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) throw_field_error(flag, "(none)", "missing value");
      return args[++i];
    };
    if (flag == "--help" || flag == "-h")
      a.help = true;
    else if (text.count(flag))
      *text[flag] = take();
    else if (flag == "--vocab-size")
      a.tokenizer.vocab_size = parse_count(flag, take(), 1);
    else if (flag == "--workers")
      a.run.workers = static_cast<int>(parse_count(flag, take(), 1));
    else if (flag == "--append-eod")
      a.run.append_eod = true;
    else if (flag == "--skip-bad-lines")
      a.run.skip_bad_lines = true;
    else if (flag == "--json-keys") {
      if (!keys_given) a.run.json_keys.clear();
      keys_given = true;
      if (has_value) a.run.json_keys.push_back(value);
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) a.run.json_keys.push_back(args[++i]);
      if (a.run.json_keys.empty()) throw_field_error("--json-keys", "(none)", "missing value");
    } else if (flag == "--log-interval") {
      parse_count(flag, take(), 1);  // Megatron's: progress here is shown twice a second on a terminal
    } else if (flag == "--partitions") {
      if (parse_count(flag, take(), 1) != 1)
        throw_field_error(flag, args[i], "only 1 (one input file, read in order; use --workers for threads)");
    } else if (flag == "--dataset-impl") {
      if (take() != "mmap") throw_field_error(flag, args[i], "only mmap (MMIDIDX) is written");
    } else if (flag == "--split-sentences") {
      throw UserError(
          "--split-sentences: sentence splitting (NLTK punkt) is not supported; give each document's "
          "sentences as a JSON list of strings instead");
    } else {
      throw_field_error(flag, "", "unknown option (see `tandem preprocess --help`)");
    }
  }
  if (a.help) return a;
  for (const char* required : {"--input", "--output-prefix", "--tokenizer-type"})
    if (text[required]->empty())
      throw UserError(std::string(required) + " is required (see `tandem preprocess --help`)");
  if (a.run.workers > 256) throw_field_error("--workers", a.run.workers, "must be at most 256");
  return a;
}

int run_preprocess(const std::vector<std::string>& raw) {
  const Args a = parse_args(raw);
  if (a.help) {
    print_help();
    return 0;
  }
  auto tokenizer = data::make_tokenizer(a.tokenizer);
  const bool tty = isatty(fileno(stderr)) != 0;
  data::PreprocessHooks hooks;
  if (tty)
    hooks.progress = [](const data::PreprocessStats& s) {
      std::fprintf(stderr, "\r\033[KProcessed %s documents (%.0f docs/s, %.2f MB/s)", with_commas(s.documents).c_str(),
                   s.documents / s.seconds, s.bytes / s.seconds / 1048576.0);
    };
  hooks.warn = [tty](const std::string& w) {
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "tandem preprocess: warning: %s; line skipped\n", w.c_str());
  };
  const data::PreprocessStats s = data::preprocess(a.run, *tokenizer, hooks);
  if (tty) std::fprintf(stderr, "\r\033[K");
  const bool u16 = data::optimal_dtype(tokenizer->vocab_size()) == data::TokenDtype::UInt16;
  for (const std::string& p : s.outputs) std::printf("wrote %s.bin and %s.idx\n", p.c_str(), p.c_str());
  std::printf("%s documents (%s skipped), %s tokens, dtype %s (%s vocabulary %s)\n", with_commas(s.documents).c_str(),
              with_commas(s.skipped).c_str(), with_commas(s.tokens).c_str(), u16 ? "uint16" : "int32",
              tokenizer->name().c_str(), with_commas(tokenizer->vocab_size()).c_str());
  const double t = s.seconds > 0 ? s.seconds : 1e-9;
  std::printf("%.2f s with %d worker%s: %.0f documents/s, %.2f MB/s, %.0f tokens/s\n", s.seconds, a.run.workers,
              a.run.workers == 1 ? "" : "s", s.documents / t, s.bytes / t / 1048576.0, s.tokens / t);
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(preprocess, "preprocess", "JSONL text to Megatron indexed datasets (tools/preprocess_data.py)",
                        tandem::cli::run_preprocess)
