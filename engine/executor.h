#pragma once
// Runs a Graph forward over a batch and backward from any node's output gradient.
#include <functional>
#include <map>
#include <vector>

#include "engine/graph.h"
#include "engine/rules.h"

namespace spade {

struct ForwardOptions {
  bool train = false;  // BatchNorm uses batch statistics, Dropout drops
  // With train: BatchNorm keeps using (and does not update) its running statistics, as PyTorch's
  // bn.eval() inside model.train() (fine-tuning with frozen statistics); Dropout still drops.
  bool freeze_batchnorm = false;
  // Keep every node's output (needed for backward). When false, outputs are freed as soon as
  // their last consumer ran, except the graph output and the nodes in `keep`.
  bool keep_activations = true;
  std::vector<int> keep;
  const WeightOverlay* overlay = nullptr;
  uint64_t seed = 0;  // dropout masks
  // Called after each node with (node index, its inputs, its output): a capture hook for
  // statistics such as SPADE's Hessians, with nothing extra kept in memory.
  std::function<void(int, const std::vector<const Tensor*>&, const Tensor&)> hook;
};

struct ForwardResult {
  std::vector<Tensor> acts;  // per node; undefined where freed
  int output = 0;
  bool train = false;
  bool freeze_batchnorm = false;
  uint64_t seed = 0;
  const WeightOverlay* overlay = nullptr;
  // Whether `node` ran (and so differentiates) in train mode.
  bool node_train(const Node& node) const { return train && !(freeze_batchnorm && node.op == OpKind::BatchNorm2d); }
  const Tensor& out() const { return acts.at(output); }
};

// Eval-mode or train-mode forward. Train mode updates BatchNorm running statistics only
// through forward_train.
ForwardResult forward(const Graph& g, const Tensor& x, const ForwardOptions& opt = {});
ForwardResult forward_train(Graph& g, const Tensor& x, ForwardOptions opt = {});

struct BackwardOptions {
  bool input_grad = true;            // d/d input
  bool param_grads = false;          // d/d every parameter upstream of the start node
  std::vector<int> activation_grads; // d/d these nodes' outputs
  const RuleSet* rules = nullptr;    // nullptr: plain gradient everywhere
};

struct BackwardResult {
  Tensor input_grad;
  std::map<int, Tensor> activation_grads;
  std::map<std::string, Tensor> param_grads;  // by state_dict key
};

// Back-propagates grad_output, the gradient with respect to node `from`'s output, through the
// graph recorded in `fwd` (which must have kept its activations).
BackwardResult backward(const Graph& g, const ForwardResult& fwd, int from, const Tensor& grad_output,
                        const BackwardOptions& opt = {});
// The same from several nodes at once: the gradient of a sum of functions of their outputs
// (grad_outputs maps a node to d(objective)/d(its output)).
BackwardResult backward(const Graph& g, const ForwardResult& fwd, const std::map<int, Tensor>& grad_outputs,
                        const BackwardOptions& opt = {});

// One-hot output gradient for a (N, classes) output: 1 at (n, targets[n]).
Tensor one_hot_grad(const Shape& logits_shape, const std::vector<int64_t>& targets);

}  // namespace spade
