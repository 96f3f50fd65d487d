// Megatron-Core's dataset blending and the --data-path entry point (blended_dataset.h).
#include "backends/executor/blended_dataset.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "backends/executor/gpt_dataset.h"
#include "backends/executor/numpy_compat.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

// Python's float() of a whole word, or false.
bool parse_number(const std::string& word, double& value) {
  char* stop = nullptr;
  value = std::strtod(word.c_str(), &stop);
  return !word.empty() && stop == word.c_str() + word.size();
}

// Blend of several GPTDatasets in Megatron's blending order.
class BlendedDataset final : public DataSource {
 public:
  BlendedDataset(std::vector<std::unique_ptr<GptDataset>> datasets, std::vector<std::string> prefixes,
                 const std::vector<double>& weights, int64_t size, std::string what)
      : datasets_(std::move(datasets)), prefixes_(std::move(prefixes)), what_(std::move(what)) {
    build_blending_indices(weights, size, dataset_index_, dataset_sample_index_);
  }

  std::vector<int32_t> sample(int64_t index) override {
    if (index < 0 || index >= static_cast<int64_t>(dataset_index_.size()))
      throw UserError("--data-path: " + what_ + " sample " + std::to_string(index) + " requested but the blend of the " +
                      what_ + " split holds " + std::to_string(dataset_index_.size()) + " samples");
    const size_t d = static_cast<size_t>(dataset_index_[static_cast<size_t>(index)]);
    const int64_t k = dataset_sample_index_[static_cast<size_t>(index)];
    if (k >= datasets_[d]->size())
      throw UserError("--data-path " + prefixes_[d] + ": the blend asks for its " + what_ + " sample " +
                      std::to_string(k) + " but it was built with " + std::to_string(datasets_[d]->size()) +
                      " (Megatron's 0.5% surplus exceeded)");
    return datasets_[d]->sample(k);
  }

 private:
  std::vector<std::unique_ptr<GptDataset>> datasets_;
  std::vector<std::string> prefixes_;
  std::string what_;
  std::vector<int16_t> dataset_index_;          // [size] dataset of blend sample k
  std::vector<int64_t> dataset_sample_index_;   // [size] its sample number in that dataset
};

uint32_t numpy_seed(int64_t seed) {
  if (seed < 0 || seed > int64_t{0xffffffff})
    throw_field_error("--seed", seed, "must lie in [0, 2^32 - 1] (numpy.random.RandomState's range, as in Megatron)");
  return static_cast<uint32_t>(seed);
}

// The GPTDataset of split `k` of dataset `prefix` with `num_samples` samples (< 0: one epoch).
std::unique_ptr<GptDataset> open_split(const std::string& prefix, const Job& job, const SplitBookend& bookend,
                                       int64_t num_samples, const std::string& what) {
  auto data = std::make_shared<const IndexedDataset>(prefix, job.model.vocab_size);
  const auto [begin, end] = split_sequences(bookend, data->sequence_count());
  return std::make_unique<GptDataset>(std::move(data), begin, end, job.model.seq_length, num_samples,
                                      numpy_seed(job.training.seed), what);
}

}  // namespace

DataBlend parse_data_path(const std::string& data_path) {
  std::vector<std::string> words;
  std::istringstream in(data_path);
  for (std::string w; in >> w;) words.push_back(w);
  if (words.empty()) throw_field_error("--data-path", data_path, "names no dataset");
  DataBlend blend;
  std::vector<double> numbers;
  size_t parsed = 0;
  if (words.size() % 2 == 0) {
    for (size_t i = 0; i < words.size(); i += 2) {
      double v = 0;
      if (parse_number(words[i], v)) ++parsed;
      numbers.push_back(v);
    }
  }
  if (parsed == 0) {
    blend.prefixes = words;
    return blend;
  }
  if (parsed != words.size() / 2)
    throw_field_error("--data-path", data_path, "mixes weights and paths: write W1 P1 W2 P2 ... or P1 P2 ...");
  for (size_t i = 1; i < words.size(); i += 2) blend.prefixes.push_back(words[i]);
  for (double w : numbers)
    if (!(w >= 0) || !std::isfinite(w)) throw_field_error("--data-path", data_path, "blend weights must be >= 0");
  if (numpy_sum(numbers) <= 0) throw_field_error("--data-path", data_path, "blend weights sum to zero");
  blend.weights = numbers;
  return blend;
}

std::vector<int64_t> blend_dataset_sizes(const std::vector<double>& normalized_weights, int64_t target,
                                         double surplus) {
  std::vector<int64_t> out;
  for (double w : normalized_weights) {
    const double share = std::ceil(static_cast<double>(target) * w);
    out.push_back(static_cast<int64_t>(std::ceil(share * (1.0 + surplus))));
  }
  return out;
}

void build_blending_indices(const std::vector<double>& weights, int64_t size, std::vector<int16_t>& dataset_index,
                            std::vector<int64_t>& dataset_sample_index) {
  TANDEM_CHECK(!weights.empty() && weights.size() < 32767);
  std::vector<int64_t> taken(weights.size(), 0);
  dataset_index.assign(static_cast<size_t>(size), 0);
  dataset_sample_index.assign(static_cast<size_t>(size), 0);
  for (int64_t k = 0; k < size; ++k) {
    const double at = std::max(static_cast<double>(k), 1.0);
    size_t best = 0;
    double best_error = weights[0] * at - static_cast<double>(taken[0]);
    for (size_t i = 1; i < weights.size(); ++i) {
      const double error = weights[i] * at - static_cast<double>(taken[i]);
      if (error > best_error) {
        best_error = error;
        best = i;
      }
    }
    dataset_index[static_cast<size_t>(k)] = static_cast<int16_t>(best);
    dataset_sample_index[static_cast<size_t>(k)] = taken[best]++;
  }
}

SampleCounts megatron_sample_counts(const TrainingConfig& t, int64_t iterations, int64_t global_batch) {
  SampleCounts c;
  c.train = t.train_samples > 0 ? t.train_samples : t.train_iters * global_batch;
  c.train = std::max(c.train, iterations * global_batch);
  c.valid = (t.train_iters / std::max<int64_t>(1, t.eval_interval) + 1) * t.eval_iters * global_batch;
  c.test = t.eval_iters * global_batch;
  return c;
}

bool split_has_share(const std::string& split, DataSplit which) {
  return parse_split(split)[which == DataSplit::Train ? 0 : 1].present;
}

std::unique_ptr<DataSource> open_megatron_data(const Job& job, DataSplit which, const SampleCounts& counts) {
  const auto& t = job.training;
  const DataBlend blend = parse_data_path(t.data_path);
  const size_t k = which == DataSplit::Train ? 0 : 1;
  const std::string what = which == DataSplit::Train ? "training" : "validation";
  const SplitBookend bookend = parse_split(t.split)[k];
  if (!bookend.present) throw_field_error("--split", t.split, "gives the " + what + " split no share");
  const int64_t target = which == DataSplit::Train ? counts.train : counts.valid;
  if (blend.prefixes.size() == 1 && blend.weights.empty())
    return open_split(blend.prefixes[0], job, bookend, target, what);
  std::vector<std::unique_ptr<GptDataset>> datasets;
  std::vector<double> weights;
  int64_t size = 0;
  if (!blend.weights.empty()) {
    weights = numpy_normalize(blend.weights);
    const std::vector<int64_t> targets = blend_dataset_sizes(weights, target, 0.0);
    const std::vector<int64_t> built = blend_dataset_sizes(weights, target, 0.005);
    for (size_t i = 0; i < blend.prefixes.size(); ++i) {
      datasets.push_back(open_split(blend.prefixes[i], job, bookend, built[i], what));
      size += targets[i];
    }
    weights = numpy_normalize(weights);   // Megatron normalises the blend weights twice
  } else {
    int64_t total = 0;
    for (const auto& prefix : blend.prefixes) {
      datasets.push_back(open_split(prefix, job, bookend, -1, what));
      weights.push_back(static_cast<double>(datasets.back()->size()));
      total += datasets.back()->size();
    }
    weights = numpy_normalize(weights);
    size = std::min(target, total);
  }
  return std::make_unique<BlendedDataset>(std::move(datasets), blend.prefixes, weights, size, what);
}

}  // namespace tandem::exec
