// Score-CAM (Wang et al. 2020) as pytorch-grad-cam computes it: every channel k of the layer's
// activations is upsampled (bilinear, align_corners=True) to the input size and min-max
// normalised into a mask; the target logit of x * mask_k is channel k's score; weights =
// softmax of the scores over channels; cam = ReLU(sum_k w_k A_k). Masked images go through the
// network net.batch at a time. The exported attribution is the cam upsampled like Grad-CAM's.
#include <algorithm>
#include <cmath>
#include <vector>

#include "interpret/saliency/methods.h"
#include "interpret/saliency/upsample.h"

namespace spade::interp {

Tensor scorecam_layer(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "scorecam input");
  const int layer = resolve_layer(net.graph, p.layer);
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), HW = H * W;
  std::vector<Tensor> cams;
  for (int64_t n = 0; n < N; ++n) {
    const Tensor xn = x.slice0(n, n + 1);
    ForwardOptions fo;
    fo.overlay = net.weights;
    fo.keep_activations = false;
    fo.keep = {layer};
    const Tensor acts = forward(net.graph, xn, fo).acts.at(layer);
    const int64_t K = acts.dim(1), hw = acts.dim(2) * acts.dim(3);
    const Tensor up = upsample_bilinear(acts, H, W, true);
    std::vector<double> scores(K);
    const int64_t chunk = std::max<int64_t>(1, net.batch);
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
      const int64_t k1 = std::min(K, k0 + chunk);
      Tensor batch = Tensor::empty({k1 - k0, C, H, W});
      for (int64_t k = k0; k < k1; ++k) {
        const float* m = up.data() + k * HW;
        const auto [lo, hi] = std::minmax_element(m, m + HW);
        const float mn = *lo, range = *hi - *lo + 1e-8f;
        float* dst = batch.data() + (k - k0) * C * HW;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < HW; ++i) dst[c * HW + i] = xn[c * HW + i] * ((m[i] - mn) / range);
      }
      const std::vector<double> s = target_scores(net, batch, target);
      std::copy(s.begin(), s.end(), scores.begin() + k0);
      if (p.progress) p.progress(n * K + k1, N * K);
    }
    const double mx = *std::max_element(scores.begin(), scores.end());
    double z = 0;
    for (double& s : scores) z += (s = std::exp(s - mx));
    Tensor cam = Tensor::empty({1, 1, acts.dim(2), acts.dim(3)});
    for (int64_t i = 0; i < hw; ++i) {
      double v = 0;
      for (int64_t k = 0; k < K; ++k) v += scores[k] / z * acts[k * hw + i];
      cam[i] = v > 0 ? float(v) : 0.f;
    }
    cams.push_back(cam);
  }
  return cat0(cams);
}

Tensor scorecam(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  const Tensor cam = scorecam_layer(net, x, target, p);
  return broadcast_channels(upsample_bilinear(cam, x.dim(2), x.dim(3), false), x.dim(1));
}

}  // namespace spade::interp
