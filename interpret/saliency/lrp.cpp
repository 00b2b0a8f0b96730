// Layer-wise relevance propagation (Bach et al. 2015; the SPADE paper's alpha1-beta0 with z^B on
// the first layer, Montavon et al. 2017) as per-node backward rules; see lrp.h.
#include "interpret/saliency/lrp.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/ops.h"
#include "interpret/saliency/methods.h"
#include "kernels/cpu/gemm.h"

namespace spade::interp {

namespace {

// ---- elementwise helpers ----

Tensor positive_part(const Tensor& t) {
  Tensor r = Tensor::empty(t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) r[i] = t[i] > 0.f ? t[i] : 0.f;
  return r;
}

Tensor negative_part(const Tensor& t) {
  Tensor r = Tensor::empty(t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) r[i] = t[i] < 0.f ? t[i] : 0.f;
  return r;
}

// z becomes s = R / z in place. With eps > 0 the denominator is z + eps * sign(z) (sign(0) = +1),
// never 0; with eps == 0 a zero denominator gives s = 0: no contribution, no relevance.
void divide_relevance(const Tensor& relevance, Tensor& z, double eps) {
  const float e = static_cast<float>(eps);
  float* s = z.data();
  for (int64_t i = 0; i < z.numel(); ++i) {
    const float d = e > 0.f ? s[i] + (s[i] >= 0.f ? e : -e) : s[i];
    s[i] = d != 0.f ? relevance[i] / d : 0.f;
  }
}

// out += a * b, elementwise
void add_product(Tensor& out, const Tensor& a, const Tensor& b) {
  for (int64_t i = 0; i < out.numel(); ++i) out[i] += a[i] * b[i];
}

// ---- conv and linear layers as a linear map and its adjoint ----

class LayerMap {
 public:
  LayerMap(const Node& node, const Shape& in, const Shape& out) : node_(node), in_(in), out_(out) {
    if (node.op == OpKind::Conv2d) geom_ = conv_geom(node, in);
  }
  // W x (no bias)
  Tensor apply(const Tensor& x, const Tensor& w) const {
    Tensor y = Tensor::empty(out_);
    if (node_.op == OpKind::Conv2d)
      kernels::conv2d_forward(geom_, x.data(), w.data(), nullptr, y.data());
    else
      kernels::gemm(false, true, in_[0], out_[1], in_[1], x.data(), w.data(), y.data(), false);
    return y;
  }
  // W^T s: the map's gradient applied to s
  Tensor adjoint(const Tensor& s, const Tensor& w) const {
    Tensor gx = Tensor::empty(in_);
    if (node_.op == OpKind::Conv2d)
      kernels::conv2d_backward_input(geom_, s.data(), w.data(), gx.data());
    else
      kernels::gemm(false, false, in_[0], in_[1], out_[1], s.data(), w.data(), gx.data(), false);
    return gx;
  }
 private:
  const Node& node_;
  Shape in_, out_;
  kernels::ConvGeom geom_;
};

// The per-channel scale gamma / sqrt(var + eps) of an eval-mode BatchNorm (y = scale x + shift).
// sqrt(var + eps), as BatchNorm normalises: the RAP code's sqrt(var^2 + eps) is a slip.
std::vector<float> bn_scale(const Node& bn, const WeightOverlay* weights) {
  const Tensor& gamma = effective_param(bn, weights, "weight");
  const Tensor& var = effective_param(bn, weights, "running_var");
  std::vector<float> scale(gamma.numel());
  for (int64_t c = 0; c < gamma.numel(); ++c)
    scale[c] = static_cast<float>(double(gamma[c]) / std::sqrt(double(var[c]) + double(bn.attrs.eps)));
  return scale;
}

// A copy of a node whose parameters are the ones the forward pass used (the overlay's where it
// has them). Tensors share storage, so this is cheap and keeps the parameters alive.
Node resolved_node(const Node& node, const WeightOverlay* weights) {
  Node copy = node;
  for (auto& [name, t] : copy.params) t = effective_param(node, weights, name);
  return copy;
}

// A conv/linear node's parameters with its BatchNorm (if any) folded in: W' = W * scale per
// output channel. The folded copy is made per call, so at most one layer's exists at a time.
struct LayerParams {
  Tensor weight;             // the forward's weight (shared storage)
  bool has_bn = false;
  Node bn;                   // the folded BatchNorm, resolved
  std::vector<float> scale;  // its per-channel scale

  Tensor folded_weight() const {
    if (!has_bn) return weight;
    Tensor w = weight.clone();
    const int64_t k = w.dim(0), per = w.numel() / k;
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < per; ++j) w[c * per + j] *= scale[c];
    return w;
  }

  // The layer's output z = W'x + b' exactly as the forward pass computed it (the folded
  // BatchNorm reapplied to the conv's recorded output with the forward's own kernel), so that
  // R / z cancels exactly where R is proportional to that output (R = z * c under the epsilon
  // rule): a recomputed W'x + b' would differ by rounding, which is large relative to a z that
  // is small through cancellation.
  Tensor output(const Tensor& layer_output) const {
    if (!has_bn) return layer_output.clone();
    const backend::BnCoefficients k = bn_coefficients(bn, nullptr, layer_output, false);
    Tensor y = Tensor::empty(layer_output.shape());
    backend::batchnorm_apply(layer_output, k, bn.params.at("weight"), bn.params.at("bias"), y);
    return y;
  }
};

LayerParams layer_params(const Node& layer, const Node* bn, const WeightOverlay* weights) {
  LayerParams p;
  p.weight = effective_param(layer, weights, "weight");
  if (bn) {
    p.has_bn = true;
    p.bn = resolved_node(*bn, weights);
    p.scale = bn_scale(*bn, weights);
  }
  return p;
}

// Per image, x minus a tensor filled with that image's minimum (or maximum) over C, H, W.
Tensor minus_image_bound(const Tensor& x, bool upper) {
  Tensor d = Tensor::empty(x.shape());
  const int64_t n = x.dim(0), per = x.numel() / n;
  for (int64_t i = 0; i < n; ++i) {
    const float* p = x.data() + i * per;
    const float v = upper ? *std::max_element(p, p + per) : *std::min_element(p, p + per);
    for (int64_t j = 0; j < per; ++j) d[i * per + j] = p[j] - v;
  }
  return d;
}

// ---- the rules ----

// Conv2d / Linear (with its folded BatchNorm). R arrives for the node's output (or, folded, for
// the BatchNorm's output: the same shape).
BackwardRule layer_rule(LayerParams params, bool first_layer, LrpConfig cfg) {
  return [params = std::move(params), first_layer, cfg](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs.at(0);
    const Tensor& r = ctx.grad_output;
    const LayerMap map(ctx.node, x.shape(), r.shape());
    const Tensor w = params.folded_weight();
    if (cfg.rule == LrpRule::Epsilon) {
      // z = W'x + b', s = R / (z + eps sign z), R_in = x (W'^T s)
      Tensor s = params.output(ctx.output);
      divide_relevance(r, s, cfg.epsilon);
      Tensor rin = map.adjoint(s, w);
      for (int64_t i = 0; i < rin.numel(); ++i) rin[i] *= x[i];
      out.input_grads[0] = rin;
      return;
    }
    const Tensor wp = positive_part(w), wn = negative_part(w);
    Tensor rin = Tensor::zeros(x.shape());
    if (first_layer) {
      // z^B with l, h the image's min and max: z = W x - W+ L - W- H, written as the sum of
      // the two non-negative parts W+ (x - L) + W- (x - H) so no cancellation occurs (L and H
      // are zero-padded like x, so x - L and x - H are too); R_in likewise.
      const Tensor above = minus_image_bound(x, false), below = minus_image_bound(x, true);
      Tensor s = map.apply(above, wp);
      const Tensor zb = map.apply(below, wn);
      for (int64_t i = 0; i < s.numel(); ++i) s[i] += zb[i];
      divide_relevance(r, s, 0.0);
      add_product(rin, above, map.adjoint(s, wp));
      add_product(rin, below, map.adjoint(s, wn));
    } else {
      // alpha1beta0: only positive contributions x_i w_ij > 0 (x+ w+ and x- w-), no bias.
      const Tensor xp = positive_part(x), xn = negative_part(x);
      Tensor s = map.apply(xp, wp);
      const Tensor zn = map.apply(xn, wn);
      for (int64_t i = 0; i < s.numel(); ++i) s[i] += zn[i];
      divide_relevance(r, s, 0.0);
      add_product(rin, xp, map.adjoint(s, wp));
      add_product(rin, xn, map.adjoint(s, wn));
    }
    out.input_grads[0] = rin;
  };
}

// Relevance unchanged: ReLU, ReLU6, Flatten, eval-mode Dropout, and a BatchNorm folded into its
// conv (whose rule accounts for it).
void pass_through(const BackwardContext& ctx, BackwardOutputs& out) {
  out.input_grads.assign(1, ctx.grad_output.reshape(ctx.inputs.at(0)->shape()));
}

// A BatchNorm not folded into a conv: a diagonal layer y = a x + c, under the layer rule. Each
// output has the single contribution a x, so alpha1beta0 passes R where a x > 0 and drops it
// elsewhere; epsilon gives R_in = a x R / (y + eps sign y), y the forward's output.
BackwardRule standalone_bn_rule(const Node& bn, const WeightOverlay* weights, LrpConfig cfg) {
  return [scale = bn_scale(bn, weights), cfg](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const Tensor& x = *ctx.inputs.at(0);
    const Tensor& r = ctx.grad_output;
    const int64_t n = x.dim(0), k = x.dim(1), plane = x.numel() / (n * k);
    Tensor s;
    if (cfg.rule == LrpRule::Epsilon) {
      s = ctx.output.clone();
      divide_relevance(r, s, cfg.epsilon);
    }
    Tensor rin = Tensor::empty(x.shape());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < k; ++c)
        for (int64_t j = 0; j < plane; ++j) {
          const int64_t at = (i * k + c) * plane + j;
          const float ax = scale[c] * x[at];
          if (cfg.rule == LrpRule::Alpha1Beta0)
            rin[at] = ax > 0.f ? r[at] : 0.f;
          else
            rin[at] = ax * s[at];
        }
    out.input_grads[0] = rin;
  };
}

// Average pools: a linear layer with positive weights, so the layer rule reads: z = pool(x+)
// under alpha1beta0 (the plain z-rule for the non-negative inputs pools see after a ReLU),
// z = pool(x) (the forward's output) + eps sign under epsilon; R_in = x (pool^T s).
BackwardRule avgpool_rule(LrpConfig cfg) {
  return [cfg](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(1);
    if (!ctx.need_input_grad.at(0)) return;
    const bool alpha = cfg.rule == LrpRule::Alpha1Beta0;
    const Tensor x = alpha ? positive_part(*ctx.inputs.at(0)) : *ctx.inputs.at(0);
    const Tensor& r = ctx.grad_output;
    const Shape& in = x.shape();
    const bool global = ctx.node.op == OpKind::AdaptiveAvgPool2d;
    const kernels::PoolGeom g = global ? kernels::PoolGeom{} : pool_geom(ctx.node, in);
    Tensor s = alpha ? Tensor::empty(r.shape()) : ctx.output.clone();
    if (alpha) {
      if (global)
        kernels::global_avgpool_forward(in[0] * in[1], in[2] * in[3], x.data(), s.data());
      else
        kernels::avgpool2d_forward(g, x.data(), s.data());
    }
    divide_relevance(r, s, alpha ? 0.0 : cfg.epsilon);
    Tensor rin = Tensor::empty(in);
    if (global)
      kernels::global_avgpool_backward(in[0] * in[1], in[2] * in[3], s.data(), rin.data());
    else
      kernels::avgpool2d_backward(g, s.data(), rin.data());
    for (int64_t i = 0; i < rin.numel(); ++i) rin[i] *= x[i];
    out.input_grads[0] = rin;
  };
}

// Residual sum: each branch gets R in proportion to its value, R_a = a / (a + b) R (0 where
// a + b == 0, which only happens where R is 0 anyway: R follows a ReLU of a + b or a layer
// input); epsilon adds its stabiliser to a + b (the forward's output).
BackwardRule add_rule(LrpConfig cfg) {
  return [cfg](const BackwardContext& ctx, BackwardOutputs& out) {
    out.input_grads.resize(2);
    Tensor s = ctx.output.clone();
    divide_relevance(ctx.grad_output, s, cfg.rule == LrpRule::Epsilon ? cfg.epsilon : 0.0);
    for (int k = 0; k < 2; ++k) {
      if (!ctx.need_input_grad.at(k)) continue;
      const Tensor& v = *ctx.inputs.at(k);
      Tensor rk = Tensor::empty(v.shape());
      for (int64_t i = 0; i < rk.numel(); ++i) rk[i] = v[i] * s[i];
      out.input_grads[k] = rk;
    }
  };
}

void maxpool_rule(const BackwardContext& ctx, BackwardOutputs& out) {
  out.input_grads.resize(1);
  if (!ctx.need_input_grad.at(0)) return;
  const Tensor& x = *ctx.inputs.at(0);
  Tensor rin = Tensor::empty(x.shape());
  // winner takes all: the whole of R goes to the window's (first) maximum
  kernels::maxpool2d_backward(pool_geom(ctx.node, x.shape()), x.data(), ctx.grad_output.data(), rin.data());
  out.input_grads[0] = rin;
}

void shortcut_rule(const BackwardContext& ctx, BackwardOutputs& out) {
  out.input_grads.resize(1);
  if (!ctx.need_input_grad.at(0)) return;
  const Tensor& x = *ctx.inputs.at(0);
  Tensor rin = Tensor::empty(x.shape());
  // back to the subsampled positions; the zero padding channels hold no relevance (their
  // activation is 0, so the Add gave them none)
  kernels::shortcut_backward(shortcut_geom(ctx.node, x.shape()), ctx.grad_output.data(), rin.data());
  out.input_grads[0] = rin;
}

void nothing(const BackwardContext&, BackwardOutputs&) {}

}  // namespace

LrpRule lrp_rule_from_name(const std::string& name) {
  if (name == "alpha1beta0") return LrpRule::Alpha1Beta0;
  if (name == "epsilon") return LrpRule::Epsilon;
  throw Error("unknown LRP rule \"" + name + "\" (valid: alpha1beta0, epsilon)");
}

RuleSet lrp_rules(const Graph& g, const WeightOverlay* weights, const LrpConfig& config) {
  if (!(config.epsilon >= 0.0) || !std::isfinite(config.epsilon))
    throw Error("LRP epsilon must be a finite number >= 0, got " + std::to_string(config.epsilon));
  const auto& nodes = g.nodes();
  std::vector<int> consumers(nodes.size(), 0);
  for (const Node& n : nodes)
    for (int j : n.inputs) ++consumers[j];
  // A BatchNorm directly after a conv that feeds nothing else is folded into that conv.
  std::vector<int> folded_bn_of(nodes.size(), -1);
  std::vector<bool> is_folded(nodes.size(), false);
  for (int i = 1; i < g.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op != OpKind::BatchNorm2d) continue;
    const int j = n.inputs.at(0);
    if (nodes[j].op == OpKind::Conv2d && consumers[j] == 1) {
      folded_bn_of[j] = i;
      is_folded[i] = true;
    }
  }

  RuleSet rules;
  for (int i = 1; i < g.size(); ++i) {
    const Node& n = nodes[i];
    switch (n.op) {
      case OpKind::Input:
        rules.set_node(n.name, nothing);
        break;
      case OpKind::Conv2d:
      case OpKind::Linear: {
        const Node* bn = folded_bn_of[i] >= 0 ? &nodes[folded_bn_of[i]] : nullptr;
        rules.set_node(n.name, layer_rule(layer_params(n, bn, weights), n.inputs.at(0) == 0, config));
        break;
      }
      case OpKind::BatchNorm2d:
        if (is_folded[i])
          rules.set_node(n.name, pass_through);
        else
          rules.set_node(n.name, standalone_bn_rule(n, weights, config));
        break;
      case OpKind::ReLU:
      case OpKind::ReLU6:
      case OpKind::Flatten:
      case OpKind::Dropout:
        rules.set_node(n.name, pass_through);
        break;
      case OpKind::MaxPool2d:
        rules.set_node(n.name, maxpool_rule);
        break;
      case OpKind::AvgPool2d:
      case OpKind::AdaptiveAvgPool2d:
        rules.set_node(n.name, avgpool_rule(config));
        break;
      case OpKind::Add:
        rules.set_node(n.name, add_rule(config));
        break;
      case OpKind::ShortcutA:
        rules.set_node(n.name, shortcut_rule);
        break;
    }
  }
  return rules;
}

Tensor lrp(const Network& net, const Tensor& x, int64_t target, const MethodParams& params) {
  check_images(net, x, "lrp input");
  const int64_t classes = net.num_classes();
  if (target < 0 || target >= classes)
    throw Error("target class " + std::to_string(target) + " is out of range [0, " + std::to_string(classes) + ")");
  LrpConfig config;
  config.rule = lrp_rule_from_name(params.lrp_rule);
  config.epsilon = params.lrp_epsilon;
  const RuleSet rules = lrp_rules(net.graph, net.weights, config);
  BackwardOptions bo;
  bo.rules = &rules;
  ForwardOptions fo;
  fo.overlay = net.weights;

  const int64_t n = x.dim(0), batch = std::max<int64_t>(1, net.batch), per = x.numel() / n;
  Tensor relevance = Tensor::empty(x.shape());
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t e = std::min(n, s + batch);
    const ForwardResult fwd = forward(net.graph, (s == 0 && e == n) ? x : x.slice0(s, e), fo);
    // Relevance enters as the target logit itself, at the target class only.
    const Tensor& out = fwd.out();
    Tensor start = Tensor::zeros(out.shape());
    for (int64_t i = 0; i < e - s; ++i) start[i * classes + target] = out[i * classes + target];
    const BackwardResult r = backward(net.graph, fwd, net.graph.output(), start, bo);
    std::copy(r.input_grad.data(), r.input_grad.data() + r.input_grad.numel(), relevance.data() + s * per);
    if (params.progress) params.progress(e, n);
  }
  return relevance;
}

}  // namespace spade::interp
