#include "interpret/spade/layers.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "formats/file_io.h"

namespace spade::interp {

namespace {

// "layer4.1" matches "layer4.1" and "layer4.1.conv2" but not "layer4.10".
bool prefix_matches(const std::string& prefix, const std::string& name) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  return name.size() == prefix.size() || name[prefix.size()] == '.';
}

void check_target(double s, const std::string& what) {
  if (!(s >= 0.0 && s <= 1.0)) {
    std::ostringstream os;
    os << what << ": sparsity " << s << " is outside [0, 1]";
    throw Error(os.str());
  }
}

}  // namespace

std::vector<PrunableLayer> conv_and_linear_layers(const Graph& g) {
  std::vector<PrunableLayer> out;
  for (int i = 0; i < g.size(); ++i) {
    const Node& n = g.node(i);
    if (n.op != OpKind::Conv2d && n.op != OpKind::Linear) continue;
    PrunableLayer l;
    l.node = i;
    l.name = n.name;
    l.weight_key = n.name + ".weight";
    l.conv = n.op == OpKind::Conv2d;
    const OpAttrs& a = n.attrs;
    if (l.conv) {
      l.groups = a.groups;
      l.kernel_area = a.kernel[0] * a.kernel[1];
      l.rows = a.out_channels / a.groups;
      l.cols = a.in_channels / a.groups * l.kernel_area;
      l.depthwise = a.groups > 1 && a.groups == a.in_channels;
      l.stem = n.inputs.size() == 1 && g.node(n.inputs[0]).op == OpKind::Input;
    } else {
      l.rows = a.out_channels;
      l.cols = a.in_channels;
    }
    out.push_back(l);
  }
  return out;
}

SparsitySchedule SparsitySchedule::uniform(double s) {
  check_target(s, "--sparsity");
  SparsitySchedule r;
  r.default_ = s;
  std::ostringstream os;
  os << s;
  r.source_ = os.str();
  return r;
}

SparsitySchedule SparsitySchedule::from_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(source + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || j.empty())
    throw Error(source + ": expected a JSON object mapping layer-name prefixes to sparsities, e.g. {\"fc\": 0.95}");
  SparsitySchedule r;
  r.source_ = source;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_number())
      throw Error(source + ": the value of \"" + it.key() + "\" is not a number");
    const double s = it.value().get<double>();
    check_target(s, source + ": \"" + it.key() + "\"");
    if (it.key() == "default")
      r.default_ = s;
    else
      r.prefixes_[it.key()] = s;
  }
  return r;
}

SparsitySchedule SparsitySchedule::parse(const std::string& arg) {
  if (arg.empty()) throw Error("--sparsity: empty value");
  char* end = nullptr;
  const double v = std::strtod(arg.c_str(), &end);
  if (end && *end == '\0') return uniform(v);
  std::vector<uint8_t> bytes = read_file(arg);
  return from_json(std::string(bytes.begin(), bytes.end()), arg);
}

double SparsitySchedule::target(const std::string& layer) const {
  size_t best = 0;
  double s = default_;
  bool found = false;
  for (const auto& [prefix, value] : prefixes_)
    if (prefix_matches(prefix, layer) && (!found || prefix.size() > best)) {
      best = prefix.size();
      s = value;
      found = true;
    }
  return s;
}

std::string SparsitySchedule::describe() const { return source_; }

std::vector<PlannedLayer> plan_layers(const Graph& g, const SparsitySchedule& s, const LayerSelection& sel) {
  std::vector<PrunableLayer> all = conv_and_linear_layers(g);
  std::vector<PlannedLayer> out;
  for (const auto& l : all) {
    if (l.stem && !sel.include_stem) continue;
    if (l.depthwise && !sel.include_depthwise) continue;
    out.push_back({l, s.target(l.name)});
  }
  for (const auto& [prefix, value] : s.prefixes()) {
    bool selectable = false, any = false;
    for (const auto& p : out) selectable |= prefix_matches(prefix, p.layer.name);
    for (const auto& l : all) any |= prefix_matches(prefix, l.name);
    if (selectable) continue;
    if (any)
      throw Error(s.describe() + ": \"" + prefix +
                  "\" names only the stem or depthwise convs, which are not pruned by default "
                  "(add --include-stem or --include-depthwise)");
    throw Error(s.describe() + ": \"" + prefix + "\" matches no conv or linear layer of the model");
  }
  return out;
}

}  // namespace spade::interp
