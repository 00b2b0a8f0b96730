#pragma once
// SPADE's augmentations on the GPU (interpret/spade/augment.h describes them): every output
// pixel of every sample is computed by its own thread from the 8-bit source image, with the
// same integer arithmetic as the CPU path (PIL's bilinear resize, brightness and 8-bit HSV hue
// round trip), so the results are identical. The random parameters are drawn on the host.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace spade::cuda {

// One sample's drawn parameters (interp::AugmentParams as plain data).
struct AugmentSample {
  int top = 0, left = 0, height = 0, width = 0;  // crop box in the source
  int flip = 0;
  double brightness = 1.0;
  double hue = 0.0;
  int hue_first = 0;
  int apply_hue = 1;
};

// src: the source image, height x width x 3 bytes (device). samples: `count` parameter sets
// (host). Writes (count, 3, size, size) normalised floats ((v / 255 - mean[c]) / std[c]) to out
// (device).
void augment_batch(CudaContext& ctx, const uint8_t* src, int width, int height, const AugmentSample* samples,
                   int64_t count, int size, const float mean[3], const float std[3], float* out);

}  // namespace spade::cuda
