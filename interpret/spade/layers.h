#pragma once
// Which layers SPADE prunes and with what target (SPADE.md 2.2, 2.5).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace spade::interp {

// A Conv2d or Linear node seen as the matrix SPADE solves for: per group, rows = output channels
// of the group, cols = input channels of the group * kh * kw (PyTorch's weight.flatten(1) order).
struct PrunableLayer {
  int node = -1;
  std::string name;        // "layer1.0.conv1"
  std::string weight_key;  // "layer1.0.conv1.weight"
  bool conv = false;       // else Linear
  int64_t groups = 1;
  int64_t rows = 0;        // per group
  int64_t cols = 0;        // per group
  int64_t kernel_area = 1; // kh * kw (1 for Linear)
  bool stem = false;       // a conv fed directly by the network input
  bool depthwise = false;  // groups == in_channels > 1
};

// Every Conv2d and Linear node, in graph order.
std::vector<PrunableLayer> conv_and_linear_layers(const Graph& g);

// Per-layer targets: one uniform value, or prefixes of layer names (matched at '.' boundaries,
// the longest wins) like the paper's per-block dictionaries.
class SparsitySchedule {
 public:
  static SparsitySchedule uniform(double s);
  // A JSON object {"layer4.1": 0.95, "fc": 0.99, ...}; "default" sets the target of layers no
  // prefix matches (else they stay dense). `source` names the file in errors.
  static SparsitySchedule from_json(const std::string& text, const std::string& source);
  // A number ("0.9") or the path of such a JSON file.
  static SparsitySchedule parse(const std::string& arg);

  double target(const std::string& layer) const;
  const std::map<std::string, double>& prefixes() const { return prefixes_; }
  std::string describe() const;  // "0.9" or the file name
  // The same targets for every layer name (the sources may differ).
  bool same_targets(const SparsitySchedule& o) const { return default_ == o.default_ && prefixes_ == o.prefixes_; }

 private:
  double default_ = 0.0;
  std::map<std::string, double> prefixes_;
  std::string source_;
};

struct LayerSelection {
  bool include_stem = false;
  bool include_depthwise = false;
};

struct PlannedLayer {
  PrunableLayer layer;
  double target = 0.0;
};

// The layers to prune: every conv and linear except the stem (and depthwise convs) unless asked,
// with their targets. Every schedule prefix must name at least one selectable layer (a typo is
// an error, not a silently dense layer).
std::vector<PlannedLayer> plan_layers(const Graph& g, const SparsitySchedule& s, const LayerSelection& sel);

}  // namespace spade::interp
