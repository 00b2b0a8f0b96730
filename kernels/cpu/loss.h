#pragma once
// Softmax cross-entropy over logits (N, classes) with integer targets, mean over the batch (as
// torch.nn.functional.cross_entropy with reduction="mean"). Computed in double per row with the
// max subtracted, so large logits do not overflow.
#include <cstdint>

namespace spade::kernels {

// Returns the mean loss; `probs` (N, classes, nullable) receives the softmax probabilities.
double softmax_cross_entropy(int64_t N, int64_t classes, const float* logits, const int64_t* targets,
                             float* probs);
// d(mean loss)/d(logits) = (softmax - onehot) / N, written to grad (N, classes).
void softmax_cross_entropy_backward(int64_t N, int64_t classes, const float* logits, const int64_t* targets,
                                    float* grad);

}  // namespace spade::kernels
