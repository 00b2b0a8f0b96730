#pragma once
// The random transforms Lucent applies at every optimisation step (transform.standard_transforms):
// pad, jitter, scale, rotate, jitter. They make the visualisation robust to small shifts and
// rescalings, so that it does not exploit one exact pixel alignment. Every transform is linear in
// the image for fixed parameters (pad adds a constant), so each backward is the forward's adjoint.
// Images are (N, C, H, W) CPU tensors.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace spade::interp::featurevis {

// out = x padded by p on every side with `value` (F.pad constant mode).
Tensor pad_constant(const Tensor& x, int64_t p, float value);
Tensor pad_constant_backward(const Tensor& grad_out, int64_t p);

// out[y, x] = in[y - dy, x - dx], 0 where that is outside (an integer translation, same size).
Tensor translate(const Tensor& x, int64_t dx, int64_t dy);
Tensor translate_backward(const Tensor& grad_out, int64_t dx, int64_t dy);

// Bilinear resize to ceil(s * H) x ceil(s * W) with align_corners=True (F.interpolate), then zero
// padding of max(0, ceil((H - h') / 2)) rows above and below and likewise columns, so shrinking
// keeps about the input's size and enlarging grows the image (Lucent's random_scale).
Shape scaled_shape(const Shape& in, double s);
Tensor scale(const Tensor& x, double s);
Tensor scale_backward(const Tensor& grad_out, const Shape& in_shape, double s);

// Rotation by `degrees` about the image centre ((W - 1) / 2, (H - 1) / 2) in OpenCV's convention
// (positive turns the picture counter-clockwise as displayed), bilinear, zeros outside, same size
// (kornia's warp_affine with get_rotation_matrix2d).
Tensor rotate(const Tensor& x, double degrees);
Tensor rotate_backward(const Tensor& grad_out, double degrees);

// (x - mean[c]) / std[c] and its backward.
Tensor normalise(const Tensor& x, const float* mean, const float* std);
Tensor normalise_backward(const Tensor& grad_out, const float* std);

// The transform family and its random choices.
struct TransformConfig {
  int64_t pad = 12;
  float pad_value = 0.5f;
  int64_t jitter = 8;         // first jitter: shifts in [0, jitter - 1]; 1 = none
  std::vector<double> scales; // chosen uniformly; empty = no scaling
  std::vector<double> angles; // degrees, chosen uniformly; empty = no rotation
  int64_t jitter2 = 4;        // second jitter

  // Lucent's standard_transforms, tuned for 224x224 images.
  static TransformConfig standard();
  // The standard set with its pixel sizes scaled by size / 224 (at least 1 pixel of padding and
  // 2 of jitter), for small inputs such as CIFAR's 32x32.
  static TransformConfig scaled_to(int64_t size);
  static TransformConfig none();
};

// One step's draw.
struct TransformDraw {
  int64_t dx1 = 0, dy1 = 0;
  double scale = 1.0;
  double angle = 0.0;
  int64_t dx2 = 0, dy2 = 0;
};

// Deterministic for (seed, step).
TransformDraw draw_transforms(const TransformConfig& cfg, uint64_t seed, int64_t step);

// The whole chain for one draw, keeping the shapes its backward needs.
class TransformChain {
 public:
  TransformChain(const TransformConfig& cfg, const TransformDraw& draw) : cfg_(cfg), draw_(draw) {}
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& grad_out) const;

 private:
  TransformConfig cfg_;
  TransformDraw draw_;
  Shape scale_in_;
};

}  // namespace spade::interp::featurevis
