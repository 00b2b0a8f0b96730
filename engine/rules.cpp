#include "engine/rules.h"

#include <cmath>

#include "engine/ops.h"
#include "kernels/cpu/gemm.h"

namespace spade {

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
  out.input_grads.resize(ctx.inputs.size());
  const bool need_x = ctx.need_input_grad.at(0);
  const bool need_p = ctx.need_param_grads;
  switch (node.op) {
    case OpKind::Input:
      return;
    case OpKind::Conv2d: {
      kernels::ConvGeom g = conv_geom(node, in);
      if (need_x) {
        out.input_grads[0] = Tensor::empty(in);
        kernels::conv2d_backward_input(g, gy.data(), ctx.param("weight").data(), out.input_grads[0].data());
      }
      if (need_p) {
        Tensor gw = Tensor::empty(node.params.at("weight").shape());
        Tensor gb;
        if (node.attrs.bias) gb = Tensor::empty({g.K});
        kernels::conv2d_backward_params(g, x.data(), gy.data(), gw.data(), gb.defined() ? gb.data() : nullptr);
        out.param_grads["weight"] = gw;
        if (gb.defined()) out.param_grads["bias"] = gb;
      }
      return;
    }
    case OpKind::BatchNorm2d: {
      std::vector<float> mean, invstd;
      bn_statistics(node, ctx.overlay, x, ctx.train, mean, invstd);
      Tensor gx, gw, gb;
      if (need_x) gx = Tensor::empty(in);
      if (need_p) {
        gw = Tensor::empty({in[1]});
        gb = Tensor::empty({in[1]});
      }
      auto fn = ctx.train ? kernels::batchnorm_backward_train : kernels::batchnorm_backward_eval;
      fn(bn_geom(in), x.data(), gy.data(), mean.data(), invstd.data(), ctx.param("weight").data(),
         need_x ? gx.data() : nullptr, need_p ? gw.data() : nullptr, need_p ? gb.data() : nullptr);
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
      Tensor gx = Tensor::empty(in);
      kernels::clamp_backward(x.numel(), x.data(), gy.data(), 0.f, node.op == OpKind::ReLU6 ? 6.f : INFINITY,
                              gx.data());
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: {
      if (!need_x) return;
      kernels::PoolGeom g = pool_geom(node, in);
      Tensor gx = Tensor::empty(in);
      if (node.op == OpKind::MaxPool2d)
        kernels::maxpool2d_backward(g, x.data(), gy.data(), gx.data());
      else
        kernels::avgpool2d_backward(g, gy.data(), gx.data());
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::AdaptiveAvgPool2d: {
      if (!need_x) return;
      Tensor gx = Tensor::empty(in);
      kernels::global_avgpool_backward(in[0] * in[1], in[2] * in[3], gy.data(), gx.data());
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
        out.input_grads[0] = Tensor::empty(in);
        kernels::gemm(false, false, N, I, O, gy.data(), ctx.param("weight").data(), out.input_grads[0].data(), false);
      }
      if (need_p) {
        Tensor gw = Tensor::empty({O, I});
        kernels::gemm(true, false, O, I, N, gy.data(), x.data(), gw.data(), false);
        out.param_grads["weight"] = gw;
        if (node.attrs.bias) {
          Tensor gb = Tensor::zeros({O});
          for (int64_t n = 0; n < N; ++n)
            for (int64_t o = 0; o < O; ++o) gb[o] += gy[n * O + o];
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
      Tensor gx = Tensor::empty(in);
      kernels::dropout_apply(gy.numel(), gy.data(), node.attrs.p, ctx.seed, gx.data());
      out.input_grads[0] = gx;
      return;
    }
    case OpKind::ShortcutA: {
      if (!need_x) return;
      Tensor gx = Tensor::empty(in);
      kernels::shortcut_backward(shortcut_geom(node, in), gy.data(), gx.data());
      out.input_grads[0] = gx;
      return;
    }
  }
}

}  // namespace spade
