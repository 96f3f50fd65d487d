// Prints what tandem's Megatron-compatible data path produces, for gpt_sample_order_test.py to
// compare with its numpy reference of Megatron's algorithm.
//
//   gpt_dataset_driver samples N train|valid -- MEGATRON_FLAGS...
//       the first N samples of the split, one line each (s + 1 token ids), in the order
//       `tandem train` consumes them (global sample index 0, 1, ...): the trainer's
//       open_megatron_data() with the job's sample counts, cut into microbatches by rank_batch();
//   gpt_dataset_driver raw SEED COUNT        numpy.random.RandomState(SEED) 32-bit outputs;
//   gpt_dataset_driver shuffle SEED N        RandomState(SEED).shuffle(arange(N)), one line.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "backends/executor/blended_dataset.h"
#include "backends/executor/data_source.h"
#include "backends/executor/numpy_compat.h"
#include "core/check.h"
#include "core/job_loader.h"
#include "core/parallel_grid.h"

namespace {

using namespace tandem;
using namespace tandem::exec;

// The first `count` samples as `tandem train` consumes them on one rank: rank_batch() of
// iteration 0, 1, ... over the data source the trainer opens, each sample rebuilt from its
// microbatch rows (s input tokens, then the last label).
int print_samples(int64_t count, const std::string& split, const std::vector<std::string>& flags) {
  JobRequest request;
  request.megatron_flags = flags;
  request.gpus = 1;
  const Job job = load_job(request);
  const auto& t = job.training;
  const ParallelGrid grid = ParallelGrid::from_job(job);
  const SampleCounts counts = megatron_sample_counts(t, t.train_iters, t.global_batch_size);
  auto source = open_megatron_data(job, split == "valid" ? DataSplit::Valid : DataSplit::Train, counts);
  const int64_t s = job.model.seq_length;
  std::map<int64_t, std::vector<int32_t>> samples;   // global sample index -> [s + 1] ids
  for (int64_t it = 0; static_cast<int64_t>(samples.size()) < count; ++it) {
    for (const MicrobatchData& mb : rank_batch(*source, job, grid, 0, it)) {
      const size_t b = mb.samples.size();
      for (size_t j = 0; j < b; ++j) {
        std::vector<int32_t>& ids = samples[mb.samples[j]];
        for (int64_t i = 0; i < s; ++i) ids.push_back(mb.tokens[static_cast<size_t>(i) * b + j]);
        ids.push_back(mb.labels[static_cast<size_t>(s - 1) * b + j]);
      }
    }
  }
  for (const auto& [index, ids] : samples) {
    if (index >= count) break;
    for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
  }
  return 0;
}

int run(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "samples" && argc > 4 && std::string(argv[4]) == "--")
    return print_samples(std::atoll(argv[2]), argv[3], std::vector<std::string>(argv + 5, argv + argc));
  if (mode == "raw" && argc == 4) {
    NumpyRandomState rng(static_cast<uint32_t>(std::strtoull(argv[2], nullptr, 10)));
    for (long long k = std::atoll(argv[3]); k > 0; --k) std::printf("%u\n", rng.next_uint32());
    return 0;
  }
  if (mode == "shuffle" && argc == 4) {
    NumpyRandomState rng(static_cast<uint32_t>(std::strtoull(argv[2], nullptr, 10)));
    std::vector<int64_t> x(static_cast<size_t>(std::atoll(argv[3])));
    std::iota(x.begin(), x.end(), int64_t{0});
    rng.shuffle(x);
    for (size_t i = 0; i < x.size(); ++i) std::printf(i ? " %lld" : "%lld", static_cast<long long>(x[i]));
    std::printf("\n");
    return 0;
  }
  std::fprintf(stderr, "usage: gpt_dataset_driver samples N train|valid -- FLAGS | raw SEED COUNT | shuffle SEED N\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
