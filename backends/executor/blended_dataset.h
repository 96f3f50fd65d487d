#pragma once
// Megatron-Core's dataset blending (blended_megatron_dataset_builder.py, blended_dataset.py and
// the build_blending_indices helper) and the entry point that turns a job's --data-path,
// --split, --seed, --seq-length and sample counts into a DataSource in Megatron's order.
//
// --data-path forms (Megatron's get_blend_from_list):
//   "P"                 one dataset: its GPTDataset split is the data source;
//   "W1 P1 W2 P2 ..."   a weighted blend (every other word a number);
//   "P1 P2 ..."         a blend weighted by the datasets' sizes (one epoch of each).
// Weighted blend of a split with target size N (weights normalised by numpy.sum):
//   per dataset i: target_i = ceil(N w_i); the GPTDataset of dataset i for that split is built
//   with ceil(target_i * (1 + 0.005)) samples (Megatron's mid-level surplus);
//   blend size = sum_i target_i; blend sample k comes from dataset d_k, its sample c_{d_k}(k),
//   where d_k = argmax_i (w_i max(k, 1) - c_i(k)) (first maximum), c_i(k) = samples taken from
//   dataset i before k. The weights fed to this rule are normalised once more (twice in all),
//   as Megatron does.
// Size-weighted blend: every dataset built with one epoch, weights = their sample counts
// (normalised once), size = min(N, sum of the counts).
//
// Sample counts per split (Megatron's get_train_valid_test_num_samples):
//   train = --train-samples, or --train-iters x global batch;
//   valid = (train_iters / eval_interval + 1) x eval_iters x global batch;
//   test  = eval_iters x global batch.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/executor/data_source.h"
#include "core/job.h"

namespace tandem::exec {

struct DataBlend {
  std::vector<std::string> prefixes;
  std::vector<double> weights;   // as written; empty: no weights given
};
// Throws naming --data-path and the value (empty, mixed weights and paths, negative weights).
DataBlend parse_data_path(const std::string& data_path);

// Samples to request from each dataset for a split of `target` samples: ceil(ceil(target w_i)
// (1 + surplus)); surplus 0 gives the per-dataset targets.
std::vector<int64_t> blend_dataset_sizes(const std::vector<double>& normalized_weights, int64_t target,
                                         double surplus);

// Megatron's build_blending_indices: for k in [0, size), the dataset and its sample number.
void build_blending_indices(const std::vector<double>& weights, int64_t size, std::vector<int16_t>& dataset_index,
                            std::vector<int64_t>& dataset_sample_index);

struct SampleCounts {
  int64_t train = 0, valid = 0, test = 0;   // samples (sequences of s + 1 tokens)
};
// `iterations`: training iterations the run performs (at least train_iters x batch are built).
SampleCounts megatron_sample_counts(const TrainingConfig& training, int64_t iterations, int64_t global_batch);

// Whether --split gives `which` split a share (Megatron builds no dataset for a split without
// one, and skips evaluation when it is the validation split).
bool split_has_share(const std::string& split, DataSplit which);

// The job's --data-path data in Megatron's order for `which` split (throws naming --split when
// the split has no share).
std::unique_ptr<DataSource> open_megatron_data(const Job& job, DataSplit which, const SampleCounts& counts);

}  // namespace tandem::exec
