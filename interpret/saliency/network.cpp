#include "interpret/saliency/network.h"

#include <cmath>

#include "engine/error.h"

namespace spade::interp {

DeviceModel::DeviceModel(const Graph& g, const WeightOverlay* w, Device device)
    : graph(g.to(device)), weights(w ? overlay_to(*w, device) : WeightOverlay()), has_weights(w != nullptr) {}

int64_t Network::num_classes() const {
  const Node& out = graph.node(graph.output());
  if (out.op != OpKind::Linear) throw Error("the model's output node \"" + out.name + "\" is not a linear classifier");
  return out.attrs.out_channels;
}

Shape Network::image_shape() const { return {graph.input_chw[0], graph.input_chw[1], graph.input_chw[2]}; }

void check_images(const Network& net, const Tensor& x, const std::string& what) {
  if (x.ndim() != 4 || x.dim(0) < 1 || x.dim(1) != net.graph.input_chw[0])
    throw Error(what + ": expected images (N, " + std::to_string(net.graph.input_chw[0]) + ", H, W), got " +
                shape_str(x.shape()));
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x[i])) throw Error(what + ": contains NaN or Inf");
}

namespace {

void check_target(const Network& net, int64_t target) {
  const int64_t classes = net.num_classes();
  if (target < 0 || target >= classes)
    throw Error("target class " + std::to_string(target) + " is out of range [0, " + std::to_string(classes) + ")");
}

// Where one pass runs: the device copy when there is one and the pass's backward rules (if any)
// run on any device.
struct Placement {
  const Graph& graph;
  const WeightOverlay* overlay;
  Device device;
};

Placement placement(const Network& net, const RuleSet* rules) {
  if (net.device && (!rules || rules->runs_on_any_device()))
    return {net.device->graph, net.device->overlay(), net.device->graph.device()};
  return {net.graph, net.weights, Device::CPU};
}

ForwardOptions eval_options(const Placement& p, bool keep) {
  ForwardOptions fo;
  fo.keep_activations = keep;
  fo.overlay = p.overlay;
  return fo;
}

int64_t chunk_size(const Network& net) { return std::max<int64_t>(1, net.batch); }

}  // namespace

Tensor logits(const Network& net, const Tensor& x) {
  const int64_t n = x.dim(0), b = chunk_size(net);
  const Placement p = placement(net, nullptr);
  auto run = [&](const Tensor& chunk) { return forward(p.graph, chunk.to(p.device), eval_options(p, false)).out().cpu(); };
  if (n <= b) return run(x);
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < n; s += b) parts.push_back(run(x.slice0(s, std::min(n, s + b))));
  return cat0(parts);
}

std::vector<double> target_scores(const Network& net, const Tensor& x, int64_t target, Score score) {
  check_target(net, target);
  const Tensor out = logits(net, x);
  const int64_t n = out.dim(0), k = out.dim(1);
  std::vector<double> s(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = out.data() + i * k;
    if (score == Score::Logit) {
      s[i] = row[target];
      continue;
    }
    double mx = row[0];
    for (int64_t j = 1; j < k; ++j) mx = std::max(mx, double(row[j]));
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(double(row[j]) - mx);
    s[i] = std::exp(double(row[target]) - mx) / sum;
  }
  return s;
}

Tensor target_gradients(const Network& net, const Tensor& x, int64_t target, const RuleSet* rules,
                        std::vector<double>* scores) {
  check_target(net, target);
  const int64_t n = x.dim(0), b = chunk_size(net);
  Tensor grad = Tensor::empty(x.shape());
  const int64_t per = x.numel() / n;
  if (scores) scores->assign(n, 0.0);
  const Placement p = placement(net, rules);
  for (int64_t s = 0; s < n; s += b) {
    const int64_t e = std::min(n, s + b);
    const Tensor chunk = (s == 0 && e == n) ? x : x.slice0(s, e);
    ForwardResult fwd = forward(p.graph, chunk.to(p.device), eval_options(p, true));
    const Tensor out = fwd.out().cpu();
    if (scores)
      for (int64_t i = s; i < e; ++i) (*scores)[i] = out[(i - s) * out.dim(1) + target];
    std::vector<int64_t> targets(e - s, target);
    BackwardOptions bo;
    bo.rules = rules;
    BackwardResult r = backward(p.graph, fwd, p.graph.output(), one_hot_grad(out.shape(), targets), bo);
    const Tensor g = r.input_grad.cpu();
    std::copy(g.data(), g.data() + g.numel(), grad.data() + s * per);
  }
  return grad;
}

int resolve_layer(const Graph& g, const std::string& layer) {
  if (layer.empty()) {
    for (int i = g.size() - 1; i > 0; --i)
      if (g.node(i).op == OpKind::AdaptiveAvgPool2d) return g.node(i).inputs.at(0);
    throw Error("the model has no global average pool, so there is no default layer: name one with --layer");
  }
  const int exact = g.find(layer);
  if (exact > 0) return exact;
  const std::string prefix = layer + ".";
  for (int i = g.size() - 1; i > 0; --i)
    if (g.node(i).name.compare(0, prefix.size(), prefix) == 0) return i;
  throw Error("no layer named \"" + layer + "\" in the model (see `spade info` for the node names)");
}

LayerPass layer_gradients(const Network& net, const Tensor& x, int64_t target, int layer_node, const RuleSet* rules) {
  check_target(net, target);
  const int64_t n = x.dim(0), b = chunk_size(net);
  std::vector<Tensor> acts, grads;
  const Placement p = placement(net, rules);
  for (int64_t s = 0; s < n; s += b) {
    const int64_t e = std::min(n, s + b);
    const Tensor chunk = (s == 0 && e == n) ? x : x.slice0(s, e);
    ForwardResult fwd = forward(p.graph, chunk.to(p.device), eval_options(p, true));
    if (fwd.acts[layer_node].ndim() != 4)
      throw Error("layer \"" + net.graph.node(layer_node).name + "\" has output " +
                  shape_str(fwd.acts[layer_node].shape()) + ", not a (N, C, H, W) feature map");
    std::vector<int64_t> targets(e - s, target);
    BackwardOptions bo;
    bo.rules = rules;
    bo.input_grad = false;
    bo.activation_grads = {layer_node};
    BackwardResult r = backward(p.graph, fwd, p.graph.output(), one_hot_grad(fwd.out().shape(), targets), bo);
    acts.push_back(fwd.acts[layer_node].cpu());
    grads.push_back(r.activation_grads.at(layer_node).cpu());
  }
  if (acts.size() == 1) return {acts[0], grads[0]};
  return {cat0(acts), cat0(grads)};
}

Tensor repeat_image(const Tensor& x, int64_t count) {
  if (x.ndim() != 4 || x.dim(0) != 1) throw Error("repeat_image: expected one image (1, C, H, W), got " + shape_str(x.shape()));
  Shape s = x.shape();
  s[0] = count;
  Tensor r = Tensor::empty(s);
  for (int64_t i = 0; i < count; ++i) std::copy(x.data(), x.data() + x.numel(), r.data() + i * x.numel());
  return r;
}

}  // namespace spade::interp
