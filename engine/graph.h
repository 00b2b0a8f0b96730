#pragma once
// The network as a list of named nodes in topological order. A node's name is its PyTorch
// module path ("layer1.0.conv1") and its parameters' full names are "<node>.<param>", exactly
// the state_dict keys, so weights load by name. Every activation use is its own node (a
// bottleneck has relu1, relu2, relu3), so backward rules can be chosen per node.
#include <array>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace spade {

enum class OpKind {
  Input,
  Conv2d,
  BatchNorm2d,
  ReLU,
  ReLU6,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,  // output size 1
  Add,
  Linear,
  Flatten,
  Dropout,
  ShortcutA,  // CIFAR ResNet "option A": x[:, :, ::2, ::2] zero-padded by pad channels each side
};

const char* op_name(OpKind op);  // the model-JSON spelling: "conv2d", "batchnorm2d", ...
OpKind op_from_name(const std::string& name);  // throws Error for an unknown op

// The zero padding of a conv or pool: rows and columns added on each side, or TensorFlow's "SAME"
// rule (output = ceil(input / stride), the total padding split with the extra one at the bottom /
// right), which depends on the input size and so is resolved for each input (resolve_padding).
struct Padding {
  int64_t top = 0, left = 0, bottom = 0, right = 0;
  bool same = false;
  Padding() = default;
  Padding(int64_t h, int64_t w) : top(h), left(w), bottom(h), right(w) {}  // PyTorch's [ph, pw]
  Padding(int64_t t, int64_t l, int64_t b, int64_t r) : top(t), left(l), bottom(b), right(r) {}
  static Padding tf_same() {
    Padding p;
    p.same = true;
    return p;
  }
  bool symmetric() const { return !same && top == bottom && left == right; }
  bool operator==(const Padding& o) const {
    return top == o.top && left == o.left && bottom == o.bottom && right == o.right && same == o.same;
  }
};

// Attributes of every op in one plain struct; each op reads the fields it needs.
struct OpAttrs {
  int64_t in_channels = 0;   // Conv2d, BatchNorm2d (num_features), Linear (in_features)
  int64_t out_channels = 0;  // Conv2d, Linear (out_features)
  std::array<int64_t, 2> kernel{1, 1};  // Conv2d, pools
  std::array<int64_t, 2> stride{1, 1};
  Padding padding;                      // Conv2d, pools
  std::array<int64_t, 2> dilation{1, 1};
  int64_t groups = 1;
  bool bias = false;               // Conv2d, Linear
  float eps = 1e-5f;               // BatchNorm2d
  float momentum = 0.1f;           // BatchNorm2d
  bool ceil_mode = false;          // pools
  bool count_include_pad = true;   // AvgPool2d
  float p = 0.f;                   // Dropout
  int64_t pad_channels = 0;        // ShortcutA: zero channels added before and after
};

struct Node {
  std::string name;
  OpKind op = OpKind::Input;
  OpAttrs attrs;
  std::vector<int> inputs;                // indices of earlier nodes
  std::map<std::string, Tensor> params;   // "weight", "bias", "running_mean", "running_var"
};

// Which of a node's parameters a trainer updates (the rest are buffers).
bool is_trainable_param(OpKind op, const std::string& param);

class Graph {
 public:
  Graph();  // starts with the single input node "input" at index 0

  // Adds a node fed by the named nodes; allocates its parameters (zero-filled, with the
  // shapes PyTorch uses) and returns its index.
  int add(const std::string& name, OpKind op, const OpAttrs& attrs,
          const std::vector<std::string>& inputs);
  int find(const std::string& name) const;  // -1 when absent
  int at(const std::string& name) const;    // throws when absent

  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }
  const Node& node(int i) const { return nodes_.at(i); }
  Node& node(int i) { return nodes_.at(i); }
  int size() const { return static_cast<int>(nodes_.size()); }
  int output() const { return output_; }
  void set_output(const std::string& name) { output_ = at(name); }

  // Input shape per image (C, H, W) that the graph is built for; used by info and checks.
  std::array<int64_t, 3> input_chw{3, 224, 224};

  // All parameters in node order with their state_dict keys.
  std::vector<std::pair<std::string, Tensor*>> parameters();
  std::vector<std::pair<std::string, const Tensor*>> parameters() const;
  Tensor* find_param(const std::string& key);

  // Copies weights in by key. Every graph parameter must be present with its exact shape;
  // unknown keys are errors too, except "*.num_batches_tracked". `source` names the file in
  // error messages.
  void load_state_dict(const std::map<std::string, Tensor>& weights, const std::string& source);
  std::map<std::string, Tensor> state_dict() const;

  // A copy of this graph with every parameter and buffer on `device` (the graph a CUDA forward
  // pass runs on; the input must be on the same device).
  Graph to(Device device) const;
  Device device() const;  // where the parameters live (CPU for a graph without any)

  // Output shape of every node for a batch of n images (checks op/shape consistency).
  std::vector<Shape> infer_shapes(int64_t n) const;

 private:
  std::vector<Node> nodes_;
  std::map<std::string, int> index_;
  int output_ = 0;
};

}  // namespace spade
