#pragma once
// tools/preprocess_data.py without sentence splitting: a JSONL file (one JSON object per line,
// plain or .gz) becomes, for every --json-keys KEY, the indexed dataset
// OUTPUT_PREFIX_KEY_document.{bin,idx} (indexed_dataset_writer.h), byte-identical to Megatron's.
//
// Per line and key, as Megatron's Encoder.encode: the value is a string (one sentence) or a list
// of strings (sentences); each sentence is tokenized and the non-empty ones become the document's
// sequences; with append_eod a document that has tokens gets EOD after its last token (the last
// sequence grows by one); a document without tokens is still a document (no sequence). The .bin
// dtype follows the tokenizer's vocabulary size.
//
// Tokenization runs on `workers` threads over batches of lines, while the calling thread reads the
// next batch and writes the previous one; documents are written in input
// order, so the files are identical for any number of workers. Blank lines are skipped. A line
// that is not a JSON object with every key as a string or list of strings is an error naming
// FILE:LINE (UserError), or, with skip_bad_lines, a warning and no document.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace tandem::data {

struct PreprocessOptions {
  std::string input;                           // --input
  std::string output_prefix;                   // --output-prefix
  std::vector<std::string> json_keys{"text"};  // --json-keys
  bool append_eod = false;                     // --append-eod
  int workers = 1;                             // --workers
  bool skip_bad_lines = false;                 // --skip-bad-lines
};

struct PreprocessStats {
  int64_t documents = 0;  // lines written as documents
  int64_t skipped = 0;    // bad lines skipped
  int64_t tokens = 0;     // over every key, EOD included
  int64_t bytes = 0;      // input bytes read (uncompressed, line ends included)
  double seconds = 0;
  std::vector<std::string> outputs;  // the prefixes written, one per key
};

struct PreprocessHooks {
  std::function<void(const PreprocessStats&)> progress;  // now and then while running
  std::function<void(const std::string&)> warn;          // a skipped line: "FILE:LINE: reason"
};

PreprocessStats preprocess(const PreprocessOptions& options, const Tokenizer& tokenizer,
                           const PreprocessHooks& hooks = {});

}  // namespace tandem::data
