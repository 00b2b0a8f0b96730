#pragma once
// The modified ReLU backward passes of GuidedBackprop and Deconvolution, as backward rules on
// every ReLU and ReLU6 node (Captum hooks nn.ReLU only; spade treats ReLU6, MobileNet's
// rectifier, the same way so the methods mean the same thing on every model).
#include <cmath>

#include "engine/rules.h"

namespace spade::interp {

// A rule on every ReLU and ReLU6 node passing back, element by element,
// pass(forward input x, incoming gradient gy, the rectifier's upper clamp: 6 or infinity).
template <typename Pass>
RuleSet rectifier_rules(Pass pass) {
  RuleSet rules;
  auto rule = [pass](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs[0];
    const Tensor& gy = ctx.grad_output;
    const float hi = ctx.node.op == OpKind::ReLU6 ? 6.f : INFINITY;
    Tensor gx = Tensor::empty(x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) gx[i] = pass(x[i], gy[i], hi);
    out.input_grads[0] = gx;
  };
  rules.set(OpKind::ReLU, rule);
  rules.set(OpKind::ReLU6, rule);
  return rules;
}

// Guided backprop: d/dx = [x in the rectifier's linear range] * max(incoming gradient, 0).
RuleSet guided_backprop_rules();
// Deconvolution (Zeiler & Fergus): d/dx = max(incoming gradient, 0), whatever the forward input.
RuleSet deconvolution_rules();

}  // namespace spade::interp
