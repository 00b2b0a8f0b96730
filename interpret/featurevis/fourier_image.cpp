#include "interpret/featurevis/fourier_image.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace spade::interp::featurevis {

namespace {

constexpr double kTwoPi = 6.283185307179586;
// Lucent's constant: dividing the inverse FFT by 4 keeps the initial sigmoid away from saturation.
constexpr float kMagic = 4.f;

// numpy.fft.fftfreq(n)[k]: k / n for k < (n + 1) / 2, else (k - n) / n.
double fftfreq(int64_t k, int64_t n) { return double(k < (n + 1) / 2 ? k : k - n) / double(n); }

// cos and sin of 2 pi k m / n, the product reduced mod n first so that large k * m lose no
// precision, and exactly 0 at the quarter turns: the sines of the self-conjugate bins then vanish
// exactly, so the imaginary parts that cannot affect the image get exactly zero gradient.
double cos_turn(int64_t k, int64_t m, int64_t n) {
  const int64_t r = (k * m) % n;
  return (4 * r == n || 4 * r == 3 * n) ? 0.0 : std::cos(kTwoPi * double(r) / double(n));
}
double sin_turn(int64_t k, int64_t m, int64_t n) {
  const int64_t r = (k * m) % n;
  return (r == 0 || 2 * r == n) ? 0.0 : std::sin(kTwoPi * double(r) / double(n));
}

float sigmoid(float v) { return 1.f / (1.f + std::exp(-v)); }

}  // namespace

FourierImage::FourierImage(int64_t h, int64_t w, double decay_power) : h_(h), w_(w), wf_(w / 2 + 1) {
  if (h < 1 || w < 1) throw Error("feature visualisation: image size must be positive");
  scale_.resize(h_, wf_);
  const double floor_freq = 1.0 / double(std::max(h_, w_));
  for (int64_t y = 0; y < h_; ++y)
    for (int64_t k = 0; k < wf_; ++k) {
      const double fy = fftfreq(y, h_), fx = fftfreq(k, w_);
      scale_(y, k) = float(1.0 / std::pow(std::max(std::sqrt(fy * fy + fx * fx), floor_freq), decay_power));
    }
  const double ny = 1.0 / std::sqrt(double(h_)), nx = 1.0 / std::sqrt(double(w_));
  along_y_.resize(2 * h_, 2 * h_);
  for (int64_t y = 0; y < h_; ++y)
    for (int64_t k = 0; k < h_; ++k) {
      const float c = float(cos_turn(k, y, h_) * ny), s = float(sin_turn(k, y, h_) * ny);
      along_y_(y, k) = c;
      along_y_(y, h_ + k) = -s;
      along_y_(h_ + y, k) = s;
      along_y_(h_ + y, h_ + k) = c;
    }
  along_x_.resize(2 * wf_, w_);
  for (int64_t n = 0; n < w_; ++n)
    for (int64_t k = 0; k < wf_; ++k) {
      // The bins 0 and (for even w) w/2 are their own conjugates: counted once, and only their
      // real part enters a real signal (a complex-to-real FFT ignores their imaginary parts).
      const bool self_conjugate = k == 0 || 2 * k == w_;
      const double a = self_conjugate ? 1.0 : 2.0;
      along_x_(k, n) = float(a * cos_turn(k, n, w_) * nx);
      along_x_(wf_ + k, n) = self_conjugate ? 0.f : float(-a * sin_turn(k, n, w_) * nx);
    }
}

namespace {
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride2 = Eigen::Stride<Eigen::Dynamic, 2>;
}  // namespace

Eigen::MatrixXf FourierImage::inverse(const Eigen::MatrixXf& spectra, int64_t planes) const {
  const Eigen::MatrixXf z = along_y_ * spectra;  // (2h, planes * wf): [zr; zi] per plane's columns
  Eigen::MatrixXf q(planes * h_, 2 * wf_);
  for (int64_t c = 0; c < planes; ++c) {
    q.block(c * h_, 0, h_, wf_) = z.block(0, c * wf_, h_, wf_);
    q.block(c * h_, wf_, h_, wf_) = z.block(h_, c * wf_, h_, wf_);
  }
  return q * along_x_;  // (planes * h, w)
}

Eigen::MatrixXf FourierImage::inverse_adjoint(const Eigen::MatrixXf& grad, int64_t planes) const {
  const Eigen::MatrixXf gq = grad * along_x_.transpose();  // (planes * h, 2wf)
  Eigen::MatrixXf gz(2 * h_, planes * wf_);
  for (int64_t c = 0; c < planes; ++c) {
    gz.block(0, c * wf_, h_, wf_) = gq.block(c * h_, 0, h_, wf_);
    gz.block(h_, c * wf_, h_, wf_) = gq.block(c * h_, wf_, h_, wf_);
  }
  return along_y_.transpose() * gz;  // (2h, planes * wf)
}

Eigen::MatrixXf FourierImage::irfft2(const Eigen::MatrixXf& re, const Eigen::MatrixXf& im) const {
  Eigen::MatrixXf spectra(2 * h_, wf_);
  spectra << re, im;
  return inverse(spectra, 1);
}

void FourierImage::irfft2_adjoint(const Eigen::MatrixXf& grad, Eigen::MatrixXf& re, Eigen::MatrixXf& im) const {
  const Eigen::MatrixXf g = inverse_adjoint(grad, 1);
  re = g.topRows(h_);
  im = g.bottomRows(h_);
}

Eigen::Matrix3f FourierImage::colour_matrix() {
  Eigen::Matrix3d c;
  c << 0.26, 0.09, 0.02, 0.27, 0.00, -0.05, 0.27, -0.09, 0.03;
  const double max_norm = c.colwise().norm().maxCoeff();
  return (c / max_norm).cast<float>();
}

Tensor FourierImage::render(const std::vector<float>& spectrum, int64_t n) const {
  if (int64_t(spectrum.size()) != n * params_per_image())
    throw Error("feature visualisation: spectrum has " + std::to_string(spectrum.size()) + " values, expected " +
                std::to_string(n * params_per_image()));
  const Eigen::Matrix3f mix = colour_matrix();
  const int64_t plane = h_ * w_;
  Tensor out = Tensor::empty({n, 3, h_, w_});
  Eigen::MatrixXf spectra(2 * h_, 3 * wf_);
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) {
      const float* s = spectrum.data() + (i * 3 + c) * h_ * wf_ * 2;
      // Real and imaginary parts interleaved, row-major (h, wf, 2).
      Eigen::Map<const RowMajor, 0, Stride2> re(s, h_, wf_, Stride2(wf_ * 2, 2));
      Eigen::Map<const RowMajor, 0, Stride2> im(s + 1, h_, wf_, Stride2(wf_ * 2, 2));
      spectra.block(0, c * wf_, h_, wf_) = re.cwiseProduct(scale_);
      spectra.block(h_, c * wf_, h_, wf_) = im.cwiseProduct(scale_);
    }
    const Eigen::MatrixXf raw = inverse(spectra, 3) / kMagic;  // (3h, w)
    for (int c = 0; c < 3; ++c) {
      Eigen::Map<RowMajor> dst(out.data() + (i * 3 + c) * plane, h_, w_);
      dst = (mix(c, 0) * raw.middleRows(0, h_) + mix(c, 1) * raw.middleRows(h_, h_) + mix(c, 2) * raw.middleRows(2 * h_, h_))
                .unaryExpr(&sigmoid);
    }
  }
  return out;
}

std::vector<float> FourierImage::backward(const Tensor& images, const Tensor& grad_images) const {
  if (images.shape() != grad_images.shape() || images.ndim() != 4 || images.dim(1) != 3 || images.dim(2) != h_ ||
      images.dim(3) != w_)
    throw Error("feature visualisation: image gradient of shape " + shape_str(grad_images.shape()) +
                " does not match the images " + shape_str(images.shape()));
  const int64_t n = images.dim(0), plane = h_ * w_;
  const Eigen::Matrix3f mix = colour_matrix();
  std::vector<float> grad(n * params_per_image());
  Eigen::MatrixXf graw(3 * h_, w_);
  for (int64_t i = 0; i < n; ++i) {
    Eigen::MatrixXf gdec[3];
    for (int c = 0; c < 3; ++c) {
      Eigen::Map<const RowMajor> img(images.data() + (i * 3 + c) * plane, h_, w_);
      Eigen::Map<const RowMajor> g(grad_images.data() + (i * 3 + c) * plane, h_, w_);
      gdec[c] = g.cwiseProduct(img.cwiseProduct((1.f - img.array()).matrix()));
    }
    for (int j = 0; j < 3; ++j)
      graw.middleRows(j * h_, h_) = (mix(0, j) * gdec[0] + mix(1, j) * gdec[1] + mix(2, j) * gdec[2]) / kMagic;
    const Eigen::MatrixXf gspec = inverse_adjoint(graw, 3);  // (2h, 3wf)
    for (int j = 0; j < 3; ++j) {
      float* s = grad.data() + (i * 3 + j) * h_ * wf_ * 2;
      Eigen::Map<RowMajor, 0, Stride2> re(s, h_, wf_, Stride2(wf_ * 2, 2));
      Eigen::Map<RowMajor, 0, Stride2> im(s + 1, h_, wf_, Stride2(wf_ * 2, 2));
      re = gspec.block(0, j * wf_, h_, wf_).cwiseProduct(scale_);
      im = gspec.block(h_, j * wf_, h_, wf_).cwiseProduct(scale_);
    }
  }
  return grad;
}

}  // namespace spade::interp::featurevis
