// Grad-CAM (Selvaraju et al. 2017) as Captum's LayerGradCam: channel weights = the spatial mean
// of d logit_target / d A for the layer's activations A; cam = sum_c w_c A_c, with no ReLU
// unless asked (relu_attributions). The exported attribution is the cam upsampled bilinearly
// (F.interpolate, align_corners=False) to the input size, in every channel.
#include <vector>

#include "interpret/saliency/methods.h"
#include "interpret/saliency/upsample.h"

namespace spade::interp {

Tensor gradcam_layer(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "gradcam input");
  const LayerPass lp = layer_gradients(net, x, target, resolve_layer(net.graph, p.layer));
  const int64_t N = lp.activations.dim(0), K = lp.activations.dim(1), HW = lp.activations.dim(2) * lp.activations.dim(3);
  Tensor cam = Tensor::zeros({N, 1, lp.activations.dim(2), lp.activations.dim(3)});
  std::vector<double> acc(HW);
  for (int64_t n = 0; n < N; ++n) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k = 0; k < K; ++k) {
      const float* g = lp.gradients.data() + (n * K + k) * HW;
      const float* a = lp.activations.data() + (n * K + k) * HW;
      double w = 0;
      for (int64_t i = 0; i < HW; ++i) w += g[i];
      w /= double(HW);
      for (int64_t i = 0; i < HW; ++i) acc[i] += w * a[i];
    }
    for (int64_t i = 0; i < HW; ++i) {
      const float v = float(acc[i]);
      cam[n * HW + i] = p.relu_attributions && v < 0.f ? 0.f : v;
    }
  }
  return cam;
}

Tensor gradcam(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  const Tensor cam = gradcam_layer(net, x, target, p);
  return broadcast_channels(upsample_bilinear(cam, x.dim(2), x.dim(3), false), x.dim(1));
}

}  // namespace spade::interp
