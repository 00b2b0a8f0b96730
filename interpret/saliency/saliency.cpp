// Saliency (Simonyan et al. 2014): the target logit's input gradient, by default its absolute
// value (Captum's Saliency, abs=True).
#include <cmath>

#include "interpret/saliency/methods.h"

namespace spade::interp {

Tensor saliency(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "saliency input");
  Tensor g = target_gradients(net, x, target);
  if (p.abs)
    for (int64_t i = 0; i < g.numel(); ++i) g[i] = std::fabs(g[i]);
  return g;
}

}  // namespace spade::interp
