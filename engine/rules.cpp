#include "engine/rules.h"

#include <cmath>

#include "engine/ops.h"

namespace spade {

WeightOverlay overlay_to(const WeightOverlay& overlay, Device device) {
  WeightOverlay out;
  for (const auto& [key, t] : overlay) out[key] = t.to(device);
  return out;
}

const Tensor& BackwardContext::param(const std::string& name) const { return effective_param(node, overlay, name); }

const BackwardRule* RuleSet::find(const Node& node) const {
  auto n = by_node_.find(node.name);
  if (n != by_node_.end()) return &n->second;
  auto o = by_op_.find(node.op);
  if (o != by_op_.end()) return &o->second;
  return nullptr;
}

void gradient_rule(const BackwardContext& ctx, BackwardOutputs& out) {
  const Node& node = ctx.node;
  const Tensor& x = *ctx.inputs.at(0);
  const Tensor& gy = ctx.grad_output;
  const Shape& in = x.shape();
  const Device dev = x.device();
  out.input_grads.resize(ctx.inputs.size());
  const bool need_x = ctx.need_input_grad.at(0);
  const bool need_p = ctx.need_param_grads;
  switch (node.op) {
    case OpKind::Input:
      return;
    case OpKind::Conv2d: {
      kernels::ConvGeom g = conv_geom(node, in);
      if (need_x) {
        out.input_grads[0] = Tensor::empty(in, dev);
        backend::conv2d_backward_input(g, gy, ctx.param("weight"), out.input_grads[0]);
      }
      if (need_p) {
        Tensor gw = Tensor::empty(node.params.at("weight").shape(), dev);
        Tensor gb;
        if (node.attrs.bias) gb = Tensor::empty({g.K}, dev);
        backend::conv2d_backward_params(g, x, gy, gw, gb.defined() ? &gb : nullptr);
        out.param_grads["weight"] = gw;
        if (gb.defined()) out.param_grads["bias"] = gb;
      }
      return;
    }
    case OpKind::BatchNorm2d: {
      const backend::BnCoefficients k = bn_coefficients(node, ctx.overlay, x, ctx.train);
      Tensor gx, gw, gb;
      if (need_x) gx = Tensor::empty(in, dev);
      if (need_p) {
        gw = Tensor::empty({in[1]}, dev);
        gb = Tensor::empty({in[1]}, dev);
      }
      backend::batchnorm_backward(ctx.train, x, gy, k, ctx.param("weight"), need_x ? &gx : nullptr,
                                  need_p ? &gw : nullptr, need_p ? &gb : nullptr);
      out.input_grads[0] = gx;
      if (need_p) {
        out.param_grads["weight"] = gw;
        out.param_grads["bias"] = gb;
      }
      return;
    }
    case OpKind::ReLU:
    case OpKind::ReLU6: {
      if (!need_x) return;
      Tensor gx = Tensor::empty(in, dev);
      backend::clamp_backward(x, gy, 0.f, node.op == OpKind::ReLU6 ? 6.f : INFINITY, gx);
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: {
      if (!need_x) return;
      kernels::PoolGeom g = pool_geom(node, in);
      Tensor gx = Tensor::empty(in, dev);
      if (node.op == OpKind::MaxPool2d)
        backend::maxpool2d_backward(g, x, gy, gx);
      else
        backend::avgpool2d_backward(g, gy, gx);
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::AdaptiveAvgPool2d: {
      if (!need_x) return;
      Tensor gx = Tensor::empty(in, dev);
      backend::global_avgpool_backward(gy, gx);
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::Add:
      // The sum passes its gradient unchanged to both inputs (shared, read-only).
      if (need_x) out.input_grads[0] = gy;
      if (ctx.need_input_grad.at(1)) out.input_grads[1] = gy;
      return;
    case OpKind::Linear: {
      const int64_t N = in[0], I = in[1], O = node.attrs.out_channels;
      if (need_x) {
        out.input_grads[0] = Tensor::empty(in, dev);
        backend::gemm(false, false, N, I, O, gy, ctx.param("weight"), out.input_grads[0], false);
      }
      if (need_p) {
        Tensor gw = Tensor::empty({O, I}, dev);
        backend::gemm(true, false, O, I, N, gy, x, gw, false);
        out.param_grads["weight"] = gw;
        if (node.attrs.bias) {
          Tensor gb = Tensor::empty({O}, dev);
          backend::column_sums(gy, gb);
          out.param_grads["bias"] = gb;
        }
      }
      return;
    }
    case OpKind::Flatten:
      if (need_x) out.input_grads[0] = gy.reshape(in);
      return;
    case OpKind::Dropout: {
      if (!need_x) return;
      if (!ctx.train || node.attrs.p == 0.f) {
        out.input_grads[0] = gy;
        return;
      }
      // Same mask as the forward pass: dropout is linear in its input for a fixed mask.
      Tensor gx = Tensor::empty(in, dev);
      backend::dropout_apply(gy, node.attrs.p, ctx.seed, gx);
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::ShortcutA: {
      if (!need_x) return;
      Tensor gx = Tensor::empty(in, dev);
      backend::shortcut_backward(shortcut_geom(node, in), gy, gx);
      out.input_grads[0] = gx;
      return;
    }
  }
}

}  // namespace spade
