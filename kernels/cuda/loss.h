#pragma once
// Softmax cross-entropy on the GPU, the counterpart of kernels/cpu/loss.h. Device pointers.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace spade::cuda {

// Writes the per-row losses to row_loss (N, device, double); the mean is their average. `probs`
// (nullable) receives the softmax. Targets are not checked here (the engine checks them on the
// host, as kernels::softmax_cross_entropy does): a row whose target is outside [0, classes)
// gets a NaN loss, and NaN gradients in the backward pass.
void softmax_cross_entropy(CudaContext& ctx, int64_t N, int64_t classes, const float* logits,
                           const int64_t* targets, double* row_loss, float* probs);
void softmax_cross_entropy_backward(CudaContext& ctx, int64_t N, int64_t classes, const float* logits,
                                    const int64_t* targets, float* grad);

}  // namespace spade::cuda
