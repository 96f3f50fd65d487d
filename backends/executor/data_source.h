#pragma once
// Where training samples come from, and how one iteration's global batch is cut into this
// rank's microbatches.
//
// A sample is s + 1 token ids (inputs and the next-token labels). Global sample index of
// iteration i (0-based), microbatch m, DP replica d, element j of the micro-batch b:
//     i * G + m * (b * DP) + d * b + j,     G = global batch = M * b * DP
// (Megatron's MegatronPretrainingSampler order). With context parallelism the rank keeps
// sequence chunks r and 2CP-1-r (causal load balancing).
#include <cstdint>
#include <memory>
#include <vector>

#include "backends/executor/model_runner.h"
#include "core/job.h"
#include "core/parallel_grid.h"

namespace tandem::exec {

enum class DataSplit { Train, Valid };

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual std::vector<int32_t> sample(int64_t index) = 0;   // [s + 1] ids < vocab
};

// --mock-data: a deterministic synthetic stream from --seed. Sample k is an arithmetic
// progression modulo the vocabulary with start and stride drawn from (seed, k): learnable,
// reproducible, the same on every layout.
// The validation split is another stream of the same kind.
std::unique_ptr<DataSource> make_mock_data(int64_t seed, int64_t seq_length, int64_t vocab_size,
                                           DataSplit split = DataSplit::Train);

// Global positions of CP rank r's rows: chunks r and 2CP-1-r of s / (2 CP) positions each.
std::vector<int32_t> context_parallel_positions(int64_t cp_rank, int64_t cp, int64_t seq_length);

// This rank's microbatches of iteration `iteration` (0-based).
std::vector<MicrobatchData> rank_batch(DataSource& source, const Job& job, const ParallelGrid& grid, int64_t rank,
                                       int64_t iteration);

}  // namespace tandem::exec
