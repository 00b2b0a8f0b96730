#include "engine/fold.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"
#include "engine/ops.h"

namespace spade {

namespace {

// conv weight (O, I/groups, kh, kw) and bias (O) absorb the BatchNorm that follows them.
void fold_into(Node& conv, const Node& bn, const WeightOverlay* overlay) {
  const Tensor& gamma = effective_param(bn, overlay, "weight");
  const Tensor& beta = effective_param(bn, overlay, "bias");
  const Tensor& mean = effective_param(bn, overlay, "running_mean");
  const Tensor& var = effective_param(bn, overlay, "running_var");
  Tensor& w = conv.params.at("weight");
  Tensor& b = conv.params.at("bias");
  const int64_t out = w.dim(0), per = w.numel() / out;
  if (gamma.numel() != out) throw Error("fold_batchnorm: \"" + bn.name + "\" does not match \"" + conv.name + "\"");
  for (int64_t o = 0; o < out; ++o) {
    const double s = double(gamma[o]) / std::sqrt(double(var[o]) + double(bn.attrs.eps));
    for (int64_t k = 0; k < per; ++k) w[o * per + k] = float(double(w[o * per + k]) * s);
    b[o] = float((double(b[o]) - double(mean[o])) * s + double(beta[o]));
  }
}

}  // namespace

FoldedGraph fold_batchnorm(const Graph& g, const WeightOverlay* overlay, const std::vector<int>& keep) {
  const auto& nodes = g.nodes();
  std::vector<int> consumers(g.size(), 0);
  for (const Node& n : nodes)
    for (int j : n.inputs) ++consumers[j];
  // bn_of[c] = the BatchNorm folded into convolution c (-1: none).
  std::vector<int> bn_of(g.size(), -1);
  for (int i = 1; i < g.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op != OpKind::BatchNorm2d || n.inputs.size() != 1) continue;
    const int c = n.inputs[0];
    if (nodes[c].op == OpKind::Conv2d && consumers[c] == 1 && c != g.output() &&
        std::find(keep.begin(), keep.end(), c) == keep.end())
      bn_of[c] = i;
  }
  FoldedGraph out;
  out.graph.input_chw = g.input_chw;
  out.node_map.assign(g.size(), 0);
  std::vector<std::string> name_of(g.size(), nodes[0].name);
  for (int i = 1; i < g.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op == OpKind::BatchNorm2d && n.inputs.size() == 1 && bn_of[n.inputs[0]] == i) {
      out.node_map[i] = out.node_map[n.inputs[0]];
      name_of[i] = name_of[n.inputs[0]];
      continue;
    }
    std::vector<std::string> inputs;
    for (int j : n.inputs) inputs.push_back(name_of[j]);
    OpAttrs attrs = n.attrs;
    if (bn_of[i] >= 0) attrs.bias = true;
    const int k = out.graph.add(n.name, n.op, attrs, inputs);
    Node& dst = out.graph.node(k);
    for (const auto& [name, t] : n.params) dst.params[name] = effective_param(n, overlay, name).clone();
    if (bn_of[i] >= 0) fold_into(dst, nodes[bn_of[i]], overlay);
    out.node_map[i] = k;
    name_of[i] = n.name;
  }
  out.graph.set_output(name_of[g.output()]);
  return out;
}

}  // namespace spade
