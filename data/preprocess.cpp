// The preprocessing pipeline (preprocess.h).
#include "data/preprocess.h"

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/check.h"
#include "data/indexed_dataset_writer.h"
#include "data/line_reader.h"

namespace tandem::data {
namespace {

struct KeyResult {
  std::vector<int32_t> tokens;
  std::vector<int32_t> lengths;  // non-empty sequences
};

struct LineResult {
  std::string line;
  int64_t number = 0;
  std::string error;            // non-empty: a bad line
  std::vector<KeyResult> keys;  // [json_keys]
};

// Megatron's Encoder.encode for one line; errors go to r.error (reported in input order later).
void encode_line(LineResult& r, const PreprocessOptions& o, Encoder& encoder, std::optional<int32_t> eod) {
  r.keys.assign(o.json_keys.size(), KeyResult{});
  nlohmann::json j = nlohmann::json::parse(r.line, nullptr, false);
  if (j.is_discarded()) {
    try {
      const auto reparsed = nlohmann::json::parse(r.line);  // throws the message
      (void)reparsed;
    } catch (const nlohmann::json::exception& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 15: ..." -> "column 15: ..."
      std::string what = e.what();
      const size_t at = what.find("column ");
      r.error = "invalid JSON (" + (at == std::string::npos ? what : what.substr(at)) + ")";
    }
    if (r.error.empty()) r.error = "invalid JSON";
    return;
  }
  if (!j.is_object()) {
    r.error = "not a JSON object";
    return;
  }
  std::vector<std::string> sentences;
  for (size_t k = 0; k < o.json_keys.size(); ++k) {
    const std::string& key = o.json_keys[k];
    auto it = j.find(key);
    if (it == j.end()) {
      r.error = "no key '" + key + "' (--json-keys)";
      return;
    }
    sentences.clear();
    if (it->is_string()) {
      sentences.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) {
          r.error = "key '" + key + "' is a list holding a non-string";
          return;
        }
        sentences.push_back(s.get<std::string>());
      }
    } else {
      r.error = "key '" + key + "' is neither a string nor a list of strings";
      return;
    }
    KeyResult& out = r.keys[k];
    for (const std::string& s : sentences) {
      const size_t before = out.tokens.size();
      try {
        encoder.encode(s, out.tokens);
      } catch (const UserError& e) {
        r.error = "key '" + key + "': " + e.what();
        return;
      }
      if (out.tokens.size() > before) out.lengths.push_back(static_cast<int32_t>(out.tokens.size() - before));
    }
    if (!out.tokens.empty() && o.append_eod) {
      out.tokens.push_back(*eod);
      out.lengths.back() += 1;
    }
  }
}

// Encodes batch[0..n) on one thread per encoder while the caller goes on (reads the next batch,
// writes the previous one); join() waits. Joins in its destructor too, so an error thrown by the
// caller meanwhile does not leave threads running on freed lines.
class BatchEncoding {
 public:
  BatchEncoding() = default;
  BatchEncoding(const BatchEncoding&) = delete;
  BatchEncoding& operator=(const BatchEncoding&) = delete;
  ~BatchEncoding() { join(); }
  void start(std::vector<LineResult>& batch, size_t n, const PreprocessOptions& o,
             std::vector<std::unique_ptr<Encoder>>& encoders, std::optional<int32_t> eod) {
    next_ = 0;
    for (auto& e : encoders)
      threads_.emplace_back([this, &batch, n, &o, &e, eod] {
        for (size_t i = next_++; i < n; i = next_++) encode_line(batch[i], o, *e, eod);
      });
  }
  void join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  std::atomic<size_t> next_{0};
  std::vector<std::thread> threads_;
};

// Appends the documents of batch[0..n) to the writers in order (or reports bad lines).
void write_batch(std::vector<LineResult>& batch, size_t n, const PreprocessOptions& o,
                 std::vector<std::unique_ptr<IndexedDatasetWriter>>& writers, PreprocessStats& stats,
                 const PreprocessHooks& hooks) {
  for (size_t i = 0; i < n; ++i) {
    const LineResult& r = batch[i];
    if (!r.error.empty()) {
      const std::string where = o.input + ":" + std::to_string(r.number) + ": " + r.error;
      if (!o.skip_bad_lines) throw UserError(where + " (--skip-bad-lines skips such lines)");
      ++stats.skipped;
      if (hooks.warn) hooks.warn(where);
      continue;
    }
    for (size_t k = 0; k < writers.size(); ++k) {
      writers[k]->add_document(r.keys[k].tokens, r.keys[k].lengths);
      stats.tokens += static_cast<int64_t>(r.keys[k].tokens.size());
    }
    ++stats.documents;
  }
}

bool blank(const std::string& line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return false;
  return true;
}

// Reads up to batch.size() non-blank lines into batch; returns how many.
size_t read_batch(LineReader& reader, std::vector<LineResult>& batch, int64_t& bytes) {
  size_t n = 0;
  int64_t number = 0;
  while (n < batch.size() && reader.next(batch[n].line, number, bytes)) {
    if (blank(batch[n].line)) continue;
    batch[n].number = number;
    batch[n].error.clear();
    ++n;
  }
  return n;
}

}  // namespace

PreprocessStats preprocess(const PreprocessOptions& o, const Tokenizer& tokenizer, const PreprocessHooks& hooks) {
  if (o.json_keys.empty()) throw UserError("--json-keys: at least one key is required");
  if (o.workers < 1) throw_field_error("--workers", o.workers, "must be at least 1");
  const std::optional<int32_t> eod = tokenizer.eod();
  if (o.append_eod && !eod) throw UserError("--append-eod: " + tokenizer.name() + " has no end-of-document token");
  const auto start = std::chrono::steady_clock::now();
  LineReader reader(o.input, "--input");
  const TokenDtype dtype = optimal_dtype(tokenizer.vocab_size());
  std::vector<std::unique_ptr<IndexedDatasetWriter>> writers;
  PreprocessStats stats;
  for (const std::string& key : o.json_keys) {
    writers.push_back(std::make_unique<IndexedDatasetWriter>(o.output_prefix + "_" + key + "_document", dtype));
    stats.outputs.push_back(writers.back()->prefix());
  }
  std::vector<std::unique_ptr<Encoder>> encoders;
  for (int w = 0; w < o.workers; ++w) encoders.push_back(tokenizer.make_encoder());

  // Pipeline over two batches: while the workers encode one, this thread reads the next and then
  // writes the one they finished. Documents are written in input order whatever the timing.
  const size_t batch_lines = 512 * static_cast<size_t>(o.workers);
  std::array<std::vector<LineResult>, 2> batches{std::vector<LineResult>(batch_lines),
                                                 std::vector<LineResult>(batch_lines)};
  int current = 0;
  size_t n_current = read_batch(reader, batches[0], stats.bytes);
  BatchEncoding encoding;
  if (n_current > 0) encoding.start(batches[0], n_current, o, encoders, eod);
  auto last_report = start;
  while (n_current > 0) {
    const int next = 1 - current;
    const size_t n_next = read_batch(reader, batches[next], stats.bytes);
    encoding.join();
    if (n_next > 0) encoding.start(batches[next], n_next, o, encoders, eod);
    write_batch(batches[current], n_current, o, writers, stats, hooks);
    const auto now = std::chrono::steady_clock::now();
    if (hooks.progress && now - last_report > std::chrono::milliseconds(500)) {
      stats.seconds = std::chrono::duration<double>(now - start).count();
      hooks.progress(stats);
      last_report = now;
    }
    current = next;
    n_current = n_next;
  }
  for (auto& w : writers) w->finish();  // every index written before any output takes its name
  for (auto& w : writers) w->commit();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace tandem::data
