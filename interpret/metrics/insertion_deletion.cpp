#include "interpret/metrics/insertion_deletion.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "engine/error.h"
#include "interpret/metrics/roc_auc.h"

namespace spade::interp {

namespace {

// One curve of images: point i shows `finish` on the first pixels[i] pixels of the saliency
// order and `start` elsewhere (nullptr: the all-zero image), all channels of a pixel together.
struct CurvePath {
  const float* start = nullptr;
  const float* finish = nullptr;
};

// Index m of a line of length n extended as scipy.ndimage's mode 'reflect' (d c b a | a b c d |
// d c b a): half-sample symmetric, period 2n, however far past the ends.
int64_t reflect_index(int64_t m, int64_t n) {
  const int64_t period = 2 * n;
  m %= period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

std::vector<double> call_probability(const ProbabilityFn& probability, const Tensor& images) {
  const int64_t count = images.dim(0);
  std::vector<double> p = probability(images);
  if (static_cast<int64_t>(p.size()) != count)
    throw Error("insertion_deletion: the probability function returned " + std::to_string(p.size()) +
                " values for " + std::to_string(count) + " images");
  for (double v : p)
    if (!std::isfinite(v)) throw Error("insertion_deletion: the probability function returned NaN or infinity");
  return p;
}

}  // namespace

ProbabilityFn class_probability(const Network& net, int64_t cls) {
  const int64_t classes = net.num_classes();
  if (cls < 0 || cls >= classes)
    throw Error("class_probability: class " + std::to_string(cls) + " is outside [0, " + std::to_string(classes) +
                ")");
  return [net, cls](const Tensor& images) {
    const Tensor z = logits(net, images);
    const int64_t n = z.dim(0), k = z.dim(1);
    std::vector<double> p(n);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = z.data() + i * k;
      // Shifted by the row maximum so exp never overflows; the shift cancels in the ratio.
      const double top = *std::max_element(row, row + k);
      double sum = 0.0;
      for (int64_t j = 0; j < k; ++j) sum += std::exp(double(row[j]) - top);
      p[i] = std::exp(double(row[cls]) - top) / sum;
    }
    return p;
  };
}

std::vector<int64_t> saliency_order(const std::vector<float>& scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

double trapezoid_area(const std::vector<double>& curve) {
  if (curve.empty()) throw Error("trapezoid_area: empty curve");
  double sum = 0.0;
  for (double v : curve) sum += v;
  return sum - curve.front() / 2 - curve.back() / 2;
}

double rise_auc(const std::vector<double>& curve) {
  if (curve.size() < 2) throw Error("rise_auc: a curve needs at least 2 points");
  return trapezoid_area(curve) / static_cast<double>(curve.size() - 1);
}

std::vector<float> rise_blur_kernel(int64_t size, double sigma) {
  if (size < 1 || size % 2 == 0) throw Error("rise_blur: kernel size " + std::to_string(size) + " is not odd");
  if (!(sigma > 0.0) || !std::isfinite(sigma)) throw Error("rise_blur: sigma must be positive and finite");
  // scipy's 1-D Gaussian: radius int(4 sigma + 0.5), weights exp(-t^2 / (2 sigma^2)) summing to 1.
  const int64_t radius = static_cast<int64_t>(4.0 * sigma + 0.5);
  std::vector<double> weight(2 * radius + 1);
  double total = 0.0;
  for (int64_t t = -radius; t <= radius; ++t) {
    weight[t + radius] = std::exp(-0.5 * double(t * t) / (sigma * sigma));
    total += weight[t + radius];
  }
  for (double& w : weight) w /= total;
  // gaussian_filter is separable, and filtering the centred delta along one axis gives this line
  // profile; the reflections fold the weights that fall outside the small window back into it.
  std::vector<double> line(size, 0.0);
  for (int64_t j = 0; j < size; ++j)
    for (int64_t t = -radius; t <= radius; ++t)
      if (reflect_index(j + t, size) == size / 2) line[j] += weight[t + radius];
  std::vector<float> kernel(size * size);
  for (int64_t i = 0; i < size; ++i)
    for (int64_t j = 0; j < size; ++j) kernel[i * size + j] = static_cast<float>(line[i] * line[j]);
  return kernel;
}

Tensor rise_blur(const Tensor& x, int64_t size, double sigma) {
  if (!x.defined() || (x.ndim() != 3 && x.ndim() != 4))
    throw Error("rise_blur: expected images (C, H, W) or (N, C, H, W), got " + shape_str(x.shape()));
  const std::vector<float> kernel = rise_blur_kernel(size, sigma);
  const int64_t H = x.dim(-2), W = x.dim(-1), planes = H * W == 0 ? 0 : x.numel() / (H * W), r = size / 2;
  Tensor out = Tensor::empty(x.shape());
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = x.data() + plane * H * W;
    float* o = out.data() + plane * H * W;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xo = 0; xo < W; ++xo) {
        double acc = 0.0;  // outside the image counts as 0 (conv2d's zero padding)
        for (int64_t i = std::max<int64_t>(0, r - y); i < std::min<int64_t>(size, H + r - y); ++i)
          for (int64_t j = std::max<int64_t>(0, r - xo); j < std::min<int64_t>(size, W + r - xo); ++j)
            acc += double(kernel[i * size + j]) * in[(y + i - r) * W + (xo + j - r)];
        o[y * W + xo] = static_cast<float>(acc);
      }
  }
  return out;
}

InsertionDeletion insertion_deletion(const Tensor& x, const Tensor& attribution, const ProbabilityFn& probability,
                                     const InsertionDeletionParams& params) {
  const Shape& xs = x.shape();
  if (!x.defined() || !(xs.size() == 3 || (xs.size() == 4 && xs[0] == 1)))
    throw Error("insertion_deletion: expected one image (1, C, H, W) or (C, H, W), got " + shape_str(xs));
  const int64_t C = x.dim(-3), H = x.dim(-2), W = x.dim(-1), HW = H * W;
  if (C == 0 || HW == 0) throw Error("insertion_deletion: empty image " + shape_str(xs));
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i])) throw Error("insertion_deletion: the image contains NaN or infinite values");
  const PixelMap map = channel_summed_map(attribution);
  if (map.height != H || map.width != W)
    throw Error("insertion_deletion: the attribution is " + std::to_string(map.height) + "x" +
                std::to_string(map.width) + " but the image is " + std::to_string(H) + "x" + std::to_string(W));
  if (params.batch < 1) throw Error("insertion_deletion: batch must be at least 1");
  const bool rise = params.variant == InsertionDeletionVariant::Rise;
  if (rise && params.rise_step < 1) throw Error("insertion_deletion: the RISE step must be at least 1 pixel");

  InsertionDeletion out;
  const Tensor image = x.reshape({1, C, H, W});
  out.reference_probability = call_probability(probability, image)[0];
  if (!rise && !(out.reference_probability > 0.0))
    throw Error("insertion_deletion: the class probability of the unmodified image is " +
                std::to_string(out.reference_probability) + ", so confidences cannot be normalised by it");

  // Pixels changed at each point.
  if (rise) {
    const int64_t steps = (HW + params.rise_step - 1) / params.rise_step;
    for (int64_t i = 0; i <= steps; ++i) out.pixels.push_back(std::min(i * params.rise_step, HW));
  } else {
    for (int64_t i = 0; i < 100; ++i) out.pixels.push_back(i * HW / 100);
  }
  // rank[p] = position of pixel p in the saliency order, so "among the top k" is rank[p] < k.
  const std::vector<int64_t> order = saliency_order(map.values);
  std::vector<int64_t> rank(HW);
  for (int64_t j = 0; j < HW; ++j) rank[order[j]] = j;

  Tensor blurred;
  if (rise) blurred = rise_blur(image, params.rise_blur_size, params.rise_blur_sigma);
  // Insertion: from nothing (Spade) or the blurred image (Rise) towards x; deletion: from x to 0.
  const CurvePath paths[2] = {{rise ? blurred.data() : nullptr, image.data()}, {image.data(), nullptr}};
  const int64_t points = static_cast<int64_t>(out.pixels.size()), total = (params.deletion ? 2 : 1) * points;
  std::vector<double> probs(total);
  for (int64_t first = 0; first < total; first += params.batch) {
    const int64_t count = std::min(params.batch, total - first);
    Tensor batch = Tensor::empty({count, C, H, W});
    for (int64_t b = 0; b < count; ++b) {
      const CurvePath& path = paths[(first + b) / points];
      const int64_t k = out.pixels[(first + b) % points];
      float* dst = batch.data() + b * C * HW;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = 0; p < HW; ++p) {
          const float* src = rank[p] < k ? path.finish : path.start;
          dst[c * HW + p] = src ? src[c * HW + p] : 0.f;
        }
    }
    const std::vector<double> p = call_probability(probability, batch);
    std::copy(p.begin(), p.end(), probs.begin() + first);
    if (params.progress) params.progress(first + count, total);
  }

  out.insertion_curve.assign(probs.begin(), probs.begin() + points);
  out.deletion_curve.assign(probs.begin() + points, probs.end());
  if (!rise)
    for (auto* curve : {&out.insertion_curve, &out.deletion_curve})
      for (double& v : *curve) v = std::clamp(v / out.reference_probability, 0.0, 1.0);
  const auto area = rise ? rise_auc : trapezoid_area;
  out.insertion = area(out.insertion_curve);
  if (params.deletion) out.deletion = area(out.deletion_curve);
  return out;
}

}  // namespace spade::interp
