#pragma once
// The GPU side of the augmentations (only in a build with SPADE_WITH_CUDA): drawn parameters as
// the plain data kernels/cuda/augment.h takes. augment_batch_cuda itself is in augment.h.
#include "interpret/spade/augment.h"
#include "kernels/cuda/augment.h"

namespace spade::interp {

cuda::AugmentSample augment_sample(const AugmentParams& p);

}  // namespace spade::interp
