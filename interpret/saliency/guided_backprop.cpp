// Guided backpropagation (Springenberg et al. 2015): the input gradient with every rectifier
// passing back only positive gradients, and only where its input was in the linear range.
#include "interpret/saliency/methods.h"
#include "interpret/saliency/relu_rules.h"

namespace spade::interp {

RuleSet guided_backprop_rules() {
  return rectifier_rules([](float x, float gy, float hi) { return x > 0.f && x < hi && gy > 0.f ? gy : 0.f; });
}

Tensor guided_backprop(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "guided_backprop input");
  const RuleSet rules = guided_backprop_rules();
  return target_gradients(net, x, target, &rules);
}

}  // namespace spade::interp
