#include "engine/graph.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/ops.h"

namespace spade {

namespace {
struct OpSpelling {
  OpKind op;
  const char* name;
};
constexpr OpSpelling kOps[] = {
    {OpKind::Input, "input"},         {OpKind::Conv2d, "conv2d"},
    {OpKind::BatchNorm2d, "batchnorm2d"}, {OpKind::ReLU, "relu"},
    {OpKind::ReLU6, "relu6"},         {OpKind::MaxPool2d, "maxpool2d"},
    {OpKind::AvgPool2d, "avgpool2d"}, {OpKind::AdaptiveAvgPool2d, "adaptive_avgpool2d"},
    {OpKind::Add, "add"},             {OpKind::Linear, "linear"},
    {OpKind::Flatten, "flatten"},     {OpKind::Dropout, "dropout"},
    {OpKind::ShortcutA, "shortcut_a"},
};

int expected_inputs(OpKind op) {
  switch (op) {
    case OpKind::Input: return 0;
    case OpKind::Add: return 2;
    default: return 1;
  }
}
}  // namespace

const char* op_name(OpKind op) {
  for (const auto& s : kOps)
    if (s.op == op) return s.name;
  return "?";
}

OpKind op_from_name(const std::string& name) {
  for (const auto& s : kOps)
    if (name == s.name) return s.op;
  std::string known;
  for (const auto& s : kOps) known += std::string(known.empty() ? "" : ", ") + s.name;
  throw Error("unknown op \"" + name + "\" (known: " + known + ")");
}

bool is_trainable_param(OpKind op, const std::string& param) {
  (void)op;
  return param == "weight" || param == "bias";
}

Graph::Graph() {
  Node in;
  in.name = "input";
  in.op = OpKind::Input;
  nodes_.push_back(in);
  index_["input"] = 0;
}

int Graph::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

int Graph::at(const std::string& name) const {
  int i = find(name);
  if (i < 0) throw Error("no node named \"" + name + "\" in the graph");
  return i;
}

int Graph::add(const std::string& name, OpKind op, const OpAttrs& a, const std::vector<std::string>& inputs) {
  if (name.empty()) throw Error("node with an empty name");
  if (index_.count(name)) throw Error("duplicate node name \"" + name + "\"");
  if (op == OpKind::Input) throw Error("node \"" + name + "\": only one input node is allowed");
  if (static_cast<int>(inputs.size()) != expected_inputs(op))
    throw Error("node \"" + name + "\" (" + op_name(op) + ") takes " + std::to_string(expected_inputs(op)) +
                " input(s), got " + std::to_string(inputs.size()));
  Node n;
  n.name = name;
  n.op = op;
  n.attrs = a;
  for (const std::string& in : inputs) {
    int i = find(in);
    if (i < 0) throw Error("node \"" + name + "\": input \"" + in + "\" is not an earlier node");
    n.inputs.push_back(i);
  }
  auto positive = [&](int64_t v, const char* what) {
    if (v <= 0) throw Error("node \"" + name + "\": " + what + " must be positive, got " + std::to_string(v));
  };
  // Kernel, stride, dilation and padding are bounded by 2^30, so that they combine with sizes
  // without overflow.
  auto geometry = [&](int64_t v, const char* what) {
    positive(v, what);
    if (v > (int64_t(1) << 30)) throw Error("node \"" + name + "\": " + what + " over 2^30");
  };
  // Parameters are allocated here, so absurd sizes (a model file claiming 10^12 channels) are
  // refused before any allocation: at most 2^30 elements (4 GiB) per parameter, the largest
  // layer of any real network being about 10^8.
  auto check_size = [&](std::initializer_list<int64_t> dims) {
    constexpr int64_t kMaxParamElements = int64_t(1) << 30;
    int64_t n = 1;
    for (int64_t d : dims) {
      if (d > kMaxParamElements || n > kMaxParamElements / std::max<int64_t>(d, 1))
        throw Error("node \"" + name + "\": parameters of more than 2^30 elements are refused");
      n *= d;
    }
  };
  switch (op) {
    case OpKind::Conv2d:
      positive(a.in_channels, "in_channels");
      positive(a.out_channels, "out_channels");
      positive(a.groups, "groups");
      for (int d = 0; d < 2; ++d) {
        geometry(a.kernel[d], "kernel");
        geometry(a.stride[d], "stride");
        geometry(a.dilation[d], "dilation");
      }
      for (int64_t pad : {a.padding.top, a.padding.left, a.padding.bottom, a.padding.right}) {
        if (pad < 0) throw Error("node \"" + name + "\": negative padding");
        if (pad > (int64_t(1) << 30)) throw Error("node \"" + name + "\": padding over 2^30");
      }
      if (a.in_channels % a.groups || a.out_channels % a.groups)
        throw Error("node \"" + name + "\": channels " + std::to_string(a.in_channels) + "->" +
                    std::to_string(a.out_channels) + " not divisible by groups " + std::to_string(a.groups));
      check_size({a.out_channels, a.in_channels / a.groups, a.kernel[0], a.kernel[1]});
      n.params["weight"] = Tensor({a.out_channels, a.in_channels / a.groups, a.kernel[0], a.kernel[1]});
      if (a.bias) n.params["bias"] = Tensor({a.out_channels});
      break;
    case OpKind::BatchNorm2d:
      positive(a.in_channels, "num_features");
      check_size({a.in_channels});
      n.params["weight"] = Tensor::full({a.in_channels}, 1.f);
      n.params["bias"] = Tensor({a.in_channels});
      n.params["running_mean"] = Tensor({a.in_channels});
      n.params["running_var"] = Tensor::full({a.in_channels}, 1.f);
      break;
    case OpKind::Linear:
      positive(a.in_channels, "in_features");
      positive(a.out_channels, "out_features");
      check_size({a.out_channels, a.in_channels});
      n.params["weight"] = Tensor({a.out_channels, a.in_channels});
      if (a.bias) n.params["bias"] = Tensor({a.out_channels});
      break;
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d:
      for (int d = 0; d < 2; ++d) {
        geometry(a.kernel[d], "kernel");
        geometry(a.stride[d], "stride");
      }
      // As PyTorch, so that every window holds part of the input ("SAME" padding never exceeds it).
      for (const auto& [pad, k] : {std::pair{a.padding.top, a.kernel[0]}, std::pair{a.padding.bottom, a.kernel[0]},
                                   std::pair{a.padding.left, a.kernel[1]}, std::pair{a.padding.right, a.kernel[1]}})
        if (pad < 0 || 2 * pad > k)
          throw Error("node \"" + name + "\": pool padding must be between 0 and half the kernel");
      if (a.ceil_mode && !a.padding.symmetric())
        throw Error("node \"" + name + "\": ceil_mode needs symmetric padding");
      break;
    case OpKind::Dropout:
      if (!(a.p >= 0.f && a.p < 1.f)) throw Error("node \"" + name + "\": dropout p must be in [0, 1)");
      break;
    case OpKind::ShortcutA:
      if (a.pad_channels < 0) throw Error("node \"" + name + "\": negative pad_channels");
      positive(a.stride[0], "stride");
      break;
    default:
      break;
  }
  int idx = static_cast<int>(nodes_.size());
  nodes_.push_back(std::move(n));
  index_[name] = idx;
  output_ = idx;
  return idx;
}

std::vector<std::pair<std::string, Tensor*>> Graph::parameters() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (Node& n : nodes_)
    for (auto& [k, t] : n.params) out.emplace_back(n.name + "." + k, &t);
  return out;
}

std::vector<std::pair<std::string, const Tensor*>> Graph::parameters() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (const Node& n : nodes_)
    for (const auto& [k, t] : n.params) out.emplace_back(n.name + "." + k, &t);
  return out;
}

Tensor* Graph::find_param(const std::string& key) {
  size_t dot = key.rfind('.');
  if (dot == std::string::npos) return nullptr;
  int i = find(key.substr(0, dot));
  if (i < 0) return nullptr;
  auto it = nodes_[i].params.find(key.substr(dot + 1));
  return it == nodes_[i].params.end() ? nullptr : &it->second;
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string list_some(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 5; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 5) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}
}  // namespace

void Graph::load_state_dict(const std::map<std::string, Tensor>& weights, const std::string& source) {
  std::vector<std::string> missing, unexpected;
  std::set<std::string> used;
  for (auto& [key, t] : parameters()) {
    auto it = weights.find(key);
    if (it == weights.end()) {
      missing.push_back(key);
      continue;
    }
    if (it->second.shape() != t->shape())
      throw Error(source + ": \"" + key + "\" has shape " + shape_str(it->second.shape()) + ", the model expects " +
                  shape_str(t->shape()));
    used.insert(key);
  }
  for (const auto& [key, t] : weights)
    if (!used.count(key) && !ends_with(key, ".num_batches_tracked")) unexpected.push_back(key);
  if (!missing.empty()) throw Error(source + ": missing weights: " + list_some(missing));
  if (!unexpected.empty()) throw Error(source + ": unexpected weights: " + list_some(unexpected));
  for (auto& [key, t] : parameters()) {
    const Tensor& src = weights.at(key);
    for (int64_t i = 0; i < src.numel(); ++i)
      if (!std::isfinite(src[i])) throw Error(source + ": \"" + key + "\" contains NaN or Inf");
    *t = src.clone();
  }
}

std::map<std::string, Tensor> Graph::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const auto& [k, t] : parameters()) out[k] = *t;
  return out;
}

std::vector<Shape> Graph::infer_shapes(int64_t n) const {
  std::vector<Shape> shapes(nodes_.size());
  shapes[0] = {n, input_chw[0], input_chw[1], input_chw[2]};
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const Node& nd = nodes_[i];
    const OpAttrs& a = nd.attrs;
    const Shape& in = shapes[nd.inputs[0]];
    auto fail = [&](const std::string& why) {
      throw Error("node \"" + nd.name + "\" (" + op_name(nd.op) + "): input shape " + shape_str(in) + " " + why);
    };
    auto need4 = [&] {
      if (in.size() != 4) fail("is not 4-D (N,C,H,W)");
    };
    switch (nd.op) {
      case OpKind::Conv2d: {
        need4();
        if (in[1] != a.in_channels) fail("does not have " + std::to_string(a.in_channels) + " channels");
        const kernels::ConvGeom g = conv_geom(nd, in);
        if (g.H + g.pad_top + g.pad_bottom < g.dil_h * (g.R - 1) + 1 ||
            g.W + g.pad_left + g.pad_right < g.dil_w * (g.S - 1) + 1)
          fail("is smaller than the kernel");
        shapes[i] = {in[0], a.out_channels, g.out_h(), g.out_w()};
        break;
      }
      case OpKind::BatchNorm2d:
        need4();
        if (in[1] != a.in_channels) fail("does not have " + std::to_string(a.in_channels) + " channels");
        shapes[i] = in;
        break;
      case OpKind::MaxPool2d:
      case OpKind::AvgPool2d: {
        need4();
        const kernels::PoolGeom g = pool_geom(nd, in);
        if (g.H + g.pad_top + g.pad_bottom < g.kh || g.W + g.pad_left + g.pad_right < g.kw)
          fail("is smaller than the pooling window");
        shapes[i] = {in[0], in[1], g.out_h(), g.out_w()};
        break;
      }
      case OpKind::AdaptiveAvgPool2d:
        need4();
        shapes[i] = {in[0], in[1], 1, 1};
        break;
      case OpKind::Add:
        if (shapes[nd.inputs[1]] != in) fail("differs from the second input's " + shape_str(shapes[nd.inputs[1]]));
        shapes[i] = in;
        break;
      case OpKind::Linear: {
        if (in.size() != 2 || in[1] != a.in_channels)
          fail("is not (N, " + std::to_string(a.in_channels) + ")");
        shapes[i] = {in[0], a.out_channels};
        break;
      }
      case OpKind::Flatten: {
        int64_t rest = 1;
        for (size_t d = 1; d < in.size(); ++d) rest *= in[d];
        shapes[i] = {in[0], rest};
        break;
      }
      case OpKind::ShortcutA: {
        need4();
        const kernels::ShortcutGeom g = shortcut_geom(nd, in);
        shapes[i] = {in[0], g.out_c(), g.out_h(), g.out_w()};
        break;
      }
      default:  // ReLU, ReLU6, Dropout
        shapes[i] = in;
        break;
    }
  }
  return shapes;
}

Graph Graph::to(Device device) const {
  Graph g = *this;
  for (Node& n : g.nodes_)
    for (auto& [name, t] : n.params) t = t.to(device);
  return g;
}

Device Graph::device() const {
  for (const Node& n : nodes_)
    for (const auto& [name, t] : n.params)
      if (t.defined()) return t.device();
  return Device::CPU;
}

}  // namespace spade
