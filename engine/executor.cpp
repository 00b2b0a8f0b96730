#include "engine/executor.h"

#include <algorithm>

#include "engine/interrupt.h"
#include "engine/ops.h"

namespace spade {

namespace {

ForwardResult run_forward(const Graph& g, Graph* mutable_graph, const Tensor& x, const ForwardOptions& opt) {
  const auto& nodes = g.nodes();
  const int n = g.size();
  if (x.ndim() != 4 || x.dim(1) != g.input_chw[0])
    throw Error("model input must be (N, " + std::to_string(g.input_chw[0]) + ", H, W), got " + shape_str(x.shape()));
  // Last consumer of every node, so outputs can be freed early when activations are not kept.
  std::vector<int> last_use(n, -1);
  if (!opt.keep_activations) {
    for (int i = 0; i < n; ++i)
      for (int j : nodes[i].inputs) last_use[j] = std::max(last_use[j], i);
    last_use[g.output()] = n;
    for (int k : opt.keep) last_use.at(k) = n;
  }
  ForwardResult r;
  r.acts.resize(n);
  r.output = g.output();
  r.train = opt.train;
  r.freeze_batchnorm = opt.freeze_batchnorm;
  r.seed = opt.seed;
  r.overlay = opt.overlay;
  r.acts[0] = x;
  std::vector<const Tensor*> inputs;
  for (int i = 1; i < n; ++i) {
    throw_if_interrupted();  // a caught SIGINT/SIGTERM stops the pass here (engine/interrupt.h)
    const Node& node = nodes[i];
    inputs.clear();
    for (int j : node.inputs) inputs.push_back(&r.acts[j]);
    const bool train = r.node_train(node);
    Node* stats = mutable_graph && train ? &mutable_graph->node(i) : nullptr;
    // In-place when this node is the first input's last reader and nobody else holds it.
    const int first = node.inputs.empty() ? -1 : node.inputs[0];
    const bool reuse = !opt.keep_activations && !opt.hook && first > 0 && last_use[first] == i &&
                       r.acts[first].sole_owner() && (node.inputs.size() < 2 || node.inputs[1] != first);
    r.acts[i] = node_forward(node, inputs, opt.overlay, train, node_seed(opt.seed, i), stats, reuse);
    if (opt.hook) opt.hook(i, inputs, r.acts[i]);
    if (!opt.keep_activations)
      for (int j : node.inputs)
        if (last_use[j] == i) r.acts[j] = Tensor();
  }
  return r;
}

}  // namespace

ForwardResult forward(const Graph& g, const Tensor& x, const ForwardOptions& opt) {
  return run_forward(g, nullptr, x, opt);
}

ForwardResult forward_train(Graph& g, const Tensor& x, ForwardOptions opt) {
  opt.train = true;
  return run_forward(g, &g, x, opt);
}

BackwardResult backward(const Graph& g, const ForwardResult& fwd, int from, const Tensor& grad_output,
                        const BackwardOptions& opt) {
  return backward(g, fwd, std::map<int, Tensor>{{from, grad_output}}, opt);
}

BackwardResult backward(const Graph& g, const ForwardResult& fwd, const std::map<int, Tensor>& grad_outputs,
                        const BackwardOptions& opt) {
  const auto& nodes = g.nodes();
  if (grad_outputs.empty()) throw Error("backward: no start node");
  for (const auto& [k, grad] : grad_outputs) {
    if (k <= 0 || k >= g.size()) throw Error("backward: start node index out of range");
    if (!fwd.acts.at(k).defined() || grad.shape() != fwd.acts[k].shape())
      throw Error("backward: gradient shape " + shape_str(grad.shape()) + " does not match node \"" + nodes[k].name +
                  "\" output");
  }
  const int from = grad_outputs.rbegin()->first;  // the last node any gradient starts at
  // Nodes below `stop` receive no gradient that anything asked for.
  int stop = grad_outputs.begin()->first;
  if (opt.input_grad) stop = 0;
  for (int k : opt.activation_grads) stop = std::min(stop, k);
  if (opt.param_grads)
    for (int i = 1; i <= from; ++i)
      if (!nodes[i].params.empty()) {
        stop = std::min(stop, i);
        break;
      }

  std::vector<Tensor> grads(g.size());
  // A host one-hot gradient is fine. The gradients starting at earlier nodes are summed with what
  // reaches them from later ones, as for any node with several consumers.
  for (const auto& [k, grad] : grad_outputs) grads[k] = grad.to(fwd.acts[k].device());
  BackwardResult result;
  auto wanted = [&](int i) {
    return std::find(opt.activation_grads.begin(), opt.activation_grads.end(), i) != opt.activation_grads.end();
  };
  for (int i = from; i >= std::max(stop, 1); --i) {
    throw_if_interrupted();
    if (!grads[i].defined()) continue;
    if (wanted(i)) result.activation_grads[i] = grads[i];
    const Node& node = nodes[i];
    std::vector<const Tensor*> inputs;
    std::vector<bool> need;
    bool any = opt.param_grads && !node.params.empty();
    for (int j : node.inputs) {
      if (!fwd.acts[j].defined())
        throw Error("backward: the forward pass did not keep the activation of \"" + nodes[j].name + "\"");
      inputs.push_back(&fwd.acts[j]);
      bool nj = j == 0 ? opt.input_grad : j >= stop;
      need.push_back(nj);
      any = any || nj;
    }
    if (any) {
      BackwardContext ctx{node, inputs, fwd.acts[i], grads[i], fwd.overlay, fwd.node_train(node), node_seed(fwd.seed, i),
                          need, opt.param_grads};
      BackwardOutputs outs;
      const BackwardRule* rule = opt.rules ? opt.rules->find(node) : nullptr;
      if (rule)
        (*rule)(ctx, outs);
      else
        gradient_rule(ctx, outs);
      for (size_t k = 0; k < node.inputs.size() && k < outs.input_grads.size(); ++k) {
        const Tensor& gk = outs.input_grads[k];
        if (!gk.defined() || !need[k]) continue;
        int j = node.inputs[k];
        if (gk.shape() != fwd.acts[j].shape())
          throw Error("backward rule for \"" + node.name + "\" returned a gradient of shape " + shape_str(gk.shape()) +
                      " for an input of shape " + shape_str(fwd.acts[j].shape()));
        if (!grads[j].defined()) {
          grads[j] = gk;
        } else {
          // Never write into a gradient tensor another node may share; sum into a new one.
          Tensor sum = Tensor::empty(gk.shape(), gk.device());
          backend::add(grads[j], gk, sum);
          grads[j] = sum;
        }
      }
      for (auto& [p, t] : outs.param_grads) result.param_grads[node.name + "." + p] = t;
    }
    grads[i] = Tensor();
  }
  if (opt.input_grad)
    result.input_grad = grads[0].defined() ? grads[0] : Tensor::zeros(fwd.acts[0].shape(), fwd.acts[0].device());
  for (int k : opt.activation_grads)
    if (!result.activation_grads.count(k))
      result.activation_grads[k] = Tensor::zeros(fwd.acts.at(k).shape(), fwd.acts.at(k).device());
  return result;
}

Tensor one_hot_grad(const Shape& logits_shape, const std::vector<int64_t>& targets) {
  if (logits_shape.size() != 2 || static_cast<int64_t>(targets.size()) != logits_shape[0])
    throw Error("one_hot_grad: need one target per row of " + shape_str(logits_shape));
  Tensor g = Tensor::zeros(logits_shape);
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] < 0 || targets[n] >= logits_shape[1])
      throw Error("target class " + std::to_string(targets[n]) + " out of range [0, " +
                  std::to_string(logits_shape[1]) + ")");
    g[n * logits_shape[1] + targets[n]] = 1.f;
  }
  return g;
}

}  // namespace spade
