#pragma once
// The SPADE augmentations of one image (SPADE.md 2.1), reproducing torchvision's PIL code path:
// RandomResizedCrop(size, scale, ratio, bilinear) -> RandomHorizontalFlip(p) ->
// ColorJitter(brightness, hue) -> ToTensor -> Normalize. The random draws use our own generator
// (so they differ from torch's), but given the drawn parameters every pixel equals torchvision's.
// Sample i of a seed depends only on (seed, i): batches can be made in any order or size.
#include <array>
#include <cstdint>

#include "engine/tensor.h"
#include "formats/image.h"

namespace spade::interp {

struct AugmentConfig {
  int size = 224;  // output side (the model's crop size; 32 for CIFAR models)
  double scale_min = 0.2, scale_max = 1.0;             // crop area fraction
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // crop aspect ratio, drawn log-uniformly
  double flip_p = 0.5;
  double brightness = 0.5;  // factor uniform in [1 - b, 1 + b] (clamped at 0)
  double hue = 0.3;         // shift uniform in [-h, h] of a full turn
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

// The random parameters of one augmentation.
struct AugmentParams {
  int top = 0, left = 0, height = 0, width = 0;  // crop box in the source image
  bool flip = false;
  double brightness = 1.0;  // PIL ImageEnhance.Brightness factor
  double hue = 0.0;         // torchvision adjust_hue factor in [-0.5, 0.5]
  bool hue_first = false;   // ColorJitter's random order: hue before brightness
  // Whether adjust_hue runs at all. Even a zero shift changes pixels (PIL's 8-bit HSV round trip
  // is lossy), and ColorJitter skips hue entirely only when its hue range is 0.
  bool apply_hue = true;
};

// Draws sample `index` of `seed` for a width x height source (torchvision's 10-try rule, then
// its centre-crop fallback).
AugmentParams draw_augment(const AugmentConfig& c, int width, int height, uint64_t seed, int64_t index);

// Applies the parameters: crop, PIL bilinear resize to size x size, flip, colour jitter (on 8-bit
// pixels, as PIL does). Returns the 8-bit image before normalisation.
Image apply_augment(const Image& src, const AugmentParams& p, int size);

// Samples [first, first + count) of `seed`, normalised, as a (count, 3, size, size) tensor.
Tensor augment_batch(const Image& src, const AugmentConfig& c, uint64_t seed, int64_t first, int64_t count);
// The same samples made on the GPU (identical values), as a CUDA tensor. The source image is
// uploaded once per image and kept while the same Image object is passed again.
Tensor augment_batch_cuda(const Image& src, const AugmentConfig& c, uint64_t seed, int64_t first, int64_t count);

}  // namespace spade::interp
