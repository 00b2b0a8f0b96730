// Model JSON and weight loading: round trips, the zoo's torchvision/timm names, and clear errors
// for malformed specs, shape mismatches and missing or unexpected keys.
#include <catch2/catch.hpp>

#include <filesystem>

#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "support/test_support.h"

using namespace spade;
using Catch::Matchers::Contains;

namespace {
int64_t trainable_count(const Graph& g) {
  int64_t n = 0;
  for (const Node& node : g.nodes())
    for (const auto& [k, t] : node.params)
      if (is_trainable_param(node.op, k)) n += t.numel();
  return n;
}

const char* kMinimal = R"({
  "format": "spade-model", "version": 1, "input": [3, 8, 8],
  "nodes": [
    {"name": "conv", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3, "padding": 1},
    {"name": "relu", "op": "relu", "inputs": ["conv"]},
    {"name": "pool", "op": "adaptive_avgpool2d", "inputs": ["relu"]},
    {"name": "flat", "op": "flatten", "inputs": ["pool"]},
    {"name": "fc", "op": "linear", "inputs": ["flat"], "in_features": 4, "out_features": 2}
  ]})";
}  // namespace

TEST_CASE("zoo parameter counts match torchvision", "[model]") {
  // torchvision's published parameter counts.
  CHECK(trainable_count(build_zoo_graph("resnet18")) == 11689512);
  CHECK(trainable_count(build_zoo_graph("resnet50")) == 25557032);
  CHECK(trainable_count(build_zoo_graph("resnet152")) == 60192808);
  CHECK(trainable_count(build_zoo_graph("mobilenet_v2")) == 3504872);
  // timm's mobilenetv2_100 is the same network under other names.
  CHECK(trainable_count(build_zoo_graph("mobilenetv2_100")) == 3504872);
  CHECK(trainable_count(build_zoo_graph("cifar_resnet20")) == 269722);
  CHECK(trainable_count(build_zoo_graph("cifar_resnet56")) == 853018);
}

TEST_CASE("timm and torchvision MobileNetV2 compute the same function", "[model]") {
  Graph tv = build_zoo_graph("mobilenet_v2", {10, 0.5});
  random_init(tv, 5);
  for (Node& n : tv.nodes())
    if (n.op == OpKind::BatchNorm2d)
      for (int64_t c = 0; c < n.attrs.in_channels; ++c) n.params["running_var"][c] = 1.f + 0.01f * c;
  Graph timm = build_zoo_graph("mobilenetv2_050", {10, 1.0});
  // Map weights in node order: both graphs hold the same parameterised layers in the same order.
  std::vector<const Node*> a, b;
  for (const Node& n : tv.nodes())
    if (!n.params.empty()) a.push_back(&n);
  for (const Node& n : timm.nodes())
    if (!n.params.empty()) b.push_back(&n);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i)
    for (const auto& [k, t] : a[i]->params) timm.node(timm.at(b[i]->name)).params.at(k) = t.clone();
  tv.input_chw = timm.input_chw = {3, 64, 64};
  Tensor x = test::random_tensor({1, 3, 64, 64}, 9);
  CHECK(test::max_rel_error(forward(timm, x).out(), forward(tv, x).out()) < 1e-5);
  CHECK(timm.find("blocks.1.0.conv_pw") > 0);
  CHECK(timm.find("conv_head") > 0);
}

TEST_CASE("model JSON round trip keeps the graph, preprocessing, labels and weights", "[model]") {
  std::string dir = test::temp_dir();
  LoadOptions lo;
  lo.random_init_seed = 4;
  Model m = load_model("cifar_resnet20", lo);
  save_model(m, dir + "/m.json");
  REQUIRE(std::filesystem::exists(dir + "/m.safetensors"));
  Model back = load_model(dir + "/m.json");
  CHECK(back.graph.size() == m.graph.size());
  CHECK(back.labels == cifar10_labels());
  CHECK(back.preprocess.resize == 32);
  CHECK(back.preprocess.crop == 32);
  CHECK(back.graph.input_chw == m.graph.input_chw);
  Tensor x = test::random_tensor({2, 3, 32, 32}, 1);
  CHECK(test::max_abs_error(forward(back.graph, x).out(), forward(m.graph, x).out()) == 0.0);
  // The JSON refers to its weights relative to itself: it still loads after moving the pair.
  std::filesystem::create_directories(dir + "/moved");
  std::filesystem::rename(dir + "/m.json", dir + "/moved/m.json");
  std::filesystem::rename(dir + "/m.safetensors", dir + "/moved/m.safetensors");
  CHECK(load_model(dir + "/moved/m.json").weights_path == dir + "/moved/m.safetensors");
}

TEST_CASE("a hand-written graph spec parses and runs", "[model]") {
  Model m = parse_model_json(kMinimal, "mini.json");
  CHECK(m.arch == "custom");
  CHECK(m.labels.size() == 2);
  Tensor y = forward(m.graph, test::random_tensor({1, 3, 8, 8}, 2)).out();
  CHECK(y.shape() == Shape{1, 2});
}

TEST_CASE("malformed model JSON gives one clear error naming the file", "[model][errors]") {
  auto fails = [](const std::string& text, const std::string& needle) {
    INFO(text);
    REQUIRE_THROWS_WITH(parse_model_json(text, "bad.json"), Contains("bad.json") && Contains(needle));
    // The file is named once: "bad.json: bad.json: node 0" was a reader's error wrapped again.
    try {
      parse_model_json(text, "bad.json");
    } catch (const Error& e) {
      const std::string m = e.what();
      CHECK(m.find("bad.json", m.find("bad.json") + 1) == std::string::npos);
    }
  };
  fails("{not json", "not valid JSON");
  fails("[1, 2]", "JSON object");
  fails(R"({"format": "other"})", "not a spade model");
  fails(R"({"format": "spade-model", "version": 9})", "version 9");
  fails(R"({"format": "spade-model"})", "needs \"nodes\"");
  fails(R"({"format": "spade-model", "nodes": [{"name": "a", "op": "warp", "inputs": ["input"]}]})", "unknown op");
  // Absurd sizes are refused before anything is allocated.
  // Each field is at most 2^24 (formats/model.h), read before anything else; a parameter made of
  // fields inside that range can still exceed 2^30 elements, which the graph refuses.
  fails(R"({"format": "spade-model", "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3,
            "out_channels": 1000000000000, "kernel": 3}]})",
        "\"out_channels\" must be from 1 to 16777216, got 1000000000000");
  fails(R"({"format": "spade-model", "nodes": [{"name": "f", "op": "flatten", "inputs": ["input"]},
            {"name": "l", "op": "linear", "inputs": ["f"], "in_features": 4611686018427387904, "out_features": 4}]})",
        "\"in_features\" must be from 1 to 16777216");
  fails(R"({"format": "spade-model", "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 1024,
            "out_channels": 16777216, "kernel": 3}]})",
        "more than 2^30 elements");
  fails(R"({"format": "spade-model", "nodes": [{"name": "f", "op": "flatten", "inputs": ["input"]},
            {"name": "l", "op": "linear", "inputs": ["f"], "in_features": 16777216, "out_features": 1024}]})",
        "more than 2^30 elements");
  fails(R"({"format": "spade-model", "nodes": [{"name": "a", "op": "relu", "inputs": ["nope"]}]})", "not an earlier node");
  fails(R"({"format": "spade-model", "nodes": [{"name": "a", "inputs": ["input"]}]})", "node 0 (\"a\"): missing \"op\"");
  fails(R"({"format": "spade-model", "nodes": [{"name": "a", "op": "relu", "inputs": ["input"]},
      {"name": "m", "op": "maxpool2d", "inputs": ["a"], "kernel": 0}]})", "node 1 (\"m\"): \"kernel\"");
  fails(R"({"format": "spade-model", "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4}]})",
        "missing \"kernel\"");
  fails(R"({"format": "spade-model", "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": "3"}]})",
        "\"kernel\"");
  fails(R"({"format": "spade-model", "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3, "groups": 2}]})",
        "not divisible by groups");
  // Shape inconsistency found when the graph is checked: 4 channels into a conv that wants 5.
  fails(R"({"format": "spade-model", "nodes": [
      {"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 1},
      {"name": "d", "op": "conv2d", "inputs": ["c"], "in_channels": 5, "out_channels": 4, "kernel": 1}]})",
        "does not have 5 channels");
  fails(R"({"format": "spade-model", "input": [3, 2, 2], "nodes": [
      {"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 5}]})",
        "smaller than the kernel");
  fails(R"({"format": "spade-model", "arch": "cifar_resnet20", "labels": ["a", "b"]})", "2 labels for 10 classes");
  fails(R"({"format": "spade-model", "nodes": [{"name": "r", "op": "relu", "inputs": ["input"]},
      {"name": "r", "op": "relu", "inputs": ["input"]}]})", "duplicate node name");
}

TEST_CASE("weights are checked by name and shape", "[model][errors]") {
  const std::string dir = test::temp_dir();
  Graph g = build_zoo_graph("cifar_resnet20");
  std::map<std::string, Tensor> w = g.state_dict();

  SECTION("missing keys are listed") {
    w.erase("layer1.0.conv1.weight");
    REQUIRE_THROWS_WITH(g.load_state_dict(w, "w.safetensors"),
                        Contains("w.safetensors") && Contains("missing") && Contains("layer1.0.conv1.weight"));
  }
  SECTION("unexpected keys are listed, num_batches_tracked is not") {
    w["bn1.num_batches_tracked"] = Tensor(Shape{});
    w["extra.weight"] = Tensor({3});
    REQUIRE_THROWS_WITH(g.load_state_dict(w, "w.safetensors"), Contains("unexpected") && Contains("extra.weight"));
  }
  SECTION("shape mismatches name the key and both shapes") {
    w["linear.weight"] = Tensor({100, 64});
    REQUIRE_THROWS_WITH(g.load_state_dict(w, "w.safetensors"),
                        Contains("linear.weight") && Contains("[100, 64]") && Contains("[10, 64]"));
  }
  SECTION("NaN in a weight is refused by name") {
    w["bn1.weight"][3] = NAN;
    REQUIRE_THROWS_WITH(g.load_state_dict(w, "w.safetensors"), Contains("bn1.weight") && Contains("NaN"));
  }
  SECTION("the class count is taken from the weights of a built-in architecture") {
    Graph g100 = build_zoo_graph("cifar_resnet20", {100});
    std::vector<std::pair<std::string, Tensor>> t;
    for (const auto& [k, v] : g100.parameters()) t.emplace_back(k, *v);
    save_safetensors(dir + "/c100.safetensors", t);
    LoadOptions lo;
    lo.weights = dir + "/c100.safetensors";
    Model m = load_model("cifar_resnet20", lo);
    CHECK(m.graph.node(m.graph.output()).attrs.out_channels == 100);
    CHECK(m.labels.size() == 100);
  }
  SECTION("unknown architectures list the built-in ones") {
    REQUIRE_THROWS_WITH(load_model("resnet7"), Contains("unknown architecture") && Contains("resnet50"));
  }
}
