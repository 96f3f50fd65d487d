#pragma once
// Checkpoints of real training runs (Megatron's --save / --save-interval / --load semantics).
//
// Layout: DIR/iter_0000010/{metadata.json, rank_00000.bin, ...} and DIR/latest_checkpointed_iteration.txt.
// Every rank writes the parameter pieces it owns once in the job (one DP replica, TP rank 0 for
// replicated tensors, no tied-embedding or mirrored copies; with the distributed optimizer each
// DP rank its shard): initial name, the shard rule that cut it from the full tensor, the flat
// range of the rank's tensor, and the values, exp_avg and exp_avg_sq of that range. A piece thus
// says where its numbers sit in the full tensor, so a checkpoint saved with one layout loads
// into another (TP, PP, DP, EP, distributed optimizer or not): every rank assembles the full
// tensors it needs from all pieces and cuts its own shard.
//
// Crash safety: files are written into iter_N.tmp/ and fsynced; rank 0 then writes metadata.json
// with every file's size and FNV-1a 64 checksum, renames the directory to iter_N (atomic) and
// replaces the tracker file through a temporary + rename. A crash at any point leaves the
// previous checkpoint and tracker intact. On load every file's size and checksum is verified
// before anything is used; a mismatch is a UserError naming the file.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/executor/communicator.h"
#include "backends/executor/device.h"
#include "backends/executor/param_store.h"

namespace tandem::exec {

// The expert bias of aux-loss-free balancing per MoE layer ([E] each): not a parameter (no
// optimizer state, the same on every rank holding the layer), kept in metadata.json as
// "expert_bias": {"<layer>": [E floats]}.
using ExpertBiasMap = std::map<int32_t, std::vector<float>>;

// Collective over the world. Saves iteration `iteration` under `dir`; `job_json` (the job as
// job_to_json writes it, may be empty) is kept in metadata.json as "job" so that tools reading
// the checkpoint offline (export, generate) know the model it holds; `expert_bias`, when given,
// the biases of this rank's MoE layers.
void save_checkpoint(const std::string& dir, int64_t iteration, ParamStore& params, Device& device,
                     Communicator& comm, const std::string& job_json = "",
                     const ExpertBiasMap* expert_bias = nullptr);

// The iteration of the latest checkpoint under `dir` (tracker file), or 0 when there is none.
int64_t latest_checkpoint(const std::string& dir);

// Collective over the world. Loads iteration `iteration` from `dir` into `params` (values and
// optimizer state), whatever layout saved it. UserError for missing, truncated or corrupted files.
// `expert_bias`, when given, receives the saved biases of every MoE layer (empty when the
// checkpoint holds none).
void load_checkpoint(const std::string& dir, int64_t iteration, ParamStore& params, Device& device,
                     Communicator& comm, ExpertBiasMap* expert_bias = nullptr);

// One full (unsharded) tensor of a checkpoint: [rows, cols] row-major fp32 (1-D tensors are
// [1, C]; each expert's tensor has its own name, "<name>.<expert>").
struct CheckpointTensor {
  int64_t rows = 1, cols = 1;
  std::vector<float> value;  // [rows * cols]
};

// A checkpoint read offline, without MPI: every file verified, every tensor assembled whole.
struct CheckpointContents {
  int64_t iteration = 0;
  std::string job_json;  // metadata.json's "job" (empty for checkpoints saved without it)
  std::map<std::string, CheckpointTensor> tensors;  // by layout-independent name
};

// Reads iteration `iteration` (0: the latest) of the checkpoint under `dir`. UserError naming the
// file for missing, truncated or corrupted files, and naming the tensor when part of it is absent.
CheckpointContents read_checkpoint(const std::string& dir, int64_t iteration = 0);

// Writes `tensors` (full, fp32) as iteration `iteration` > 0 of a checkpoint under `dir`, offline
// and as one rank: every tensor one piece with the replicated rule, Adam moments zero, `job_json`
// kept in metadata.json. Same crash safety as save_checkpoint (iter_N.tmp, rename, tracker), so
// `tandem train --load dir` loads it into any layout.
void write_checkpoint(const std::string& dir, int64_t iteration, const std::string& job_json,
                      const std::map<std::string, CheckpointTensor>& tensors);

}  // namespace tandem::exec
