// Mock data and per-rank batches (data_source.h).
#include "backends/executor/data_source.h"

#include "backends/executor/init_rng.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

class MockData final : public DataSource {
 public:
  MockData(int64_t seed, int64_t s, int64_t vocab, DataSplit split)
      : seed_(seed), s_(s), vocab_(vocab), stream_(split == DataSplit::Train ? "mock-data" : "mock-data-valid") {}
  std::vector<int32_t> sample(int64_t index) override {
    uint64_t state = stream_seed(seed_, stream_) ^ static_cast<uint64_t>(index);
    const int64_t start = static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(vocab_));
    const int64_t stride = 1 + static_cast<int64_t>(splitmix64(state) % 7);
    std::vector<int32_t> out(static_cast<size_t>(s_ + 1));
    for (int64_t p = 0; p <= s_; ++p) out[static_cast<size_t>(p)] = static_cast<int32_t>((start + p * stride) % vocab_);
    return out;
  }

 private:
  int64_t seed_, s_, vocab_;
  const char* stream_;
};

}  // namespace

std::unique_ptr<DataSource> make_mock_data(int64_t seed, int64_t seq_length, int64_t vocab_size, DataSplit split) {
  if (vocab_size <= 0) throw_field_error("vocab_size", vocab_size, "must be positive for --mock-data");
  return std::make_unique<MockData>(seed, seq_length, vocab_size, split);
}

std::vector<int32_t> context_parallel_positions(int64_t cp_rank, int64_t cp, int64_t s) {
  std::vector<int32_t> pos;
  if (cp == 1) {
    for (int64_t p = 0; p < s; ++p) pos.push_back(static_cast<int32_t>(p));
    return pos;
  }
  const int64_t c = s / (2 * cp);
  for (int64_t chunk : {cp_rank, 2 * cp - 1 - cp_rank})
    for (int64_t i = 0; i < c; ++i) pos.push_back(static_cast<int32_t>(chunk * c + i));
  return pos;
}

std::vector<MicrobatchData> rank_batch(DataSource& source, const Job& job, const ParallelGrid& grid, int64_t rank,
                                       int64_t iteration) {
  const DenseCoord dc = grid.dense_coord(rank);
  const int64_t b = std::max<int64_t>(1, job.training.micro_batch_size), dp = grid.dp_size();
  const int64_t mbs = std::max<int64_t>(1, job.training.num_microbatches), s = job.model.seq_length;
  const int64_t global = mbs * b * dp;
  const std::vector<int32_t> positions = context_parallel_positions(dc.cp, grid.cp_size(), s);
  const int64_t s_local = static_cast<int64_t>(positions.size());
  std::vector<MicrobatchData> out(static_cast<size_t>(mbs));
  for (int64_t m = 0; m < mbs; ++m) {
    MicrobatchData& d = out[static_cast<size_t>(m)];
    d.positions = positions;
    for (int64_t j = 0; j < b; ++j) d.samples.push_back(iteration * global + m * b * dp + dc.dp * b + j);
    d.tokens.assign(static_cast<size_t>(s_local * b), 0);
    d.labels.assign(static_cast<size_t>(s_local * b), 0);
    for (int64_t j = 0; j < b; ++j) {
      const std::vector<int32_t> smp = source.sample(iteration * global + m * b * dp + dc.dp * b + j);
      TANDEM_CHECK(static_cast<int64_t>(smp.size()) == s + 1);
      for (int64_t i = 0; i < s_local; ++i) {
        const size_t row = static_cast<size_t>(i * b + j), p = static_cast<size_t>(positions[static_cast<size_t>(i)]);
        d.tokens[row] = smp[p];
        d.labels[row] = smp[p + 1];
      }
    }
  }
  return out;
}

}  // namespace tandem::exec
