// Guided Grad-CAM as Captum's GuidedGradCam: Grad-CAM with ReLU, upsampled to the input size
// with nearest-neighbour interpolation, times the guided backpropagation attribution.
#include "interpret/saliency/methods.h"
#include "interpret/saliency/upsample.h"

namespace spade::interp {

Tensor guided_gradcam(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  MethodParams cam_params = p;
  cam_params.relu_attributions = true;
  const Tensor cam = upsample_nearest(gradcam_layer(net, x, target, cam_params), x.dim(2), x.dim(3));
  Tensor gb = guided_backprop(net, x, target, p);
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) gb[(n * C + c) * HW + i] *= cam[n * HW + i];
  return gb;
}

}  // namespace spade::interp
