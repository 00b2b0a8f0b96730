// DeepLift with the rescale rule (Shrikumar et al. 2017), as Captum's DeepLift computes it:
// a modified backward pass in which every nonlinearity passes multipliers
// (y - y0) / (x - x0) instead of its derivative (the derivative where |x - x0| < 1e-10), max
// pooling uses Captum's delta-routing rule, and linear ops (conv, BatchNorm in eval mode,
// linear, add, average pools) keep their gradients; attribution = (x - x0) * multipliers. The
// reference activations x0, y0 come from one forward pass of the baseline. Unlike Captum (which
// hooks nn.ReLU only), ReLU6 gets the rescale rule too, so completeness holds on MobileNets.
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

namespace {

constexpr float kEps = 1e-10f;

// The reference tensor for element i of a chunk tensor: the reference forward ran on one image.
inline float ref_at(const Tensor& ref, int64_t i) { return ref[i % ref.numel()]; }

struct DeepLiftRules {
  const Graph& g;
  const ForwardResult& ref;  // forward pass of the baseline, batch 1

  const Tensor& ref_input(const Node& node) const { return ref.acts.at(node.inputs.at(0)); }
  const Tensor& ref_output(const Node& node) const { return ref.acts.at(g.at(node.name)); }

  void rescale(const BackwardContext& ctx, BackwardOutputs& out) const {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs[0];
    const Tensor& y = ctx.output;
    const Tensor& gy = ctx.grad_output;
    const Tensor &x0 = ref_input(ctx.node), &y0 = ref_output(ctx.node);
    const float hi = ctx.node.op == OpKind::ReLU6 ? 6.f : INFINITY;
    Tensor gx = Tensor::empty(x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float dx = x[i] - ref_at(x0, i);
      if (std::fabs(dx) < kEps)
        gx[i] = (x[i] > 0.f && x[i] < hi) ? gy[i] : 0.f;
      else
        gx[i] = gy[i] * (y[i] - ref_at(y0, i)) / dx;
    }
    out.input_grads[0] = gx;
  }

  // Captum's maxpool rule: with m = max(y, y0), the output delta is split into (m - y0), routed
  // through the argmax of x, and (y - m), routed through the argmax of x0; their sum over the
  // input, divided by the input delta, is the multiplier.
  void maxpool(const BackwardContext& ctx, BackwardOutputs& out) const {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs[0];
    const Tensor& y = ctx.output;
    const Tensor& gy = ctx.grad_output;
    const Tensor &x0 = ref_input(ctx.node), &y0 = ref_output(ctx.node);
    const int64_t N = x.dim(0);
    Shape one_in = x.shape(), one_out = y.shape();
    one_in[0] = one_out[0] = 1;
    const kernels::PoolGeom geom1 = pool_geom(ctx.node, one_in);
    const kernels::PoolGeom geom = pool_geom(ctx.node, x.shape());
    Tensor a = Tensor::empty(y.shape()), b = Tensor::empty(y.shape());
    for (int64_t i = 0; i < y.numel(); ++i) {
      const float r = ref_at(y0, i), m = std::max(y[i], r);
      a[i] = gy[i] * (m - r);
      b[i] = gy[i] * (y[i] - m);
    }
    Tensor via_x = Tensor::empty(x.shape()), via_x0 = Tensor::empty(x.shape()), plain = Tensor::empty(x.shape());
    kernels::maxpool2d_backward(geom, x.data(), a.data(), via_x.data());
    kernels::maxpool2d_backward(geom, x.data(), gy.data(), plain.data());
    const int64_t in_per = x.numel() / N, out_per = y.numel() / N;
    for (int64_t n = 0; n < N; ++n)
      kernels::maxpool2d_backward(geom1, x0.data(), b.data() + n * out_per, via_x0.data() + n * in_per);
    Tensor gx = Tensor::empty(x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float dx = x[i] - ref_at(x0, i);
      gx[i] = std::fabs(dx) < kEps ? plain[i] : (via_x[i] + via_x0[i]) / dx;
    }
    out.input_grads[0] = gx;
  }
};

}  // namespace

Tensor deeplift(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "deeplift input");
  if (p.baselines.size() != 1) throw Error("deeplift takes exactly one baseline");
  const int64_t N = x.dim(0), per = x.numel() / N;
  Tensor out = Tensor::empty(x.shape());
  for (int64_t n = 0; n < N; ++n) {
    const Tensor xn = x.slice0(n, n + 1);
    const Tensor base = baseline_image(p.baselines[0], xn);
    ForwardOptions fo;
    fo.overlay = net.weights;
    const ForwardResult ref = forward(net.graph, base, fo);
    const DeepLiftRules dl{net.graph, ref};
    RuleSet rules;
    auto rescale = [&dl](const BackwardContext& c, BackwardOutputs& o) { dl.rescale(c, o); };
    rules.set(OpKind::ReLU, rescale);
    rules.set(OpKind::ReLU6, rescale);
    rules.set(OpKind::MaxPool2d, [&dl](const BackwardContext& c, BackwardOutputs& o) { dl.maxpool(c, o); });
    const Tensor m = target_gradients(net, xn, target, &rules);
    for (int64_t i = 0; i < per; ++i) out[n * per + i] = (xn[i] - base[i]) * m[i];
  }
  return out;
}

}  // namespace spade::interp
