#include "formats/model.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "formats/file_io.h"
#include "formats/labels.h"
#include "formats/safetensors.h"

namespace spade {

using nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::string> cifar10_labels() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

std::vector<std::string> imagenet_labels() {
  static const char* const kNames[] = {
#include "formats/imagenet_labels.inc"
  };
  return std::vector<std::string>(std::begin(kNames), std::end(kNames));
}

namespace {

std::vector<std::string> numbered_labels(int64_t n) {
  std::vector<std::string> l;
  for (int64_t i = 0; i < n; ++i) l.push_back("class " + std::to_string(i));
  return l;
}

int64_t output_classes(const Graph& g) {
  const Node& out = g.node(g.output());
  return out.op == OpKind::Linear ? out.attrs.out_channels : -1;
}

std::vector<std::string> default_labels(const std::string& arch, int64_t classes) {
  if (zoo_is_cifar(arch) && classes == 10) return cifar10_labels();
  if (!zoo_is_cifar(arch) && classes == 1000) return imagenet_labels();
  if (!zoo_is_cifar(arch) && classes == 1001) {  // TensorFlow's ImageNet models: 0 is "background"
    std::vector<std::string> l{"background"};
    for (const std::string& name : imagenet_labels()) l.push_back(name);
    return l;
  }
  return numbered_labels(classes);
}

// ---- JSON reading with messages that name the file, the node and the field ----
struct Reader {
  std::string path;
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error(path + ": " + where + ": " + what);
  }
  // Every integer of a model file lies in [lo, hi] (by default [0, kMaxModelInteger]), checked
  // before use, so shape arithmetic cannot overflow and a wrapped value is never used.
  int64_t checked_integer(const json& v, const std::string& where, const std::string& what, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(where, what + " must be an integer");
    // JSON's non-negative integers are unsigned: compare them as such before any conversion.
    const bool in = v.is_number_unsigned()
                        ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo
                        : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!in)
      fail(where, what + " must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + v.dump());
    return v.get<int64_t>();
  }
  int64_t integer(const json& j, const std::string& where, const char* key, int64_t def, bool required = false,
                  int64_t lo = 0, int64_t hi = kMaxModelInteger) const {
    if (!j.contains(key)) {
      if (required) fail(where, std::string("missing \"") + key + "\"");
      return def;
    }
    return checked_integer(j.at(key), where, std::string("\"") + key + "\"", lo, hi);
  }
  // A finite number in [lo, hi].
  double number(const json& j, const std::string& where, const char* key, double def, double lo, double hi) const {
    if (!j.contains(key)) return def;
    const json& v = j.at(key);
    if (!v.is_number()) fail(where, std::string("\"") + key + "\" must be a number");
    const double x = v.get<double>();
    if (!(x >= lo && x <= hi)) {
      std::ostringstream range;
      range << "from " << lo << " to " << hi;
      fail(where, std::string("\"") + key + "\" must be " + range.str() + ", got " + v.dump());
    }
    return x;
  }
  bool boolean(const json& j, const std::string& where, const char* key, bool def) const {
    if (!j.contains(key)) return def;
    if (!j.at(key).is_boolean()) fail(where, std::string("\"") + key + "\" must be true or false");
    return j.at(key).get<bool>();
  }
  std::string string(const json& j, const std::string& where, const char* key, const std::string& def,
                     bool required = false) const {
    if (!j.contains(key)) {
      if (required) fail(where, std::string("missing \"") + key + "\"");
      return def;
    }
    if (!j.at(key).is_string()) fail(where, std::string("\"") + key + "\" must be a string");
    return j.at(key).get<std::string>();
  }
  // A pair like [3, 3]; a single integer means both.
  std::array<int64_t, 2> pair(const json& j, const std::string& where, const char* key, std::array<int64_t, 2> def,
                              int64_t lo) const {
    if (!j.contains(key)) return def;
    const json& v = j.at(key);
    const std::string what = std::string("\"") + key + "\"";
    if (v.is_number_integer()) {
      const int64_t x = checked_integer(v, where, what, lo, kMaxModelInteger);
      return {x, x};
    }
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer())
      fail(where, what + " must be an integer or an array of 2 integers");
    return {checked_integer(v[0], where, what, lo, kMaxModelInteger), checked_integer(v[1], where, what, lo, kMaxModelInteger)};
  }
  // "padding": an integer (every side), [ph, pw] (PyTorch's: top = bottom = ph, left = right =
  // pw), [top, left, bottom, right], or "same" (TensorFlow's rule, resolved per input size).
  Padding padding(const json& j, const std::string& where) const {
    if (!j.contains("padding")) return {};
    const json& v = j.at("padding");
    if (v.is_string()) {
      if (v.get<std::string>() != "same") fail(where, "\"padding\" must be \"same\" when it is a string");
      return Padding::tf_same();
    }
    if (v.is_array() && v.size() == 4) {
      for (const json& e : v)
        if (!e.is_number_integer())
          fail(where, "\"padding\" must be an integer, [ph, pw], [top, left, bottom, right] or \"same\"");
      auto side = [&](const json& e) { return checked_integer(e, where, "\"padding\"", 0, kMaxModelInteger); };
      return {side(v[0]), side(v[1]), side(v[2]), side(v[3])};
    }
    if (!v.is_number_integer() && !(v.is_array() && v.size() == 2))
      fail(where, "\"padding\" must be an integer, [ph, pw], [top, left, bottom, right] or \"same\"");
    const std::array<int64_t, 2> p = pair(j, where, "padding", {0, 0}, 0);
    return {p[0], p[1]};
  }
  std::array<float, 3> triple(const json& j, const std::string& where, const char* key, std::array<float, 3> def,
                              double lo, double hi) const {
    if (!j.contains(key)) return def;
    const json& v = j.at(key);
    if (!v.is_array() || v.size() != 3) fail(where, std::string("\"") + key + "\" must be an array of 3 numbers");
    std::array<float, 3> out;
    for (int i = 0; i < 3; ++i) {
      const double x = v[i].is_number() ? v[i].get<double>() : NAN;
      if (!(x >= lo && x <= hi)) {
        std::ostringstream range;
        range << "from " << lo << " to " << hi;
        fail(where, std::string("\"") + key + "\" must be an array of 3 numbers " + range.str() + ", got " + v.dump());
      }
      out[i] = static_cast<float>(x);
    }
    return out;
  }
};

OpAttrs read_attrs(const Reader& r, const json& j, OpKind op, const std::string& where) {
  OpAttrs a;
  switch (op) {
    case OpKind::Conv2d:
      a.in_channels = r.integer(j, where, "in_channels", 0, true, 1);
      a.out_channels = r.integer(j, where, "out_channels", 0, true, 1);
      a.kernel = r.pair(j, where, "kernel", {0, 0}, 1);
      if (!j.contains("kernel")) r.fail(where, "missing \"kernel\"");
      a.stride = r.pair(j, where, "stride", {1, 1}, 1);
      a.padding = r.padding(j, where);
      a.dilation = r.pair(j, where, "dilation", {1, 1}, 1);
      a.groups = r.integer(j, where, "groups", 1, false, 1);
      a.bias = r.boolean(j, where, "bias", false);
      break;
    case OpKind::BatchNorm2d:
      a.in_channels = r.integer(j, where, "num_features", 0, true, 1);
      a.eps = static_cast<float>(r.number(j, where, "eps", 1e-5, 1e-30, 1.0));
      a.momentum = static_cast<float>(r.number(j, where, "momentum", 0.1, 0.0, 1.0));
      break;
    case OpKind::Linear:
      a.in_channels = r.integer(j, where, "in_features", 0, true, 1);
      a.out_channels = r.integer(j, where, "out_features", 0, true, 1);
      a.bias = r.boolean(j, where, "bias", true);
      break;
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d:
      a.kernel = r.pair(j, where, "kernel", {0, 0}, 1);
      if (!j.contains("kernel")) r.fail(where, "missing \"kernel\"");
      a.stride = r.pair(j, where, "stride", a.kernel, 1);
      a.padding = r.padding(j, where);
      a.ceil_mode = r.boolean(j, where, "ceil_mode", false);
      a.count_include_pad = r.boolean(j, where, "count_include_pad", true);
      break;
    case OpKind::Dropout:
      a.p = static_cast<float>(r.number(j, where, "p", 0.5, 0.0, 1.0));
      break;
    case OpKind::ShortcutA:
      a.pad_channels = r.integer(j, where, "pad_channels", 0, true);
      a.stride = r.pair(j, where, "stride", {2, 2}, 1);
      break;
    default:
      break;
  }
  return a;
}

json attrs_json(const Node& n) {
  const OpAttrs& a = n.attrs;
  json j;
  auto pair = [](const std::array<int64_t, 2>& p) { return json::array({p[0], p[1]}); };
  auto padding = [](const Padding& p) -> json {
    if (p.same) return "same";
    if (p.symmetric()) return json::array({p.top, p.left});
    return json::array({p.top, p.left, p.bottom, p.right});
  };
  switch (n.op) {
    case OpKind::Conv2d:
      j["in_channels"] = a.in_channels;
      j["out_channels"] = a.out_channels;
      j["kernel"] = pair(a.kernel);
      j["stride"] = pair(a.stride);
      j["padding"] = padding(a.padding);
      j["dilation"] = pair(a.dilation);
      j["groups"] = a.groups;
      j["bias"] = a.bias;
      break;
    case OpKind::BatchNorm2d:
      j["num_features"] = a.in_channels;
      j["eps"] = a.eps;
      j["momentum"] = a.momentum;
      break;
    case OpKind::Linear:
      j["in_features"] = a.in_channels;
      j["out_features"] = a.out_channels;
      j["bias"] = a.bias;
      break;
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d:
      j["kernel"] = pair(a.kernel);
      j["stride"] = pair(a.stride);
      j["padding"] = padding(a.padding);
      j["ceil_mode"] = a.ceil_mode;
      if (n.op == OpKind::AvgPool2d) j["count_include_pad"] = a.count_include_pad;
      break;
    case OpKind::Dropout:
      j["p"] = a.p;
      break;
    case OpKind::ShortcutA:
      j["pad_channels"] = a.pad_channels;
      j["stride"] = pair(a.stride);
      break;
    default:
      break;
  }
  return j;
}

void load_weights_into(Model& m, const std::string& path) {
  std::map<std::string, Tensor> w = load_safetensors(path);
  m.graph.load_state_dict(w, path);
  m.weights_path = path;
}

}  // namespace

Model make_zoo_model(const std::string& arch, const ZooOptions& opt) {
  Model m;
  m.arch = arch;
  m.graph = build_zoo_graph(arch, opt);
  if (zoo_is_cifar(arch)) {
    // A no-op on CIFAR's own 32x32 images; brings any other picture to the size the model knows.
    m.preprocess.resize = 32;
    m.preprocess.crop = 32;
  } else {
    m.preprocess.resize = 256;
    m.preprocess.crop = 224;
  }
  if (arch == "mobilenet_v2_tf") {  // TF-slim's inception preprocessing: pixels to [-1, 1]
    m.preprocess.mean = {0.5f, 0.5f, 0.5f};
    m.preprocess.std = {0.5f, 0.5f, 0.5f};
  }
  m.labels = default_labels(arch, output_classes(m.graph));
  return m;
}

Model parse_model_json(const std::string& text, const std::string& path) {
  Reader r{path};
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object()) throw Error(path + ": a model file must be a JSON object");
  if (j.value("format", std::string()) != "spade-model")
    throw Error(path + ": not a spade model file (\"format\" must be \"spade-model\")");
  const int64_t version = r.integer(j, "header", "version", 1);
  if (version != 1) throw Error(path + ": unsupported model format version " + std::to_string(version));

  Model m;
  m.source = path;
  m.arch = r.string(j, "header", "arch", "custom");
  if (j.contains("nodes")) {
    const json& nodes = j.at("nodes");
    if (!nodes.is_array() || nodes.empty()) throw Error(path + ": \"nodes\" must be a non-empty array");
    m.graph = Graph();
    for (size_t i = 0; i < nodes.size(); ++i) {
      const json& n = nodes[i];
      std::string where = "node " + std::to_string(i);
      if (!n.is_object()) r.fail(where, "must be an object");
      std::string name = r.string(n, where, "name", "", true);
      where += " (\"" + name + "\")";
      // Only the graph's own errors are prefixed here: the reader's already name the file and node.
      const std::string op_text = r.string(n, where, "op", "", true);
      OpKind op;
      try {
        op = op_from_name(op_text);
      } catch (const Error& e) {
        r.fail(where, e.what());
      }
      std::vector<std::string> inputs;
      if (!n.contains("inputs") || !n.at("inputs").is_array()) r.fail(where, "\"inputs\" must be an array of node names");
      for (const json& in : n.at("inputs")) {
        if (!in.is_string()) r.fail(where, "\"inputs\" must be an array of node names");
        inputs.push_back(in.get<std::string>());
      }
      const OpAttrs attrs = read_attrs(r, n, op, where);
      try {
        m.graph.add(name, op, attrs, inputs);
      } catch (const Error& e) {
        throw Error(path + ": " + e.what());
      }
    }
    if (j.contains("output")) {
      try {
        m.graph.set_output(r.string(j, "header", "output", ""));
      } catch (const Error& e) {
        throw Error(path + ": \"output\": " + e.what());
      }
    }
  } else if (is_zoo_name(m.arch)) {
    ZooOptions zo;
    zo.num_classes = r.integer(j, "header", "num_classes", -1, false, 1);
    zo.width = r.number(j, "header", "width", 1.0, 0.01, 16.0);
    try {
      m.graph = make_zoo_model(m.arch, zo).graph;
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  } else {
    throw Error(path + ": needs \"nodes\" or a built-in \"arch\"");
  }
  if (j.contains("input")) {
    const json& in = j.at("input");
    if (!in.is_array() || in.size() != 3) throw Error(path + ": \"input\" must be [channels, height, width]");
    for (int d = 0; d < 3; ++d) {
      m.graph.input_chw[d] = r.checked_integer(in[d], "input", d == 0 ? "channels" : "a side", 1,
                                               d == 0 ? kMaxModelInteger : kMaxModelSide);
    }
  } else if (zoo_is_cifar(m.arch)) {
    m.graph.input_chw = {3, 32, 32};
  }
  try {
    m.graph.infer_shapes(1);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }

  Model defaults = is_zoo_name(m.arch) ? make_zoo_model(m.arch, {}) : Model{};
  m.preprocess = defaults.preprocess;
  if (j.contains("preprocess")) {
    const json& p = j.at("preprocess");
    if (!p.is_object()) throw Error(path + ": \"preprocess\" must be an object");
    // Sides bound what preprocessing allocates (a 4096-pixel crop is 200 MB of floats); mean and std
    // bound the normalised values, so a huge mean is refused here, not blamed on an image.
    m.preprocess.resize = static_cast<int>(r.integer(p, "preprocess", "resize", m.preprocess.resize, false, 0, kMaxModelSide));
    m.preprocess.crop = static_cast<int>(r.integer(p, "preprocess", "crop", m.preprocess.crop, false, 0, kMaxModelSide));
    m.preprocess.mean = r.triple(p, "preprocess", "mean", m.preprocess.mean, -1e4, 1e4);
    m.preprocess.std = r.triple(p, "preprocess", "std", m.preprocess.std, 1e-6, 1e4);
  }
  const int64_t classes = output_classes(m.graph);
  if (j.contains("labels")) {
    const json& l = j.at("labels");
    if (!l.is_array()) throw Error(path + ": \"labels\" must be an array of strings");
    for (const json& s : l) {
      if (!s.is_string()) throw Error(path + ": \"labels\" must be an array of strings");
      m.labels.push_back(s.get<std::string>());
    }
    if (classes > 0 && static_cast<int64_t>(m.labels.size()) != classes)
      throw Error(path + ": " + std::to_string(m.labels.size()) + " labels for " + std::to_string(classes) +
                  " classes");
  } else {
    m.labels = default_labels(m.arch, classes);
  }
  if (j.contains("label_ids")) {
    const json& l = j.at("label_ids");
    if (!l.is_array() || l.size() != m.labels.size())
      throw Error(path + ": \"label_ids\" must be an array of " + std::to_string(m.labels.size()) +
                  " strings (one per label; \"\" for none)");
    for (const json& s : l) {
      if (!s.is_string()) throw Error(path + ": \"label_ids\" must be an array of strings");
      m.label_ids.push_back(s.get<std::string>());
    }
  }
  std::string weights = r.string(j, "header", "weights", "");
  if (!weights.empty()) m.weights_path = join_path(parent_dir(path), weights);
  return m;
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

Model load_model(const std::string& model, const LoadOptions& opt) {
  Model m;
  if (ends_with(model, ".json")) {
    m = parse_model_json(read_text_file(model), model);
    std::string w = opt.weights.empty() ? m.weights_path : opt.weights;
    m.weights_path.clear();
    if (!w.empty()) load_weights_into(m, w);
  } else if (is_zoo_name(model)) {
    ZooOptions zo = opt.zoo;
    std::unique_ptr<SafetensorsFile> file;
    if (!opt.weights.empty() && zo.num_classes < 0) {
      // Take the class count from the weights so fine-tuned heads load without extra flags.
      file = std::make_unique<SafetensorsFile>(opt.weights);
      std::string key = zoo_classifier_key(model);
      if (file->contains(key) && file->entry(key).shape.size() == 2) zo.num_classes = file->entry(key).shape[0];
    }
    m = make_zoo_model(model, zo);
    if (!opt.weights.empty()) load_weights_into(m, opt.weights);
  } else if (fs::exists(model)) {
    throw Error(model + ": a model must be a .json model file or a built-in architecture name");
  } else {
    build_zoo_graph(model);  // throws the "unknown architecture" message listing the built-ins
  }
  m.source = model;
  if (!opt.labels_file.empty()) apply_labels_file(m, opt.labels_file);
  if (m.weights_path.empty() && opt.random_init_seed >= 0) random_init(m.graph, opt.random_init_seed);
  return m;
}

std::string model_to_json(const Model& m, const std::string& weights_rel) {
  json j;
  j["format"] = "spade-model";
  j["version"] = 1;
  j["arch"] = m.arch;
  j["input"] = json::array({m.graph.input_chw[0], m.graph.input_chw[1], m.graph.input_chw[2]});
  j["preprocess"] = {{"resize", m.preprocess.resize},
                     {"crop", m.preprocess.crop},
                     {"mean", m.preprocess.mean},
                     {"std", m.preprocess.std}};
  j["labels"] = m.labels;
  if (!m.label_ids.empty()) j["label_ids"] = m.label_ids;
  j["weights"] = weights_rel;
  j["output"] = m.graph.node(m.graph.output()).name;
  json nodes = json::array();
  for (int i = 1; i < m.graph.size(); ++i) {
    const Node& n = m.graph.node(i);
    json e = attrs_json(n);
    e["name"] = n.name;
    e["op"] = op_name(n.op);
    json ins = json::array();
    for (int k : n.inputs) ins.push_back(m.graph.node(k).name);
    e["inputs"] = ins;
    nodes.push_back(e);
  }
  j["nodes"] = nodes;
  return j.dump(1) + "\n";
}

void save_model(const Model& m, const std::string& json_path) {
  fs::path p(json_path);
  std::string weights_name = p.stem().string() + ".safetensors";
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [k, t] : m.graph.parameters()) tensors.emplace_back(k, *t);
  // Weights first: a JSON that exists always points at a complete weights file.
  save_safetensors(join_path(parent_dir(json_path), weights_name), tensors,
                   {{"format", "pt"}, {"arch", m.arch}, {"producer", "spade"}});
  write_file_atomic(json_path, model_to_json(m, weights_name));
}

void apply_labels_file(Model& m, const std::string& path) {
  Labels l = read_labels_file(path);
  const int64_t classes = output_classes(m.graph);
  if (classes > 0 && static_cast<int64_t>(l.names.size()) != classes)
    throw Error(path + ": " + std::to_string(l.names.size()) + " labels, but the model " + m.source + " has " +
                std::to_string(classes) + " outputs");
  m.labels = std::move(l.names);
  m.label_ids.clear();
  if (l.has_ids()) m.label_ids = std::move(l.ids);
}

void random_init(Graph& g, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (Node& n : g.nodes()) {
    if (n.op != OpKind::Conv2d && n.op != OpKind::Linear) continue;
    Tensor& w = n.params.at("weight");
    const int64_t fan_in = w.numel() / w.dim(0);
    // kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in); PyTorch uses the same for biases.
    const float bound = 1.f / std::sqrt(static_cast<float>(fan_in));
    std::uniform_real_distribution<float> u(-bound, bound);
    for (int64_t i = 0; i < w.numel(); ++i) w[i] = u(rng);
    auto b = n.params.find("bias");
    if (b != n.params.end())
      for (int64_t i = 0; i < b->second.numel(); ++i) b->second[i] = u(rng);
  }
}

}  // namespace spade
