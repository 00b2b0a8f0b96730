// LIME over superpixels (see lime.h for the exact semantics and the two kernel modes).
#include "interpret/saliency/lime.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"
#include "interpret/sample_rng.h"
#include "interpret/saliency/linear_fit.h"

namespace spade::interp {

namespace {

int64_t sample_count(const MethodParams& p) {
  const int64_t s = p.samples < 0 ? 50 : p.samples;
  if (s < 1) throw Error("lime: samples must be at least 1, got " + std::to_string(p.samples));
  return s;
}

void check_lime_params(const MethodParams& p) {
  if (p.regression != "lasso" && p.regression != "ridge")
    throw Error("lime: unknown regression \"" + p.regression + "\" (valid: lasso, ridge)");
  if (!(p.regression_alpha >= 0.0) || !std::isfinite(p.regression_alpha))
    throw Error("lime: regression alpha must be a finite number >= 0, got " + std::to_string(p.regression_alpha));
  if (!(p.kernel_width > 0.0) || !std::isfinite(p.kernel_width))
    throw Error("lime: kernel width must be a finite number > 0, got " + std::to_string(p.kernel_width));
}

void check_single_image(const Network& net, const Tensor& x, const std::vector<int32_t>& segments,
                        int64_t num_segments) {
  check_images(net, x, "lime input");
  if (x.dim(0) != 1) throw Error("lime: expected one image (1, C, H, W), got " + shape_str(x.shape()));
  const int64_t plane = x.dim(2) * x.dim(3);
  if (int64_t(segments.size()) != plane)
    throw Error("lime: the segmentation has " + std::to_string(segments.size()) + " labels for " +
                std::to_string(plane) + " pixels");
  if (num_segments < 1) throw Error("lime: the segmentation has no segments");
  for (int32_t s : segments)
    if (s < 0 || s >= num_segments)
      throw Error("lime: segment label " + std::to_string(s) + " is outside [0, " + std::to_string(num_segments) + ")");
}

}  // namespace

Segments lime_segments(const Tensor& x, const MethodParams& p) {
  if (x.ndim() != 4 || x.dim(0) != 1 || x.dim(1) != 3)
    throw Error("lime: superpixels need one RGB image (1, 3, H, W), got " + shape_str(x.shape()));
  const int64_t H = x.dim(2), W = x.dim(3), plane = H * W;
  // Segment what a person sees: the normalisation undone, clamped to the valid colour range.
  std::vector<float> hwc(size_t(plane) * 3);
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < plane; ++i) {
      const float v = x[ch * plane + i] * p.std[ch] + p.mean[ch];
      hwc[3 * i + ch] = std::min(1.f, std::max(0.f, v));
    }
  const RgbView view{hwc.data(), H, W};
  if (p.segmentation == "quickshift") {
    QuickshiftParams q;
    q.kernel_size = p.quickshift_kernel;
    q.max_dist = p.quickshift_max_dist;
    q.ratio = p.quickshift_ratio;
    return quickshift(view, q);
  }
  if (p.segmentation == "slic") {
    SlicParams s;
    s.n_segments = p.slic_segments;
    return slic(view, s);
  }
  throw Error("lime: unknown segmentation \"" + p.segmentation + "\" (valid: quickshift, slic)");
}

std::vector<uint8_t> lime_sample(const MethodParams& p, int64_t s, int64_t num_segments) {
  std::vector<uint8_t> z(size_t(num_segments), 1);
  if (p.kernel_sqrt && s == 0) return z;  // the `lime` package's data_labels: row 0 is the image
  SampleRng rng(p.seed, s);
  for (auto& v : z) v = rng.next_unit() < 0.5 ? 1 : 0;
  return z;
}

double lime_similarity(const MethodParams& p, const std::vector<uint8_t>& z, const std::vector<double>& segment_energy) {
  double cosine = 0.0;
  if (p.kernel_sqrt) {
    int64_t on = 0;
    for (uint8_t v : z) on += v;
    if (on > 0) cosine = double(on) / (std::sqrt(double(on)) * std::sqrt(double(z.size())));
  } else {
    // cos(x, x * mask) = |x * mask| / |x|, from the per-superpixel energies.
    double total = 0.0, kept = 0.0;
    for (size_t k = 0; k < z.size(); ++k) {
      total += segment_energy[k];
      if (z[k]) kept += segment_energy[k];
    }
    if (total > 0.0 && kept > 0.0) cosine = kept / (std::sqrt(total) * std::sqrt(kept));
  }
  const double d = 1.0 - cosine;
  const double w2 = p.kernel_width * p.kernel_width;
  return p.kernel_sqrt ? std::sqrt(std::exp(-d * d / w2)) : std::exp(-d * d / (2.0 * w2));
}

LimeSurrogate lime_surrogate(const Network& net, const Tensor& x, int64_t target, const std::vector<int32_t>& segments,
                             int64_t num_segments, const MethodParams& p) {
  check_single_image(net, x, segments, num_segments);
  check_lime_params(p);
  const int64_t S = sample_count(p), K = num_segments;
  const int64_t C = x.dim(1), H = x.dim(2), W = x.dim(3), plane = H * W;

  std::vector<double> energy(K, 0.0);
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t i = 0; i < plane; ++i) {
      const double v = x[ch * plane + i];
      energy[segments[i]] += v * v;
    }

  RegressionData data;
  data.rows = S;
  data.cols = K;
  data.x.resize(size_t(S * K));
  data.y.resize(S);
  data.weight.resize(S);
  const int64_t chunk = std::max<int64_t>(1, std::min(net.batch, S));
  for (int64_t s0 = 0; s0 < S; s0 += chunk) {
    const int64_t count = std::min(chunk, S - s0);
    Tensor batch = Tensor::empty({count, C, H, W});
    for (int64_t j = 0; j < count; ++j) {
      const std::vector<uint8_t> z = lime_sample(p, s0 + j, K);
      std::copy(z.begin(), z.end(), data.x.begin() + (s0 + j) * K);
      data.weight[s0 + j] = lime_similarity(p, z, energy);
      float* dst = batch.data() + j * C * plane;
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t i = 0; i < plane; ++i) dst[ch * plane + i] = z[segments[i]] ? x[ch * plane + i] : 0.f;
    }
    const std::vector<double> scores = target_scores(net, batch, target, p.lime_score);
    std::copy(scores.begin(), scores.end(), data.y.begin() + s0);
    if (p.progress) p.progress(s0 + count, S);
  }
  if (std::all_of(data.weight.begin(), data.weight.end(), [](double w) { return w == 0.0; }))
    throw Error("lime: every sample's similarity is 0 (kernel width too small for the distance scale?)");

  const LinearFit fit = p.regression == "lasso" ? fit_lasso(data, p.regression_alpha) : fit_ridge(data, p.regression_alpha);
  return {fit.coef, fit.intercept};
}

Tensor lime_with_segments(const Network& net, const Tensor& x, int64_t target, const std::vector<int32_t>& segments,
                          int64_t num_segments, const MethodParams& p) {
  const LimeSurrogate fit = lime_surrogate(net, x, target, segments, num_segments, p);
  const int64_t C = x.dim(1), plane = x.dim(2) * x.dim(3);
  Tensor out = Tensor::empty(x.shape());
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t i = 0; i < plane; ++i) out[ch * plane + i] = float(std::max(fit.weights[segments[i]], 0.0));
  return out;
}

Tensor lime(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "lime input");
  if (x.dim(1) != 3) throw Error("lime: superpixels need RGB images (3 channels), got " + shape_str(x.shape()));
  const int64_t N = x.dim(0), per = x.numel() / N, S = sample_count(p);
  Tensor out = Tensor::empty(x.shape());
  for (int64_t n = 0; n < N; ++n) {
    const Tensor image = N == 1 ? x : x.slice0(n, n + 1);
    const Segments seg = lime_segments(image, p);
    MethodParams inner = p;
    if (p.progress) inner.progress = [&p, n, N, S](int64_t done, int64_t) { p.progress(n * S + done, N * S); };
    const Tensor a = lime_with_segments(net, image, target, seg.labels, seg.count, inner);
    std::copy(a.data(), a.data() + per, out.data() + n * per);
  }
  return out;
}

}  // namespace spade::interp
