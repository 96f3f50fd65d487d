// Which decoder layers each pipeline rank holds (models/accounting.h: pipeline_layout).
//
// The model is cut into p·v virtual stages; virtual stage c·p + r is chunk c of pipeline rank r
// (Megatron's interleaved assignment). Without uneven first/last stages every virtual stage has
// L / (p·v) layers. With decoder_first/last_pipeline_num_layers, the first and last virtual stage
// get those counts and the remaining layers are spread evenly over the others (an uneven
// remainder goes to the earlier stages). With account_for_embedding/loss_in_pipeline_split,
// Megatron's rule (core/schedule.h: accounted_split_layers).
#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "core/schedule.h"
#include "models/accounting.h"

namespace tandem {
namespace {

std::vector<int64_t> virtual_stage_sizes(const Job& job) {
  const auto& par = job.parallel;
  const int64_t p = std::max<int64_t>(1, par.pipeline_model_parallel_size);
  const int64_t v = std::max<int64_t>(1, par.virtual_pipeline_model_parallel_size);
  const int64_t stages = p * v;
  const int64_t layers = job.model.num_layers;
  std::vector<int64_t> sizes(static_cast<size_t>(stages), 0);
  if (par.account_for_embedding_in_pipeline_split || par.account_for_loss_in_pipeline_split) {
    const std::vector<int> split = accounted_split_layers(static_cast<int>(layers), static_cast<int>(stages),
                                                          par.account_for_embedding_in_pipeline_split,
                                                          par.account_for_loss_in_pipeline_split);
    return std::vector<int64_t>(split.begin(), split.end());
  }
  const int64_t first = p > 1 ? par.decoder_first_pipeline_num_layers : 0;
  const int64_t last = p > 1 ? par.decoder_last_pipeline_num_layers : 0;
  int64_t begin = 0, end = stages;
  if (first > 0) sizes[static_cast<size_t>(begin++)] = first;
  if (last > 0) sizes[static_cast<size_t>(--end)] = last;
  const int64_t rest = layers - first - last;
  const int64_t middle = end - begin;
  TANDEM_CHECK_MSG(rest >= 0 && (middle > 0 || rest == 0),
                   "cannot place " << layers << " layers on " << stages << " virtual stages");
  for (int64_t i = begin; i < end; ++i) {
    const int64_t k = i - begin;
    sizes[static_cast<size_t>(i)] = rest / middle + (k < rest % middle ? 1 : 0);
  }
  return sizes;
}

}  // namespace

int64_t RankLayers::num_layers() const {
  int64_t n = 0;
  for (const auto& c : chunks) n += static_cast<int64_t>(c.size());
  return n;
}

std::vector<RankLayers> pipeline_layout(const Job& job) {
  const int64_t p = std::max<int64_t>(1, job.parallel.pipeline_model_parallel_size);
  const int64_t v = std::max<int64_t>(1, job.parallel.virtual_pipeline_model_parallel_size);
  const std::vector<int64_t> sizes = virtual_stage_sizes(job);
  std::vector<int64_t> offsets(sizes.size() + 1, 0);
  std::partial_sum(sizes.begin(), sizes.end(), offsets.begin() + 1);

  std::vector<RankLayers> ranks(static_cast<size_t>(p));
  for (int64_t r = 0; r < p; ++r) {
    RankLayers& rl = ranks[static_cast<size_t>(r)];
    rl.pipeline_rank = r;
    rl.has_embedding = r == 0;
    rl.has_output_layer = r == p - 1;
    rl.has_mtp = rl.has_output_layer && job.model.mtp_num_layers > 0;
    for (int64_t c = 0; c < v; ++c) {
      const size_t stage = static_cast<size_t>(c * p + r);
      std::vector<int64_t> layers;
      for (int64_t l = offsets[stage]; l < offsets[stage + 1]; ++l) layers.push_back(l);
      rl.chunks.push_back(std::move(layers));
    }
  }
  return ranks;
}

}  // namespace tandem
