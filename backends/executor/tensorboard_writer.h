#pragma once
// TensorBoard event files as Megatron writes them through torch's SummaryWriter, without
// TensorFlow or protobuf: `events.out.tfevents.<unix seconds>.<host>.<pid>.<n>` under
// --tensorboard-dir, a sequence of TFRecords
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data
// where data is one serialized tensorflow.Event:
//   1: wall_time (double, seconds since the epoch)  2: step (int64)
//   3: file_version (string, "brain.Event:2", the first record)  5: summary (Summary)
//   Summary { 1: repeated Value }   Value { 1: tag (string)  2: simple_value (float) }
// The protobuf is encoded by hand: three messages of scalar fields do not justify a protoc step
// in the build. Tags are Megatron's (training.py training_log / evaluate_and_print_results):
//   every --tensorboard-log-interval iterations: "learning-rate", "batch-size", "lm loss",
//   "grad-norm" (each also "<tag> vs samples", step = consumed samples); with
//   --log-memory-to-tensorboard "mem-allocated-bytes", "mem-max-allocated-bytes";
//   on console-log iterations with --log-timers-to-tensorboard "iteration-time" (s) and
//   "throughput" (model TFLOP/s per rank);
//   on evaluations "lm loss validation" (+ " vs samples"), with --log-validation-ppl-to-tensorboard
//   "lm loss validation ppl" (+ " vs samples").
// Every record is written with one write() as it is produced: a crash keeps what was logged.
#include <cstdint>
#include <string>

#include "backends/executor/training_log.h"
#include "core/job.h"

namespace tandem::exec {

uint32_t crc32c(const void* data, size_t size);                // Castagnoli, reflected 0x82F63B78
uint32_t masked_crc32c(const void* data, size_t size);         // TFRecord's ((c >> 15 | c << 17) + 0xa282ead8)
std::string tfrecord(const std::string& data);                 // the framing above around `data`
std::string scalar_event(double wall_time, int64_t step, const std::string& tag, float value);

class TensorBoardWriter : public TrainingLog {
 public:
  // Creates the directory and a new event file in it; UserError naming --tensorboard-dir otherwise.
  explicit TensorBoardWriter(const TrainingConfig& settings);
  ~TensorBoardWriter() override;
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void begin(int64_t) override {}
  void record(const IterationRecord& r) override;
  const std::string& path() const { return path_; }

 private:
  void scalar(const std::string& tag, double value, int64_t step);
  void write_record(const std::string& data);

  TrainingConfig settings_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace tandem::exec
