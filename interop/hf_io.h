#pragma once
// Hugging Face directories <-> tandem checkpoints.
//
// An HF directory: config.json, and model.safetensors or model-0000k-of-0000n.safetensors +
// model.safetensors.index.json ({"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}).
// Export reads a checkpoint offline (exec::read_checkpoint), checks every tensor against the model
// its job describes, and writes the directory into DIR.tmp, renamed to DIR when complete. Import
// (load_hf + exec::write_checkpoint) checks config.json, every file and every tensor before it
// writes anything.
#include <cstdint>
#include <map>
#include <string>

#include "backends/executor/checkpoint.h"
#include "core/job.h"
#include "interop/hf_arch.h"
#include "interop/safetensors.h"

namespace tandem::interop {

struct ExportOptions {
  int64_t iteration = 0;                 // 0: the latest checkpoint
  StDtype dtype = StDtype::F32;          // F32 or BF16
  int64_t max_shard_bytes = 5'000'000'000;   // Hugging Face's default "5GB"
};

struct ExportReport {
  int64_t iteration = 0;
  HfArch arch;
  int64_t tensors = 0, files = 0;
  int64_t bytes = 0;                     // tensor bytes written (the index's total_size)
};

ExportReport export_hf(const std::string& checkpoint_dir, const std::string& out_dir, const ExportOptions& options);

// An HF directory as tandem sees it: the job of its model (resolved, one rank) and its tensors
// under the names exec::read_checkpoint gives.
struct HfModel {
  Job job;
  std::string job_json;                  // job_to_json(job)
  HfArch arch;
  std::map<std::string, exec::CheckpointTensor> tensors;
  int64_t bytes_read = 0;                // size of the safetensors files
};

HfModel load_hf(const std::string& dir);

// Writes `dir`'s model as iteration `iteration` of a tandem checkpoint under `save_dir`.
HfModel import_hf(const std::string& dir, const std::string& save_dir, int64_t iteration = 1);

// Hugging Face's size strings: "5GB" (10^9), "500MB", "2GiB" (2^30), "1000" bytes. UserError naming `field`.
int64_t parse_size(const std::string& text, const std::string& field);

}  // namespace tandem::interop
