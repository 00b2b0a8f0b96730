// Deconvolution (Zeiler & Fergus 2014): every rectifier passes back the positive part of the
// incoming gradient, ignoring its forward input (Captum's Deconvolution).
#include "interpret/saliency/methods.h"
#include "interpret/saliency/relu_rules.h"

namespace spade::interp {

RuleSet deconvolution_rules() {
  RuleSet rules;
  auto rule = [](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& gy = ctx.grad_output;
    Tensor gx = Tensor::empty(gy.shape());
    for (int64_t i = 0; i < gy.numel(); ++i) gx[i] = gy[i] > 0.f ? gy[i] : 0.f;
    out.input_grads[0] = gx;
  };
  rules.set(OpKind::ReLU, rule);
  rules.set(OpKind::ReLU6, rule);
  return rules;
}

Tensor deconvolution(const Network& net, const Tensor& x, int64_t target, const MethodParams&) {
  check_images(net, x, "deconvolution input");
  const RuleSet rules = deconvolution_rules();
  return target_gradients(net, x, target, &rules);
}

}  // namespace spade::interp
