#pragma once
// Backward rules. The executor's backward pass asks, node by node, for the gradients with
// respect to the node's inputs (and parameters). The plain gradient is the default rule; a
// RuleSet replaces it for chosen op kinds or single nodes (guided backprop, deconvnet, DeepLift
// rescale, LRP) without copying the network.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace spade {

// Parameter replacements by state_dict key (a SPADE trace overlays pruned weights this way).
using WeightOverlay = std::map<std::string, Tensor>;
// The same replacements on `device`.
WeightOverlay overlay_to(const WeightOverlay& overlay, Device device);

struct BackwardContext {
  const Node& node;
  std::vector<const Tensor*> inputs;  // the node's forward inputs
  const Tensor& output;               // the node's forward output
  const Tensor& grad_output;          // d(objective) / d(output)
  const WeightOverlay* overlay = nullptr;
  bool train = false;                 // the forward pass ran in train mode
  uint64_t seed = 0;                  // the forward pass's dropout seed for this node
  std::vector<bool> need_input_grad;  // per input
  bool need_param_grads = false;

  // The parameter the forward pass used (the overlay's if it has one).
  const Tensor& param(const std::string& name) const;
  bool has_param(const std::string& name) const { return node.params.count(name) > 0; }
};

struct BackwardOutputs {
  std::vector<Tensor> input_grads;             // one per input; leave undefined when not needed
  std::map<std::string, Tensor> param_grads;   // by parameter name within the node ("weight")
};

using BackwardRule = std::function<void(const BackwardContext&, BackwardOutputs&)>;

// The exact gradient of every op (the default rule).
void gradient_rule(const BackwardContext& ctx, BackwardOutputs& out);

class RuleSet {
 public:
  void set(OpKind op, BackwardRule rule) { by_op_[op] = std::move(rule); }
  void set_node(const std::string& node, BackwardRule rule) { by_node_[node] = std::move(rule); }
  // Node-specific rule, else op rule, else nullptr (meaning: the plain gradient).
  const BackwardRule* find(const Node& node) const;
  // Whether every rule works on tensors of any device (written with engine/backend.h). Rules
  // that touch elements on the host are CPU-only, and passes using them run on the CPU.
  void set_runs_on_any_device(bool any) { any_device_ = any; }
  bool runs_on_any_device() const { return any_device_; }

 private:
  std::map<OpKind, BackwardRule> by_op_;
  std::map<std::string, BackwardRule> by_node_;
  bool any_device_ = false;
};

}  // namespace spade
