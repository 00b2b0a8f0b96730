#pragma once
// Built-in architectures whose node and parameter names are the torchvision (or timm) state_dict
// keys, so downloaded weights load directly.
#include <string>
#include <vector>

#include "engine/graph.h"

namespace spade {

struct ZooOptions {
  int64_t num_classes = -1;  // -1: the architecture's default (1000 ImageNet, 10 CIFAR)
  double width = 1.0;        // ResNet: base width 64*width; MobileNetV2: width multiplier
};

// resnet18/34/50/101/152, mobilenet_v2, mobilenetv2_{050,075,100,140} (timm names),
// mobilenet_v2_tf (torchvision names and layout with TensorFlow's "SAME" padding and 1001 outputs,
// 0 = background: Google's TF-slim ImageNet weights; inputs in [-1, 1]),
// cifar_resnet20/32/44/56/110, cifar_mobilenet_v2 (torchvision MobileNetV2 with the stem and
// features.2 at stride 1, for 32x32 inputs; 10 classes by default).
std::vector<std::string> zoo_names();
bool is_zoo_name(const std::string& arch);
Graph build_zoo_graph(const std::string& arch, const ZooOptions& opt = {});

// Defaults that go with an architecture family.
bool zoo_is_cifar(const std::string& arch);
// The classifier's weight key, used to infer the number of classes from a weights file.
std::string zoo_classifier_key(const std::string& arch);

}  // namespace spade
