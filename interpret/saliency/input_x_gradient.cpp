// InputXGradient: x * d logit_target / dx (Captum's InputXGradient).
#include "interpret/saliency/methods.h"

namespace spade::interp {

Tensor input_x_gradient(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "input_x_gradient input");
  Tensor g = target_gradients(net, x, target);
  for (int64_t i = 0; i < g.numel(); ++i) g[i] *= x[i];
  return g;
}

}  // namespace spade::interp
