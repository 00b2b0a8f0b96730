// Occlusion (Zeiler & Fergus 2014) as Captum's Occlusion: a window slides over (C, H, W) with the
// given strides; ceil((D - w) / s) + 1 positions per dimension, the last one cut off at the
// border, so every element is covered. Each window is replaced by the baseline and the drop in
// the target logit is credited to the elements it covers; an element's attribution is the mean
// over the windows covering it. The occluded images are evaluated net.batch at a time.
#include <vector>

#include "engine/error.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

namespace {

std::vector<int64_t> window_starts(int64_t dim, int64_t window, int64_t stride) {
  std::vector<int64_t> starts;
  const int64_t count = (std::max<int64_t>(0, dim - window) + stride - 1) / stride + 1;
  for (int64_t k = 0; k < count; ++k) starts.push_back(k * stride);
  return starts;
}

}  // namespace

Tensor occlusion(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "occlusion input");
  if (p.baselines.size() != 1) throw Error("occlusion takes exactly one baseline");
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), per = C * H * W;
  const std::array<int64_t, 3> dims{C, H, W};
  for (int d = 0; d < 3; ++d) {
    if (p.window[d] < 1 || p.window[d] > dims[d])
      throw Error("occlusion: window " + std::to_string(p.window[d]) + " does not fit dimension " + std::to_string(d) +
                  " of size " + std::to_string(dims[d]));
    if (p.stride[d] < 1) throw Error("occlusion: strides must be positive");
  }
  const auto cs = window_starts(C, p.window[0], p.stride[0]);
  const auto hs = window_starts(H, p.window[1], p.stride[1]);
  const auto ws = window_starts(W, p.window[2], p.stride[2]);
  struct Box {
    int64_t c, h, w;
  };
  std::vector<Box> boxes;
  for (int64_t c : cs)
    for (int64_t h : hs)
      for (int64_t w : ws) boxes.push_back({c, h, w});
  const int64_t B = static_cast<int64_t>(boxes.size());
  const int64_t chunk = std::max<int64_t>(1, net.batch);
  Tensor out = Tensor::empty(x.shape());
  std::vector<double> sum(per), count(per);
  for (int64_t n = 0; n < N; ++n) {
    const Tensor xn = x.slice0(n, n + 1);
    const Tensor base = baseline_image(p.baselines[0], xn);
    const double f0 = target_scores(net, xn, target)[0];
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0.0);
    auto for_box = [&](const Box& b, auto&& fn) {
      for (int64_t c = b.c; c < std::min(C, b.c + p.window[0]); ++c)
        for (int64_t h = b.h; h < std::min(H, b.h + p.window[1]); ++h)
          for (int64_t w = b.w; w < std::min(W, b.w + p.window[2]); ++w) fn((c * H + h) * W + w);
    };
    for (int64_t k0 = 0; k0 < B; k0 += chunk) {
      const int64_t k1 = std::min(B, k0 + chunk);
      Tensor batch = repeat_image(xn, k1 - k0);
      for (int64_t k = k0; k < k1; ++k) {
        float* img = batch.data() + (k - k0) * per;
        for_box(boxes[k], [&](int64_t i) { img[i] = base[i]; });
      }
      const std::vector<double> f = target_scores(net, batch, target);
      for (int64_t k = k0; k < k1; ++k) {
        const double drop = f0 - f[k - k0];
        for_box(boxes[k], [&](int64_t i) {
          sum[i] += drop;
          count[i] += 1.0;
        });
      }
      if (p.progress) p.progress(n * B + k1, N * B);
    }
    for (int64_t i = 0; i < per; ++i) out[n * per + i] = count[i] > 0 ? float(sum[i] / count[i]) : 0.f;
  }
  return out;
}

}  // namespace spade::interp
