// Megatron indexed-dataset writer (indexed_dataset_writer.h).
#include "data/indexed_dataset_writer.h"

#include <cerrno>
#include <cstring>
#include <limits>

#include "core/check.h"

namespace tandem::data {

TokenDtype optimal_dtype(int64_t vocab_size) { return vocab_size < 65500 ? TokenDtype::UInt16 : TokenDtype::Int32; }

namespace {

std::string io_error(const std::string& path, const char* what) {
  return "--output-prefix: cannot " + std::string(what) + " " + path + ": " + std::strerror(errno);
}

void write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes > 0 && std::fwrite(data, 1, bytes, f) != bytes) throw UserError(io_error(path, "write"));
}

template <typename T>
void append(std::vector<unsigned char>& out, const T& v) {
  const auto* p = reinterpret_cast<const unsigned char*>(&v);
  out.insert(out.end(), p, p + sizeof(T));  // little-endian hosts only (x86-64, aarch64)
}

}  // namespace

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDtype dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  const std::string tmp = prefix_ + ".bin.tmp";
  bin_ = std::fopen(tmp.c_str(), "wb");
  if (bin_ == nullptr) throw UserError(io_error(tmp, "create"));
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (bin_ != nullptr) std::fclose(bin_);
  if (!finalized_) {
    std::remove((prefix_ + ".bin.tmp").c_str());
    std::remove((prefix_ + ".idx.tmp").c_str());
  }
}

void IndexedDatasetWriter::write_bin(const void* data, size_t bytes) {
  write_all(bin_, data, bytes, prefix_ + ".bin.tmp");
}

void IndexedDatasetWriter::add_document(const std::vector<int32_t>& tokens,
                                        const std::vector<int32_t>& sequence_lengths) {
  TANDEM_CHECK(!finished_);
  int64_t total = 0;
  for (int32_t n : sequence_lengths) total += n;
  TANDEM_CHECK_MSG(total == static_cast<int64_t>(tokens.size()),
                   "sequence lengths add to " << total << ", document has " << tokens.size() << " tokens");
  scratch_.clear();
  if (dtype_ == TokenDtype::UInt16) {
    for (int32_t t : tokens) {
      if (t < 0 || t > std::numeric_limits<uint16_t>::max())   // a tokenizer file with ids past its size
        throw UserError("token id " + std::to_string(t) + " does not fit uint16, the dtype Megatron's rule picks "
                        "for this tokenizer's vocabulary size (fewer than 65,500 entries)");
      append(scratch_, static_cast<uint16_t>(t));
    }
  } else {
    for (int32_t t : tokens) append(scratch_, t);
  }
  write_bin(scratch_.data(), scratch_.size());
  sequence_lengths_.insert(sequence_lengths_.end(), sequence_lengths.begin(), sequence_lengths.end());
  document_indices_.push_back(static_cast<int64_t>(sequence_lengths_.size()));
}

void IndexedDatasetWriter::finish() {
  TANDEM_CHECK(!finished_);
  const std::string bin_tmp = prefix_ + ".bin.tmp", idx_tmp = prefix_ + ".idx.tmp";
  if (std::fclose(bin_) != 0) {
    bin_ = nullptr;
    throw UserError(io_error(bin_tmp, "write"));
  }
  bin_ = nullptr;
  const int64_t item = dtype_ == TokenDtype::UInt16 ? 2 : 4;
  std::vector<unsigned char> idx;
  const char magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
  idx.insert(idx.end(), magic, magic + 9);
  append(idx, uint64_t{1});
  append(idx, static_cast<uint8_t>(dtype_));
  append(idx, static_cast<uint64_t>(sequence_lengths_.size()));
  append(idx, static_cast<uint64_t>(document_indices_.size()));
  for (int32_t n : sequence_lengths_) append(idx, n);
  int64_t pointer = 0;  // bytes into .bin
  for (int32_t n : sequence_lengths_) {
    append(idx, pointer);
    pointer += int64_t{n} * item;
  }
  for (int64_t d : document_indices_) append(idx, d);
  std::FILE* f = std::fopen(idx_tmp.c_str(), "wb");
  if (f == nullptr) throw UserError(io_error(idx_tmp, "create"));
  const bool ok = std::fwrite(idx.data(), 1, idx.size(), f) == idx.size();
  if (std::fclose(f) != 0 || !ok) throw UserError(io_error(idx_tmp, "write"));
  finished_ = true;
}

void IndexedDatasetWriter::commit() {
  TANDEM_CHECK(finished_ && !finalized_);
  const std::string bin_tmp = prefix_ + ".bin.tmp", idx_tmp = prefix_ + ".idx.tmp";
  if (std::rename(bin_tmp.c_str(), (prefix_ + ".bin").c_str()) != 0)
    throw UserError(io_error(prefix_ + ".bin", "rename to"));
  if (std::rename(idx_tmp.c_str(), (prefix_ + ".idx").c_str()) != 0)
    throw UserError(io_error(prefix_ + ".idx", "rename to"));
  finalized_ = true;
}

}  // namespace tandem::data
