#include "engine/ops.h"

#include <cmath>

#include "kernels/cpu/gemm.h"

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
  g.pad_h = a.padding[0];
  g.pad_w = a.padding[1];
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
  g.pad_h = a.padding[0];
  g.pad_w = a.padding[1];
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

void bn_statistics(const Node& node, const WeightOverlay* overlay, const Tensor& x, bool train,
                   std::vector<float>& mean, std::vector<float>& invstd, std::vector<double>* batch_var) {
  const int64_t C = x.dim(1);
  mean.resize(C);
  invstd.resize(C);
  const double eps = node.attrs.eps;
  if (train) {
    std::vector<double> m(C), v(C);
    kernels::batchnorm_batch_stats(bn_geom(x.shape()), x.data(), m.data(), v.data());
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = static_cast<float>(m[c]);
      invstd[c] = static_cast<float>(1.0 / std::sqrt(v[c] + eps));
    }
    if (batch_var) *batch_var = v;
  } else {
    const Tensor& rm = effective_param(node, overlay, "running_mean");
    const Tensor& rv = effective_param(node, overlay, "running_var");
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = rm[c];
      invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(rv[c]) + eps));
    }
  }
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
  auto pointwise_out = [&] { return reuse_input ? x : Tensor::empty(in); };
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
      Tensor y = Tensor::empty({g.N, g.K, g.out_h(), g.out_w()});
      const float* b = node.attrs.bias ? effective_param(node, overlay, "bias").data() : nullptr;
      kernels::conv2d_forward(g, x.data(), effective_param(node, overlay, "weight").data(), b, y.data());
      return y;
    }
    case OpKind::BatchNorm2d: {
      need4();
      if (in[1] != node.attrs.in_channels)
        throw Error("node \"" + node.name + "\": expected " + std::to_string(node.attrs.in_channels) +
                    " channels, got " + shape_str(in));
      std::vector<float> mean, invstd;
      std::vector<double> var;
      bn_statistics(node, overlay, x, train, mean, invstd, &var);
      Tensor y = pointwise_out();
      kernels::batchnorm_apply(bn_geom(in), x.data(), mean.data(), invstd.data(),
                               effective_param(node, overlay, "weight").data(),
                               effective_param(node, overlay, "bias").data(), y.data());
      if (train && stats) {
        const double count = static_cast<double>(in[0] * in[2] * in[3]);
        const double unbias = count > 1 ? count / (count - 1) : 1.0;
        const double m = node.attrs.momentum;
        Tensor& rm = stats->params.at("running_mean");
        Tensor& rv = stats->params.at("running_var");
        for (int64_t c = 0; c < in[1]; ++c) {
          rm[c] = static_cast<float>((1 - m) * rm[c] + m * mean[c]);
          rv[c] = static_cast<float>((1 - m) * rv[c] + m * var[c] * unbias);
        }
      }
      return y;
    }
    case OpKind::ReLU:
    case OpKind::ReLU6: {
      Tensor y = pointwise_out();
      kernels::clamp_forward(x.numel(), x.data(), 0.f, node.op == OpKind::ReLU6 ? 6.f : INFINITY, y.data());
      return y;
    }
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d: {
      need4();
      kernels::PoolGeom g = pool_geom(node, in);
      if (g.out_h() <= 0 || g.out_w() <= 0)
        throw Error("node \"" + node.name + "\": input " + shape_str(in) + " is smaller than the pooling window");
      Tensor y = Tensor::empty({g.N, g.C, g.out_h(), g.out_w()});
      if (node.op == OpKind::MaxPool2d)
        kernels::maxpool2d_forward(g, x.data(), y.data());
      else
        kernels::avgpool2d_forward(g, x.data(), y.data());
      return y;
    }
    case OpKind::AdaptiveAvgPool2d: {
      need4();
      Tensor y = Tensor::empty({in[0], in[1], 1, 1});
      kernels::global_avgpool_forward(in[0] * in[1], in[2] * in[3], x.data(), y.data());
      return y;
    }
    case OpKind::Add: {
      const Tensor& x2 = *inputs.at(1);
      if (x2.shape() != in)
        throw Error("node \"" + node.name + "\": cannot add " + shape_str(in) + " and " + shape_str(x2.shape()));
      Tensor y = pointwise_out();
      kernels::add_forward(x.numel(), x.data(), x2.data(), y.data());
      return y;
    }
    case OpKind::Linear: {
      if (x.ndim() != 2 || in[1] != node.attrs.in_channels)
        throw Error("node \"" + node.name + "\": expected input (N, " + std::to_string(node.attrs.in_channels) +
                    "), got " + shape_str(in));
      const int64_t N = in[0], I = in[1], O = node.attrs.out_channels;
      Tensor y = Tensor::empty({N, O});
      kernels::gemm(false, true, N, O, I, x.data(), effective_param(node, overlay, "weight").data(), y.data(), false);
      if (node.attrs.bias) {
        const Tensor& b = effective_param(node, overlay, "bias");
        for (int64_t n = 0; n < N; ++n)
          for (int64_t o = 0; o < O; ++o) y[n * O + o] += b[o];
      }
      return y;
    }
    case OpKind::Flatten:
      return x.reshape({in[0], in[0] ? x.numel() / in[0] : 0});
    case OpKind::Dropout: {
      if (!train || node.attrs.p == 0.f) return x;
      Tensor y = Tensor::empty(in);
      kernels::dropout_apply(x.numel(), x.data(), node.attrs.p, seed, y.data());
      return y;
    }
    case OpKind::ShortcutA: {
      need4();
      kernels::ShortcutGeom g = shortcut_geom(node, in);
      Tensor y = Tensor::empty({g.N, g.out_c(), g.out_h(), g.out_w()});
      kernels::shortcut_forward(g, x.data(), y.data());
      return y;
    }
  }
  throw Error("node \"" + node.name + "\": unsupported op");
}

}  // namespace spade
