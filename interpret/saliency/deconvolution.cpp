// Deconvolution (Zeiler & Fergus 2014): every rectifier passes back the positive part of the
// incoming gradient, ignoring its forward input (Captum's Deconvolution).
#include "interpret/saliency/methods.h"
#include "interpret/saliency/relu_rules.h"

namespace spade::interp {

RuleSet deconvolution_rules() { return rectifier_rules(false); }

Tensor deconvolution(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "deconvolution input");
  const RuleSet rules = deconvolution_rules();
  return target_gradients(net, x, target, &rules);
}

}  // namespace spade::interp
