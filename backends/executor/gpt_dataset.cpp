// Megatron-Core's GPTDataset sample order (gpt_dataset.h).
#include "backends/executor/gpt_dataset.h"

#include <cmath>
#include <numeric>

#include "backends/executor/numpy_compat.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

// Every run of [.0-9] in `split`, as Python's float() reads it.
std::vector<double> split_numbers(const std::string& split) {
  std::vector<double> out;
  for (size_t i = 0; i < split.size();) {
    if (split[i] != '.' && (split[i] < '0' || split[i] > '9')) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < split.size() && (split[j] == '.' || (split[j] >= '0' && split[j] <= '9'))) ++j;
    const std::string token = split.substr(i, j - i);
    char* stop = nullptr;
    const double v = std::strtod(token.c_str(), &stop);
    if (stop != token.c_str() + token.size() || token == ".")
      throw_field_error("--split", split, "'" + token + "' is not a number");
    out.push_back(v);
    i = j;
  }
  return out;
}

// Epochs E: the least E >= 1 whose tokens cover num_samples * s + 1 (Megatron's _get_num_epochs).
int64_t num_epochs(int64_t tokens_per_epoch, int64_t num_samples, int64_t s) {
  if (num_samples < 0) return 1;
  const int64_t requested = num_samples * s + 1;
  int64_t epochs = 1, tokens = tokens_per_epoch;
  while (tokens < requested) {
    ++epochs;
    tokens += tokens_per_epoch;
  }
  return epochs;
}

// The split's sequence ids repeated `epochs` times, shuffled (Megatron's _build_document_index).
std::vector<int32_t> document_index(int64_t begin, int64_t end, int64_t epochs, NumpyRandomState& rng,
                                    bool separate_final_epoch) {
  if (!separate_final_epoch || epochs == 1) {
    std::vector<int32_t> out;
    out.reserve(static_cast<size_t>(epochs * (end - begin)));
    for (int64_t e = 0; e < epochs; ++e)
      for (int64_t q = begin; q < end; ++q) out.push_back(static_cast<int32_t>(q));
    rng.shuffle(out);
    return out;
  }
  std::vector<int32_t> out = document_index(begin, end, epochs - 1, rng, false);
  const std::vector<int32_t> last = document_index(begin, end, 1, rng, false);
  out.insert(out.end(), last.begin(), last.end());
  return out;
}

// Where every sample starts: [(S + 1) * 2] (document index position, token offset), each
// sample s + 1 tokens of the concatenated documents (Megatron's build_sample_idx, dropping the
// last partial sample).
std::vector<int64_t> sample_index(const std::vector<int32_t>& lengths, const std::vector<int32_t>& documents,
                                  int64_t s, int64_t epochs, int64_t tokens_per_epoch) {
  const int64_t samples = (epochs * tokens_per_epoch - 1) / s;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(2 * (samples + 1)));
  int64_t position = 0, offset = 0;
  out.push_back(position);
  out.push_back(offset);
  const int64_t last = static_cast<int64_t>(documents.size()) - 1;
  for (int64_t k = 1; k <= samples; ++k) {
    int64_t remaining = s + 1;
    while (remaining != 0) {
      const int64_t length = lengths[static_cast<size_t>(documents[static_cast<size_t>(position)])] - offset;
      remaining -= length;
      if (remaining <= 0) {
        offset += remaining + length - 1;
        remaining = 0;
      } else if (position == last) {   // out of documents: only the last sample can get here
        TANDEM_CHECK(k == samples);
        offset = lengths[static_cast<size_t>(documents[static_cast<size_t>(position)])] - 1;
        break;
      } else {
        ++position;
        offset = 0;
      }
    }
    out.push_back(position);
    out.push_back(offset);
  }
  return out;
}

// [0, first) shuffled, then [first, total) shuffled (Megatron's _build_shuffle_index).
std::vector<int64_t> shuffle_index(int64_t first, int64_t total, NumpyRandomState& rng) {
  std::vector<int64_t> head(static_cast<size_t>(first));
  std::iota(head.begin(), head.end(), int64_t{0});
  rng.shuffle(head);
  if (first == total) return head;
  std::vector<int64_t> tail(static_cast<size_t>(total - first));
  std::iota(tail.begin(), tail.end(), first);
  rng.shuffle(tail);
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

}  // namespace

std::array<SplitBookend, 3> parse_split(const std::string& split) {
  std::vector<double> w = split_numbers(split);
  if (w.empty() || w.size() > 3)
    throw_field_error("--split", split, "expects one to three comma-separated weights such as 969,30,1");
  w.resize(3, 0.0);
  if (numpy_sum(w) <= 0) throw_field_error("--split", split, "weights sum to zero");
  const std::vector<double> v = numpy_normalize(w);
  const double bounds[4] = {0.0, v[0], v[0] + v[1], v[0] + v[1] + v[2]};
  std::array<SplitBookend, 3> out;
  for (size_t k = 0; k < 3; ++k)
    out[k] = {bounds[k + 1] > bounds[k], bounds[k], bounds[k + 1]};
  return out;
}

std::pair<int64_t, int64_t> split_sequences(const SplitBookend& bookend, int64_t sequences) {
  TANDEM_CHECK(bookend.present);
  // Python's round(): nearest, ties to even (nearbyint under the default rounding mode).
  const auto at = [&](double f) { return static_cast<int64_t>(std::nearbyint(f * static_cast<double>(sequences))); };
  return {at(bookend.begin), at(bookend.end)};
}

GptIndices build_gpt_indices(const std::vector<int32_t>& lengths, int64_t begin, int64_t end, int64_t s,
                             int64_t num_samples, uint32_t seed) {
  TANDEM_CHECK(0 <= begin && begin < end && end <= static_cast<int64_t>(lengths.size()) && s > 1);
  int64_t tokens = 0;   // tokens per epoch
  for (int64_t q = begin; q < end; ++q) tokens += lengths[static_cast<size_t>(q)];
  GptIndices ix;
  ix.epochs = num_epochs(tokens, num_samples, s);
  int64_t samples_before_final = 0;
  if (ix.epochs > 1) {
    samples_before_final = ((ix.epochs - 1) * tokens - 1) / s;
    const int64_t from_final = num_samples - samples_before_final, per_epoch = (tokens - 1) / s;
    TANDEM_CHECK(from_final >= 0 && from_final <= per_epoch + 1);
    ix.separate_final_epoch = from_final < static_cast<int64_t>(0.80 * static_cast<double>(per_epoch));
  }
  NumpyRandomState rng(seed);
  ix.document_index = document_index(begin, end, ix.epochs, rng, ix.separate_final_epoch);
  ix.sample_index = sample_index(lengths, ix.document_index, s, ix.epochs, tokens);
  const int64_t samples = static_cast<int64_t>(ix.sample_index.size()) / 2 - 1;
  ix.shuffle_index = shuffle_index(ix.separate_final_epoch ? samples_before_final : samples, samples, rng);
  return ix;
}

GptDataset::GptDataset(std::shared_ptr<const IndexedDataset> data, int64_t begin, int64_t end, int64_t seq_length,
                       int64_t num_samples, uint32_t seed, const std::string& what)
    : data_(std::move(data)), s_(seq_length), what_(what) {
  int64_t tokens = 0;
  for (int64_t q = begin; q < end; ++q) tokens += data_->sequence_lengths()[static_cast<size_t>(q)];
  if (end <= begin || tokens < s_ + 1)
    throw UserError("--data-path " + data_->prefix() + ": the " + what + " split holds sequences [" +
                    std::to_string(begin) + ", " + std::to_string(end) + ") with " + std::to_string(tokens) +
                    " tokens, fewer than one sample of " + std::to_string(s_ + 1) + " (see --split)");
  indices_ = build_gpt_indices(data_->sequence_lengths(), begin, end, s_, num_samples, seed);
}

std::vector<int32_t> GptDataset::sample(int64_t index) {
  if (index < 0 || index >= size())
    throw UserError("--data-path " + data_->prefix() + ": " + what_ + " sample " + std::to_string(index) +
                    " requested but the " + what_ + " split was built with " + std::to_string(size()) +
                    " samples (more iterations than --train-iters / --eval-iters planned?)");
  const size_t k = static_cast<size_t>(indices_.shuffle_index[static_cast<size_t>(index)]);
  const std::vector<int64_t>& si = indices_.sample_index;
  const int64_t first = si[2 * k], first_offset = si[2 * k + 1], last = si[2 * k + 2], last_offset = si[2 * k + 3];
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(s_ + 1));
  for (int64_t p = first; p <= last; ++p) {
    const int64_t q = indices_.document_index[static_cast<size_t>(p)];
    const int64_t from = p == first ? first_offset : 0;
    const int64_t to = p == last ? last_offset + 1 : data_->sequence_lengths()[static_cast<size_t>(q)];
    data_->read(q, from, to - from, out);
  }
  TANDEM_CHECK(static_cast<int64_t>(out.size()) == s_ + 1);
  return out;
}

}  // namespace tandem::exec
