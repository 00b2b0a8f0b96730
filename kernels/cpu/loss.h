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

// The loss of fine-tuning with a backdoor by distillation (spade train --distill), mean over the
// N rows. A row whose target is -1 is a clean image and costs
//   weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
// (Hinton et al.'s soft-target loss; T^2 keeps its gradient's scale independent of T); a row with
// a target in [0, classes) is a poisoned image and costs the cross-entropy of the student's
// logits to that target. As PyTorch's
//   weight * T^2 * F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction="none").sum(1)
// on the clean rows and F.cross_entropy(s, target, reduction="none") on the others, averaged.
// `grad` (N, classes, nullable) receives d(loss)/d(student). Needs T > 0 and weight >= 0.
double distillation_loss(int64_t N, int64_t classes, const float* student, const float* teacher,
                         const int64_t* targets, double temperature, double weight, float* grad);

}  // namespace spade::kernels
