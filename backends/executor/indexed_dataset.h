#pragma once
// Megatron's indexed dataset (megatron/core/datasets/indexed_dataset.py) as a DataSource.
//
// PREFIX.idx: "MMIDIDX\0\0", version u64 = 1, dtype code u8 (1 uint8, 2 int8, 3 int16, 4 int32,
// 5 int64, 6 float64, 7 float32, 8 uint16), sequence count u64, document count u64, then
// int32 sequence lengths [sequences], int64 byte offsets into PREFIX.bin [sequences], int64
// document indices [documents] (sequence index where each document starts, plus the end).
// PREFIX.bin: the tokens, read through mmap.
//
// Samples (documented here, simpler than Megatron's GPTDataset index builder): the documents
// are split into train / valid / test by --split weights ("969,30,1"), contiguously in document
// order as Megatron does; the train documents are concatenated in a seeded shuffled order (a new
// order per epoch) and sample k of an epoch is the (s + 1)-token window starting at k * s of
// that stream (consecutive samples share one token, as Megatron's). The samples of an epoch are
// visited in a seeded shuffled order.
//
// Every check names the file and the offset: wrong magic or version, unknown dtype code, an
// index that points past the end of PREFIX.bin, a token id outside [0, vocabulary size).
#include <cstdint>
#include <memory>
#include <string>

#include "backends/executor/data_source.h"

namespace tandem::exec {

// `which`: the train or the validation documents of --split.
std::unique_ptr<DataSource> open_indexed_dataset(const std::string& prefix, int64_t seq_length, int64_t vocab_size,
                                                 const std::string& split, int64_t seed,
                                                 DataSplit which = DataSplit::Train);

}  // namespace tandem::exec
