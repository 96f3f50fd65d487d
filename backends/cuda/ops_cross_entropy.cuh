#pragma once
// Vocabulary-parallel cross-entropy (host-includable launchers). logits [tokens, v] hold this
// rank's vocabulary rows [vocab_start, vocab_start + v); targets [tokens] are global ids in
// DEVICE memory. Row kernels run one block per token row (rows_config).
//   partials: max [T] (local), sum_exp [T] = sum_j exp(x_j - max) (double accumulation),
//             target_logit [T] = raw logit of the target, 0 when the target is not local
//   rescale:  sum_exp [T] *= exp(local_max - global_max)
//   loss:     loss [T] = log(sum_exp) + max - target_logit
//   backward: d_logits [T, v] = d_loss[t] * (softmax - onehot) (overwritten; may alias logits)
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tandem::cuda {

void launch_cross_entropy_partials(const float* logits, int64_t tokens, int64_t v, const int32_t* targets,
                                   int64_t vocab_start, float* max, float* sum_exp, float* target_logit,
                                   cudaStream_t stream);
void launch_rescale_sum_exp(float* sum_exp, const float* local_max, const float* global_max, int64_t tokens,
                            cudaStream_t stream);
void launch_cross_entropy_loss(const float* max, const float* sum_exp, const float* target_logit, float* loss,
                               int64_t tokens, cudaStream_t stream);
void launch_cross_entropy_backward(const float* logits, int64_t tokens, int64_t v, const int32_t* targets,
                                   int64_t vocab_start, const float* max, const float* sum_exp, const float* d_loss,
                                   float* d_logits, cudaStream_t stream);

}  // namespace tandem::cuda
