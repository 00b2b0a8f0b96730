#pragma once
// Resizing of layer-resolution maps to the input size, with PyTorch's F.interpolate index rules
// (so maps match what Captum and pytorch-grad-cam users get).
#include <cstdint>

#include "engine/tensor.h"

namespace spade::interp {

// (N, C, h, w) -> (N, C, H, W). mode "nearest": source index floor(dst * h / H) (computed in
// float like PyTorch). Bilinear: align_corners=false uses half-pixel centres with the source
// coordinate clamped at 0; align_corners=true maps the corner pixels onto each other.
Tensor upsample_nearest(const Tensor& m, int64_t H, int64_t W);
Tensor upsample_bilinear(const Tensor& m, int64_t H, int64_t W, bool align_corners);

// (N, 1, H, W) -> (N, C, H, W): the same map in every channel (layer methods' attributions have
// the input's shape this way).
Tensor broadcast_channels(const Tensor& m, int64_t C);

}  // namespace spade::interp
