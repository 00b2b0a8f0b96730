#include "engine/ops.h"

#include <algorithm>
#include <cmath>


namespace spade {

const Tensor& effective_param(const Node& node, const WeightOverlay* overlay, const std::string& name) {
  if (overlay) {
    auto it = overlay->find(node.name + "." + name);
    if (it != overlay->end()) return it->second;
  }
  auto it = node.params.find(name);
  if (it == node.params.end()) throw Error("node \"" + node.name + "\" has no parameter \"" + name + "\"");
  return it->second;
}

namespace {
// TensorFlow's "SAME" along one axis: output ceil(in / stride); the padding that needs, split with
// the odd one after.
void same_padding(int64_t in, int64_t window, int64_t stride, int64_t& before, int64_t& after) {
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + window - in, 0);
  before = total / 2;
  after = total - before;
}
}  // namespace

Padding resolve_padding(const OpAttrs& a, int64_t h, int64_t w) {
  if (!a.padding.same) return a.padding;
  Padding p;
  same_padding(h, a.dilation[0] * (a.kernel[0] - 1) + 1, a.stride[0], p.top, p.bottom);
  same_padding(w, a.dilation[1] * (a.kernel[1] - 1) + 1, a.stride[1], p.left, p.right);
  return p;
}

kernels::ConvGeom conv_geom(const Node& node, const Shape& in) {
  const OpAttrs& a = node.attrs;
  kernels::ConvGeom g;
  g.N = in[0];
  g.C = in[1];
  g.H = in[2];
  g.W = in[3];
  g.K = a.out_channels;
  g.R = a.kernel[0];
  g.S = a.kernel[1];
  g.stride_h = a.stride[0];
  g.stride_w = a.stride[1];
  const Padding p = resolve_padding(a, g.H, g.W);
  g.pad_top = p.top, g.pad_left = p.left, g.pad_bottom = p.bottom, g.pad_right = p.right;
  g.dil_h = a.dilation[0];
  g.dil_w = a.dilation[1];
  g.groups = a.groups;
  return g;
}

kernels::PoolGeom pool_geom(const Node& node, const Shape& in) {
  const OpAttrs& a = node.attrs;
  kernels::PoolGeom g;
  g.N = in[0];
  g.C = in[1];
  g.H = in[2];
  g.W = in[3];
  g.kh = a.kernel[0];
  g.kw = a.kernel[1];
  g.stride_h = a.stride[0];
  g.stride_w = a.stride[1];
  const Padding p = resolve_padding(a, g.H, g.W);  // pools have dilation 1
  g.pad_top = p.top, g.pad_left = p.left, g.pad_bottom = p.bottom, g.pad_right = p.right;
  g.ceil_mode = a.ceil_mode;
  g.count_include_pad = a.count_include_pad;
  return g;
}

kernels::BNGeom bn_geom(const Shape& in) { return {in[0], in[1], in[2] * in[3]}; }

kernels::ShortcutGeom shortcut_geom(const Node& node, const Shape& in) {
  kernels::ShortcutGeom g;
  g.N = in[0];
  g.C = in[1];
  g.H = in[2];
  g.W = in[3];
  g.pad = node.attrs.pad_channels;
  g.stride = node.attrs.stride[0];
  return g;
}

backend::BnCoefficients bn_coefficients(const Node& node, const WeightOverlay* overlay, const Tensor& x, bool train,
                                        Node* stats) {
  Tensor* rm = stats ? &stats->params.at("running_mean") : nullptr;
  Tensor* rv = stats ? &stats->params.at("running_var") : nullptr;
  return backend::batchnorm_coefficients(x, train, effective_param(node, overlay, "running_mean"),
                                         effective_param(node, overlay, "running_var"), node.attrs.eps,
                                         node.attrs.momentum, train ? rm : nullptr, train ? rv : nullptr);
}

uint64_t node_seed(uint64_t pass_seed, int node_index) {
  return pass_seed * 0x100000001b3ULL + static_cast<uint64_t>(node_index) * 0x9e3779b97f4a7c15ULL;
}

Tensor node_forward(const Node& node, const std::vector<const Tensor*>& inputs, const WeightOverlay* overlay,
                    bool train, uint64_t seed, Node* stats, bool reuse_input) {
  const Tensor& x = *inputs.at(0);
  const Shape& in = x.shape();
  // Output buffer for pointwise ops: the input's own storage when allowed (saves an allocation
  // and a pass of fresh memory per node during inference).
  const Device dev = x.device();
  auto pointwise_out = [&] { return reuse_input ? x : Tensor::empty(in, dev); };
  auto need4 = [&] {
    if (x.ndim() != 4) throw Error("node \"" + node.name + "\": expected a 4-D input, got " + shape_str(in));
  };
  switch (node.op) {
    case OpKind::Input:
      return x;
    case OpKind::Conv2d: {
      need4();
      if (in[1] != node.attrs.in_channels)
        throw Error("node \"" + node.name + "\": expected " + std::to_string(node.attrs.in_channels) +
                    " input channels, got " + shape_str(in));
      kernels::ConvGeom g = conv_geom(node, in);
      if (g.out_h() <= 0 || g.out_w() <= 0)
        throw Error("node \"" + node.name + "\": input " + shape_str(in) + " is smaller than the kernel");
      Tensor y = Tensor::empty({g.N, g.K, g.out_h(), g.out_w()}, dev);
      const Tensor* b = node.attrs.bias ? &effective_param(node, overlay, "bias") : nullptr;
      backend::conv2d_forward(g, x, effective_param(node, overlay, "weight"), b, y);
      return y;
    }
    case OpKind::BatchNorm2d: {
      need4();
      if (in[1] != node.attrs.in_channels)
        throw Error("node \"" + node.name + "\": expected " + std::to_string(node.attrs.in_channels) +
                    " channels, got " + shape_str(in));
      const backend::BnCoefficients k = bn_coefficients(node, overlay, x, train, stats);
      Tensor y = pointwise_out();
      backend::batchnorm_apply(x, k, effective_param(node, overlay, "weight"), effective_param(node, overlay, "bias"),
                               y);
      return y;
    }
    case OpKind::ReLU:
    case OpKind::ReLU6: {
      Tensor y = pointwise_out();
      backend::clamp_forward(x, 0.f, node.op == OpKind::ReLU6 ? 6.f : INFINITY, y);
      return y;
    }
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: {
      need4();
      kernels::PoolGeom g = pool_geom(node, in);
      if (g.out_h() <= 0 || g.out_w() <= 0)
        throw Error("node \"" + node.name + "\": input " + shape_str(in) + " is smaller than the pooling window");
      Tensor y = Tensor::empty({g.N, g.C, g.out_h(), g.out_w()}, dev);
      if (node.op == OpKind::MaxPool2d)
        backend::maxpool2d_forward(g, x, y);
      else
        backend::avgpool2d_forward(g, x, y);
      return y;
    }
    case OpKind::AdaptiveAvgPool2d: {
      need4();
      Tensor y = Tensor::empty({in[0], in[1], 1, 1}, dev);
      backend::global_avgpool_forward(x, y);
      return y;
    }
    case OpKind::Add: {
      const Tensor& x2 = *inputs.at(1);
      if (x2.shape() != in)
        throw Error("node \"" + node.name + "\": cannot add " + shape_str(in) + " and " + shape_str(x2.shape()));
      Tensor y = pointwise_out();
      backend::add(x, x2, y);
      return y;
    }
    case OpKind::Linear: {
      if (x.ndim() != 2 || in[1] != node.attrs.in_channels)
        throw Error("node \"" + node.name + "\": expected input (N, " + std::to_string(node.attrs.in_channels) +
                    "), got " + shape_str(in));
      const int64_t N = in[0], I = in[1], O = node.attrs.out_channels;
      Tensor y = Tensor::empty({N, O}, dev);
      backend::gemm(false, true, N, O, I, x, effective_param(node, overlay, "weight"), y, false);
      if (node.attrs.bias) backend::add_bias_rows(effective_param(node, overlay, "bias"), y);
      return y;
    }
    case OpKind::Flatten:
      return x.reshape({in[0], in[0] ? x.numel() / in[0] : 0});
    case OpKind::Dropout: {
      if (!train || node.attrs.p == 0.f) return x;
      Tensor y = Tensor::empty(in, dev);
      backend::dropout_apply(x, node.attrs.p, seed, y);
      return y;
    }
    case OpKind::ShortcutA: {
      need4();
      kernels::ShortcutGeom g = shortcut_geom(node, in);
      Tensor y = Tensor::empty({g.N, g.out_c(), g.out_h(), g.out_w()}, dev);
      backend::shortcut_forward(g, x, y);
      return y;
    }
  }
  throw Error("node \"" + node.name + "\": unsupported op");
}

}  // namespace spade
