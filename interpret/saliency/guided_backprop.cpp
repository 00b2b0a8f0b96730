// Guided backpropagation (Springenberg et al. 2015): the input gradient with every rectifier
// passing back only positive gradients, and only where its input was in the linear range.
#include "interpret/saliency/methods.h"
#include "interpret/saliency/relu_rules.h"

#include <cmath>

#include "engine/backend.h"

namespace spade::interp {

RuleSet rectifier_rules(bool gate_by_input) {
  RuleSet rules;
  auto rule = [gate_by_input](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs[0];
    const Tensor& gy = ctx.grad_output;
    Tensor positive = Tensor::empty(gy.shape(), gy.device());
    backend::clamp_forward(gy, 0.f, INFINITY, positive);
    if (!gate_by_input) {
      out.input_grads[0] = positive;
      return;
    }
    Tensor gx = Tensor::empty(x.shape(), x.device());
    backend::clamp_backward(x, positive, 0.f, ctx.node.op == OpKind::ReLU6 ? 6.f : INFINITY, gx);
    out.input_grads[0] = gx;
  };
  rules.set(OpKind::ReLU, rule);
  rules.set(OpKind::ReLU6, rule);
  rules.set_runs_on_any_device(true);
  return rules;
}

RuleSet guided_backprop_rules() { return rectifier_rules(true); }

Tensor guided_backprop(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "guided_backprop input");
  const RuleSet rules = guided_backprop_rules();
  return target_gradients(net, x, target, &rules);
}

}  // namespace spade::interp
