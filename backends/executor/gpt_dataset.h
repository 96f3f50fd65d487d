#pragma once
// Megatron-Core's GPTDataset sample order (megatron/core/datasets/gpt_dataset.py and the
// build_sample_idx helper), rebuilt from its published algorithm so that for the same .bin/.idx
// files, --split, --seq-length, --seed and sample count, sample j is the same s + 1 token ids
// that Megatron feeds.
//
// The split: --split "969,30,1" is parsed as Megatron does (every number in the string, padded
// with zeros to three, normalised by numpy.sum), turned into book-ends [0, a), [a, a+b),
// [a+b, a+b+c) (a split whose end <= begin is absent), and split k covers the sequences
// [round(begin_k * N), round(end_k * N)) of the N sequences, round() being Python's (half to
// even).
//
// The indices of one split over its D sequences (documents) with T tokens and s = --seq-length:
//   epochs E: the least E >= 1 with E * T >= num_samples * s + 1 (1 when num_samples is unset);
//   separate final epoch (E > 1): when the samples the last epoch contributes,
//     num_samples - ((E-1) T - 1) / s, are fewer than int(0.8 * ((T - 1) / s));
//   document index [E * D] int32: the split's sequence ids repeated E times and shuffled by one
//     numpy.random.RandomState(seed) (the first E-1 epochs and the last one shuffled separately
//     when the final epoch is separate);
//   sample index [(S + 1) x 2] with S = (E T - 1) / s: (position in the document index, token
//     offset) where each sample starts; sample k spans s + 1 tokens of the concatenated
//     documents, consecutive samples share one token;
//   shuffle index [S]: 0..S-1 shuffled by the same generator after the document index (with a
//     separate final epoch: [0, S') and [S', S) shuffled apart, S' = ((E-1) T - 1) / s).
// Sample j of the dataset is sample shuffle_index[j] of the sample index.
//
// Identical to Megatron-Core for its defaults: one extra token per sample
// (add_extra_token_to_sequence) and the last partial sample dropped (also for validation,
// drop_last_partial_validation_sequence). Not reproduced: the other settings of those two
// options (padding), the .npy index cache (tandem builds the indices in memory on every rank),
// and numpy's 64-bit draws for shuffles of more than 2^32 entries are written as numpy's source
// reads but untested.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/executor/data_source.h"
#include "backends/executor/indexed_dataset.h"

namespace tandem::exec {

// One split's share of the dataset as fractions [begin, end), or absent.
struct SplitBookend {
  bool present = false;
  double begin = 0, end = 0;
};
enum class MegatronSplit { Train = 0, Valid = 1, Test = 2 };

// Megatron's parse_and_normalize_split + convert_split_vector_to_split_matrix. Throws naming
// --split and the value for negative weights or a string without any.
std::array<SplitBookend, 3> parse_split(const std::string& split);

// The sequences [first, second) of `bookend` over `sequences` sequences.
std::pair<int64_t, int64_t> split_sequences(const SplitBookend& bookend, int64_t sequences);

struct GptIndices {
  int64_t epochs = 1;
  bool separate_final_epoch = false;
  std::vector<int32_t> document_index;   // [epochs * documents] sequence ids
  std::vector<int64_t> sample_index;     // [(samples + 1) * 2] (document index position, token offset)
  std::vector<int64_t> shuffle_index;    // [samples] sample ids
  int64_t samples() const { return static_cast<int64_t>(shuffle_index.size()); }
};

// The three indices of the sequences [begin, end) of a dataset whose sequence lengths (tokens)
// are `lengths`. num_samples < 0 means unset (one epoch). seed in [0, 2^32).
GptIndices build_gpt_indices(const std::vector<int32_t>& lengths, int64_t begin, int64_t end, int64_t seq_length,
                             int64_t num_samples, uint32_t seed);

// One split of one indexed dataset in Megatron's order.
class GptDataset final : public DataSource {
 public:
  // `what` names the split in messages ("training", "validation").
  GptDataset(std::shared_ptr<const IndexedDataset> data, int64_t begin, int64_t end, int64_t seq_length,
             int64_t num_samples, uint32_t seed, const std::string& what);
  int64_t size() const { return indices_.samples(); }
  const GptIndices& indices() const { return indices_; }
  std::vector<int32_t> sample(int64_t index) override;   // [s + 1] token ids

 private:
  std::shared_ptr<const IndexedDataset> data_;
  int64_t s_;
  std::string what_;
  GptIndices indices_;
};

}  // namespace tandem::exec
