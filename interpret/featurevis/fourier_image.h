#pragma once
// The image parameterisation of Lucent-style feature visualisation: each image is a spectrum in
// a decorrelated Fourier basis (the real inverse FFT of scale * spectrum, "ortho" norm, / 4), its
// colours mixed by the square root of ImageNet's colour correlation, and a sigmoid to [0, 1].
// Optimising the spectrum instead of the pixels whitens the gradient: low frequencies, which
// dominate natural images, no longer dominate the updates (Olah et al., Distill 2017).
#include <cstdint>
#include <vector>

#include <Eigen/Dense>

#include "engine/tensor.h"

namespace spade::interp::featurevis {

class FourierImage {
 public:
  // Images of h x w pixels; `decay_power` is the exponent of the 1/frequency scale.
  FourierImage(int64_t h, int64_t w, double decay_power = 1.0);

  int64_t height() const { return h_; }
  int64_t width() const { return w_; }
  int64_t freq_width() const { return wf_; }  // w / 2 + 1 bins along x
  // Parameters per image: 3 channels x h x wf x (real, imag), the layout of Lucent's tensor.
  int64_t params_per_image() const { return 3 * h_ * wf_ * 2; }

  // The frequency scale (h, wf): 1 / max(|f|, 1 / max(h, w))^decay_power.
  const Eigen::MatrixXf& scale() const { return scale_; }

  // spectrum: n * params_per_image() values -> images (n, 3, h, w) in [0, 1].
  Tensor render(const std::vector<float>& spectrum, int64_t n) const;
  // The gradient of a scalar with respect to the spectrum, from its gradient with respect to the
  // rendered images (`images` is render()'s output, needed for the sigmoid's derivative).
  std::vector<float> backward(const Tensor& images, const Tensor& grad_images) const;

  // The steps on their own, for tests: the inverse FFT of one channel (h x wf complex as real
  // and imaginary planes, already scaled) and its adjoint.
  Eigen::MatrixXf irfft2(const Eigen::MatrixXf& re, const Eigen::MatrixXf& im) const;
  void irfft2_adjoint(const Eigen::MatrixXf& grad, Eigen::MatrixXf& re, Eigen::MatrixXf& im) const;

  // The inverse transform of `planes` spectra side by side, [re; im] (2h x planes * wf) -> the
  // planes stacked (planes * h x w), and its adjoint.
  Eigen::MatrixXf inverse(const Eigen::MatrixXf& spectra, int64_t planes) const;
  Eigen::MatrixXf inverse_adjoint(const Eigen::MatrixXf& grad, int64_t planes) const;

  // Lucent's colour correlation square root, normalised by its largest column norm:
  // decorrelated[c] = sum_j colour_matrix()(c, j) * raw[j].
  static Eigen::Matrix3f colour_matrix();

 private:
  int64_t h_, w_, wf_;
  Eigen::MatrixXf scale_;
  // Separable inverse DFT with the "ortho" norm folded in, as two real matrix products so that the
  // three colour planes go through each in one product. Along y (complex): [re; im] (2h x wf) ->
  // [zr; zi] = along_y_ * [re; im] with along_y_ = [[cos, -sin], [sin, cos]] (2h x 2h). Along x
  // (complex to real, w values from wf bins): x = [zr, zi] * along_x_ with along_x_ = [cos^T; -sin^T]
  // (2wf x w), carrying the factor 2 of the bins whose conjugates are implied.
  Eigen::MatrixXf along_y_, along_x_;
};

}  // namespace spade::interp::featurevis
