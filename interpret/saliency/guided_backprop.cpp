// Guided backpropagation (Springenberg et al. 2015): the input gradient with every rectifier
// passing back only positive gradients, and only where its input was in the linear range.
#include <cmath>

#include "interpret/saliency/methods.h"
#include "interpret/saliency/relu_rules.h"

namespace spade::interp {

RuleSet guided_backprop_rules() {
  RuleSet rules;
  auto rule = [](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs[0];
    const Tensor& gy = ctx.grad_output;
    const float hi = ctx.node.op == OpKind::ReLU6 ? 6.f : INFINITY;
    Tensor gx = Tensor::empty(x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) gx[i] = (x[i] > 0.f && x[i] < hi && gy[i] > 0.f) ? gy[i] : 0.f;
    out.input_grads[0] = gx;
  };
  rules.set(OpKind::ReLU, rule);
  rules.set(OpKind::ReLU6, rule);
  return rules;
}

Tensor guided_backprop(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "guided_backprop input");
  const RuleSet rules = guided_backprop_rules();
  return target_gradients(net, x, target, &rules);
}

}  // namespace spade::interp
