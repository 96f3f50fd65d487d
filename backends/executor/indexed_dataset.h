#pragma once
// Megatron's indexed dataset (megatron/core/datasets/indexed_dataset.py): the token store that
// the GPT dataset (gpt_dataset.h) draws its samples from.
//
// PREFIX.idx: "MMIDIDX\0\0", version u64 = 1, dtype code u8 (1 uint8, 2 int8, 3 int16, 4 int32,
// 5 int64, 6 float64, 7 float32, 8 uint16), sequence count u64, document count u64, then
// int32 sequence lengths [sequences], int64 byte offsets into PREFIX.bin [sequences], int64
// document indices [documents] (sequence index where each document starts, plus the end).
// PREFIX.bin: the tokens, read through mmap.
//
// As in Megatron's GPTDataset, the unit that --split divides and the document index shuffles is
// the sequence (one per document for data written by preprocess_data.py without sentence
// splitting); the document indices are read and checked but not otherwise used.
//
// Every check names the file and the offset: wrong magic or version, unknown dtype code, an
// index that points past the end of PREFIX.bin, a token id outside [0, vocabulary size).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tandem::exec {

class IndexedDataset {
 public:
  IndexedDataset(const std::string& prefix, int64_t vocab_size);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  const std::vector<int32_t>& sequence_lengths() const;   // [sequences] tokens each
  int64_t sequence_count() const { return static_cast<int64_t>(sequence_lengths().size()); }
  // Appends tokens [offset, offset + length) of `sequence` to `out` (ids checked < vocabulary).
  void read(int64_t sequence, int64_t offset, int64_t length, std::vector<int32_t>& out) const;

 private:
  int32_t token(int64_t sequence, int64_t t) const;
  struct State;
  std::string prefix_, bin_path_;
  int64_t vocab_;
  std::unique_ptr<State> state_;
};

}  // namespace tandem::exec
