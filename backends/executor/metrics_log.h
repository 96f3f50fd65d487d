#pragma once
// Metrics JSONL: one JSON object per training iteration, one line each, written with one write()
// to a file opened for appending, so a crash keeps every line written before it. Schema (README,
// "Training logs"): iteration, consumed_samples, global_batch_size, lm_loss, lr, grad_norm,
// iteration_time_ms, tokens_per_s, model_tflops_per_rank, mfu (null when the peak is unknown),
// mem_peak_bytes, mem_allocated_bytes, eval_loss (null unless the iteration evaluated), skipped.
// Non-finite numbers are written as null.
//
// Resume: begin(first_iteration) keeps the records of iterations before first_iteration and drops
// the later ones (a run that crashed after its last checkpoint wrote records that the resumed run
// writes again) and a torn last line; a run from iteration 1 therefore starts an empty file.
#include <string>

#include <nlohmann/json.hpp>

#include "backends/executor/training_log.h"

namespace tandem::exec {

// The record as one JSON object, keys in the documented order.
nlohmann::ordered_json metrics_json(const IterationRecord& r);

class MetricsLog : public TrainingLog {
 public:
  // UserError naming `option` and `path` if the file cannot be opened for appending.
  MetricsLog(std::string option, std::string path);
  ~MetricsLog() override;
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void begin(int64_t first_iteration) override;
  void record(const IterationRecord& r) override;

 private:
  void open_for_append();
  void append(const std::string& line);

  std::string option_, path_;
  int fd_ = -1;
};

}  // namespace tandem::exec
