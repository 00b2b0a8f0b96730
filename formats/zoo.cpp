#include "formats/zoo.h"

#include <cmath>
#include <iterator>
#include <map>

namespace spade {

namespace {

// Small helpers that append nodes and return the new node's name.
struct Builder {
  Graph g;
  std::string conv(const std::string& name, const std::string& in, int64_t cin, int64_t cout, int64_t k,
                   int64_t stride, int64_t pad, int64_t groups = 1, bool bias = false) {
    return conv(name, in, cin, cout, k, stride, Padding(pad, pad), groups, bias);
  }
  std::string conv(const std::string& name, const std::string& in, int64_t cin, int64_t cout, int64_t k,
                   int64_t stride, const Padding& pad, int64_t groups = 1, bool bias = false) {
    OpAttrs a;
    a.in_channels = cin;
    a.out_channels = cout;
    a.kernel = {k, k};
    a.stride = {stride, stride};
    a.padding = pad;
    a.groups = groups;
    a.bias = bias;
    g.add(name, OpKind::Conv2d, a, {in});
    return name;
  }
  std::string bn(const std::string& name, const std::string& in, int64_t c) {
    OpAttrs a;
    a.in_channels = c;
    g.add(name, OpKind::BatchNorm2d, a, {in});
    return name;
  }
  std::string act(const std::string& name, const std::string& in, OpKind op = OpKind::ReLU) {
    g.add(name, op, OpAttrs{}, {in});
    return name;
  }
  std::string add(const std::string& name, const std::string& a, const std::string& b) {
    g.add(name, OpKind::Add, OpAttrs{}, {a, b});
    return name;
  }
  std::string head(const std::string& in, const std::string& fc, int64_t features, int64_t classes,
                   float dropout = 0.f, const std::string& dropout_name = "") {
    g.add("avgpool", OpKind::AdaptiveAvgPool2d, OpAttrs{}, {in});
    g.add("flatten", OpKind::Flatten, OpAttrs{}, {"avgpool"});
    std::string x = "flatten";
    if (!dropout_name.empty()) {
      OpAttrs d;
      d.p = dropout;
      g.add(dropout_name, OpKind::Dropout, d, {x});
      x = dropout_name;
    }
    OpAttrs l;
    l.in_channels = features;
    l.out_channels = classes;
    l.bias = true;
    g.add(fc, OpKind::Linear, l, {x});
    return fc;
  }
};

// ---- torchvision ResNet ----
Graph resnet(const std::vector<int>& blocks, bool bottleneck, const ZooOptions& opt) {
  Builder b;
  const int64_t base = std::max<int64_t>(1, std::llround(64 * opt.width));
  const int64_t exp = bottleneck ? 4 : 1;
  std::string x = b.conv("conv1", "input", 3, base, 7, 2, 3);
  x = b.bn("bn1", x, base);
  x = b.act("relu", x);
  OpAttrs mp;
  mp.kernel = {3, 3};
  mp.stride = {2, 2};
  mp.padding = {1, 1};
  b.g.add("maxpool", OpKind::MaxPool2d, mp, {x});
  x = "maxpool";
  int64_t inplanes = base;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = base << s;
    for (int i = 0; i < blocks[s]; ++i) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(i) + ".";
      const int64_t stride = (s > 0 && i == 0) ? 2 : 1;
      std::string shortcut = x;
      if (stride != 1 || inplanes != planes * exp) {
        shortcut = b.conv(p + "downsample.0", x, inplanes, planes * exp, 1, stride, 0);
        shortcut = b.bn(p + "downsample.1", shortcut, planes * exp);
      }
      std::string y;
      if (bottleneck) {
        y = b.conv(p + "conv1", x, inplanes, planes, 1, 1, 0);
        y = b.act(p + "relu1", b.bn(p + "bn1", y, planes));
        y = b.conv(p + "conv2", y, planes, planes, 3, stride, 1);  // v1.5: stride on the 3x3
        y = b.act(p + "relu2", b.bn(p + "bn2", y, planes));
        y = b.conv(p + "conv3", y, planes, planes * exp, 1, 1, 0);
        y = b.bn(p + "bn3", y, planes * exp);
        x = b.act(p + "relu3", b.add(p + "add", y, shortcut));
      } else {
        y = b.conv(p + "conv1", x, inplanes, planes, 3, stride, 1);
        y = b.act(p + "relu1", b.bn(p + "bn1", y, planes));
        y = b.conv(p + "conv2", y, planes, planes, 3, 1, 1);
        y = b.bn(p + "bn2", y, planes);
        x = b.act(p + "relu2", b.add(p + "add", y, shortcut));
      }
      inplanes = planes * exp;
    }
  }
  b.head(x, "fc", inplanes, opt.num_classes > 0 ? opt.num_classes : 1000);
  return std::move(b.g);
}

// ---- CIFAR ResNet (He et al. 2016, option-A shortcuts) ----
Graph cifar_resnet(int depth, const ZooOptions& opt) {
  const int n = (depth - 2) / 6;
  Builder b;
  const int64_t base = std::max<int64_t>(4, std::llround(16 * opt.width));
  std::string x = b.act("relu", b.bn("bn1", b.conv("conv1", "input", 3, base, 3, 1, 1), base));
  int64_t inplanes = base;
  for (int s = 0; s < 3; ++s) {
    const int64_t planes = base << s;
    for (int i = 0; i < n; ++i) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(i) + ".";
      const int64_t stride = (s > 0 && i == 0) ? 2 : 1;
      std::string shortcut = x;
      if (stride != 1 || inplanes != planes) {
        OpAttrs a;
        a.pad_channels = planes / 4;
        a.stride = {stride, stride};
        b.g.add(p + "shortcut", OpKind::ShortcutA, a, {x});
        shortcut = p + "shortcut";
      }
      std::string y = b.conv(p + "conv1", x, inplanes, planes, 3, stride, 1);
      y = b.act(p + "relu1", b.bn(p + "bn1", y, planes));
      y = b.bn(p + "bn2", b.conv(p + "conv2", y, planes, planes, 3, 1, 1), planes);
      x = b.act(p + "relu2", b.add(p + "add", y, shortcut));
      inplanes = planes;
    }
  }
  b.head(x, "linear", inplanes, opt.num_classes > 0 ? opt.num_classes : 10);
  b.g.input_chw = {3, 32, 32};
  return std::move(b.g);
}

// ---- MobileNetV2 ----
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

struct IRSetting {
  int t, c, n, s;
};
const IRSetting kMobileNetV2[] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};

// torchvision's MobileNetV2. The CIFAR variant changes only two strides: the stem's
// (features.0.0) and that of the first block of the second stage (features.2), so a 32x32 input
// reaches the last feature map at 4x4 instead of 1x1. It is the usual recipe of setting those
// strides on a built torchvision model, so whether a block has a residual still follows
// torchvision's own strides: features.2 never gets one, even at widths up to 0.37 where its input
// and output channels are equal (8).
//
// `pad3x3` is the padding of every 3x3 conv: torchvision's 1 on each side, or TensorFlow's "SAME"
// for Google's own weights (mobilenet_v2_tf), which pads its stride-2 convs 0 before and 1 after.
Graph mobilenet_v2_torchvision(const ZooOptions& opt, int64_t stem_stride, int64_t stage2_stride,
                               int64_t default_classes, const Padding& pad3x3 = Padding(1, 1)) {
  Builder b;
  const double w = opt.width;
  int64_t cin = make_divisible(32 * w);
  const int64_t last = make_divisible(1280 * std::max(1.0, w));
  std::string x = b.conv("features.0.0", "input", 3, cin, 3, stem_stride, pad3x3);
  x = b.act("features.0.2", b.bn("features.0.1", x, cin), OpKind::ReLU6);
  int f = 1;
  for (size_t stage = 0; stage < std::size(kMobileNetV2); ++stage) {
    const IRSetting& st = kMobileNetV2[stage];
    const int64_t cout = make_divisible(st.c * w);
    const int64_t first_stride = stage == 1 ? stage2_stride : st.s;
    for (int i = 0; i < st.n; ++i, ++f) {
      const std::string p = "features." + std::to_string(f) + ".conv.";
      const int64_t stride = i == 0 ? first_stride : 1;
      const int64_t torchvision_stride = i == 0 ? st.s : 1;
      const int64_t hidden = std::llround(cin * st.t);
      std::string y = x;
      int j = 0;
      if (st.t != 1) {
        const std::string q = p + std::to_string(j++) + ".";
        y = b.act(q + "2", b.bn(q + "1", b.conv(q + "0", y, cin, hidden, 1, 1, 0), hidden), OpKind::ReLU6);
      }
      const std::string q = p + std::to_string(j++) + ".";
      y = b.conv(q + "0", y, hidden, hidden, 3, stride, pad3x3, hidden);
      y = b.act(q + "2", b.bn(q + "1", y, hidden), OpKind::ReLU6);
      y = b.conv(p + std::to_string(j), y, hidden, cout, 1, 1, 0);
      y = b.bn(p + std::to_string(j + 1), y, cout);
      if (torchvision_stride == 1 && cin == cout) y = b.add("features." + std::to_string(f) + ".add", y, x);
      x = y;
      cin = cout;
    }
  }
  const std::string q = "features." + std::to_string(f) + ".";
  x = b.act(q + "2", b.bn(q + "1", b.conv(q + "0", x, cin, last, 1, 1, 0), last), OpKind::ReLU6);
  b.head(x, "classifier.1", last, opt.num_classes > 0 ? opt.num_classes : default_classes, 0.2f, "classifier.0");
  return std::move(b.g);
}

// timm's mobilenetv2_* naming: conv_stem/bn1, blocks.i.j.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3},
// conv_head/bn2, classifier. BatchNorm+activation pairs get an activation node "<bn>.act".
Graph mobilenet_v2_timm(const ZooOptions& opt) {
  Builder b;
  const double w = opt.width;
  int64_t cin = make_divisible(32 * w);
  const int64_t last = std::max<int64_t>(1280, make_divisible(1280 * w));
  std::string x = b.conv("conv_stem", "input", 3, cin, 3, 2, 1);
  x = b.act("bn1.act", b.bn("bn1", x, cin), OpKind::ReLU6);
  int stage = 0;
  for (const IRSetting& st : kMobileNetV2) {
    const int64_t cout = make_divisible(st.c * w);
    for (int i = 0; i < st.n; ++i) {
      const std::string p = "blocks." + std::to_string(stage) + "." + std::to_string(i) + ".";
      const int64_t stride = i == 0 ? st.s : 1;
      std::string y = x;
      if (st.t == 1) {  // DepthwiseSeparableConv
        y = b.conv(p + "conv_dw", y, cin, cin, 3, stride, 1, cin);
        y = b.act(p + "bn1.act", b.bn(p + "bn1", y, cin), OpKind::ReLU6);
        y = b.bn(p + "bn2", b.conv(p + "conv_pw", y, cin, cout, 1, 1, 0), cout);
      } else {
        const int64_t mid = make_divisible(cin * st.t);
        y = b.conv(p + "conv_pw", y, cin, mid, 1, 1, 0);
        y = b.act(p + "bn1.act", b.bn(p + "bn1", y, mid), OpKind::ReLU6);
        y = b.conv(p + "conv_dw", y, mid, mid, 3, stride, 1, mid);
        y = b.act(p + "bn2.act", b.bn(p + "bn2", y, mid), OpKind::ReLU6);
        y = b.bn(p + "bn3", b.conv(p + "conv_pwl", y, mid, cout, 1, 1, 0), cout);
      }
      if (stride == 1 && cin == cout) y = b.add(p + "add", y, x);
      x = y;
      cin = cout;
    }
    ++stage;
  }
  x = b.act("bn2.act", b.bn("bn2", b.conv("conv_head", x, cin, last, 1, 1, 0), last), OpKind::ReLU6);
  b.head(x, "classifier", last, opt.num_classes > 0 ? opt.num_classes : 1000);
  return std::move(b.g);
}

const std::map<std::string, std::vector<int>>& resnet_depths() {
  static const std::map<std::string, std::vector<int>> m = {
      {"resnet18", {2, 2, 2, 2}}, {"resnet34", {3, 4, 6, 3}}, {"resnet50", {3, 4, 6, 3}},
      {"resnet101", {3, 4, 23, 3}}, {"resnet152", {3, 8, 36, 3}}};
  return m;
}
const std::map<std::string, int>& cifar_depths() {
  static const std::map<std::string, int> m = {{"cifar_resnet20", 20}, {"cifar_resnet32", 32},
                                               {"cifar_resnet44", 44}, {"cifar_resnet56", 56},
                                               {"cifar_resnet110", 110}};
  return m;
}
const std::map<std::string, double>& timm_mobilenets() {
  static const std::map<std::string, double> m = {
      {"mobilenetv2_050", 0.5}, {"mobilenetv2_075", 0.75}, {"mobilenetv2_100", 1.0}, {"mobilenetv2_140", 1.4}};
  return m;
}

}  // namespace

std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (const auto& [k, v] : resnet_depths()) names.push_back(k);
  names.push_back("mobilenet_v2");
  names.push_back("mobilenet_v2_tf");
  for (const auto& [k, v] : timm_mobilenets()) names.push_back(k);
  for (const auto& [k, v] : cifar_depths()) names.push_back(k);
  names.push_back("cifar_mobilenet_v2");
  return names;
}

bool is_zoo_name(const std::string& arch) {
  for (const std::string& n : zoo_names())
    if (n == arch) return true;
  return false;
}

bool zoo_is_cifar(const std::string& arch) {
  return cifar_depths().count(arch) > 0 || arch == "cifar_mobilenet_v2";
}

std::string zoo_classifier_key(const std::string& arch) {
  if (resnet_depths().count(arch)) return "fc.weight";
  if (cifar_depths().count(arch)) return "linear.weight";
  if (arch == "mobilenet_v2" || arch == "mobilenet_v2_tf" || arch == "cifar_mobilenet_v2") return "classifier.1.weight";
  if (timm_mobilenets().count(arch)) return "classifier.weight";
  return "";
}

Graph build_zoo_graph(const std::string& arch, const ZooOptions& opt) {
  if (!(opt.width > 0 && opt.width <= 16)) throw Error("width multiplier must be in (0, 16]");
  auto r = resnet_depths().find(arch);
  if (r != resnet_depths().end()) {
    bool bottleneck = arch != "resnet18" && arch != "resnet34";
    return resnet(r->second, bottleneck, opt);
  }
  auto c = cifar_depths().find(arch);
  if (c != cifar_depths().end()) return cifar_resnet(c->second, opt);
  if (arch == "mobilenet_v2") return mobilenet_v2_torchvision(opt, 2, 2, 1000);
  if (arch == "mobilenet_v2_tf") return mobilenet_v2_torchvision(opt, 2, 2, 1001, Padding::tf_same());
  if (arch == "cifar_mobilenet_v2") {
    Graph g = mobilenet_v2_torchvision(opt, 1, 1, 10);
    g.input_chw = {3, 32, 32};
    return g;
  }
  auto t = timm_mobilenets().find(arch);
  if (t != timm_mobilenets().end()) {
    ZooOptions o = opt;
    o.width = t->second * opt.width;
    return mobilenet_v2_timm(o);
  }
  std::string known;
  for (const std::string& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown architecture \"" + arch + "\" (built-in: " + known + "; or give a model .json file)");
}

}  // namespace spade
