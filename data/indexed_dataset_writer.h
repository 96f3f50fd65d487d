#pragma once
// Writes Megatron's indexed dataset (megatron/core/datasets/indexed_dataset.py,
// IndexedDatasetBuilder + _IndexWriter) byte for byte:
//   PREFIX.bin  the tokens of every document, in order, little-endian in the dataset's dtype
//   PREFIX.idx  "MMIDIDX\0\0", u64 version 1, u8 dtype code, u64 sequence count S, u64 document
//               count D + 1, int32 sequence lengths [S], int64 byte offsets into .bin [S], int64
//               document indices [D + 1] (0, then the sequence count after each document; a
//               document with no tokens adds no sequence but still adds its index)
// Both are written under PREFIX.{bin,idx}.tmp and renamed by finalize(); a writer destroyed before
// finalize() removes them, so an interrupted run leaves nothing half-written.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace tandem::data {

// Megatron's DType codes for the two dtypes preprocessing chooses from.
enum class TokenDtype : uint8_t { Int32 = 4, UInt16 = 8 };

// DType.optimal_dtype: uint16 when the vocabulary has fewer than 65,500 entries, else int32.
TokenDtype optimal_dtype(int64_t vocab_size);

class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, TokenDtype dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // tokens: [sum(sequence_lengths)] ids (each must fit the dtype); sequence_lengths: one per
  // non-empty sequence of the document (preprocessing writes one, or one per sentence).
  void add_document(const std::vector<int32_t>& tokens, const std::vector<int32_t>& sequence_lengths);
  // Writes the index and renames both files into place: finish() then commit().
  void finalize() {
    finish();
    commit();
  }
  // Closes PREFIX.bin.tmp and writes PREFIX.idx.tmp (several writers: all finish, then all commit,
  // so a failure leaves none of the outputs).
  void finish();
  // Renames both files to PREFIX.bin and PREFIX.idx.
  void commit();

  const std::string& prefix() const { return prefix_; }
  int64_t documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }

 private:
  void write_bin(const void* data, size_t bytes);
  std::string prefix_;
  TokenDtype dtype_;
  std::FILE* bin_ = nullptr;
  bool finished_ = false, finalized_ = false;
  std::vector<int32_t> sequence_lengths_;
  std::vector<int64_t> document_indices_{0};
  std::vector<unsigned char> scratch_;  // one document in the dtype
};

}  // namespace tandem::data
