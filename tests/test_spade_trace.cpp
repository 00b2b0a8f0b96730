// SPADE traces end to end (interpret/spade): which layers are pruned, the sparsity schedule,
// achieved sparsity per layer, untouched layers, determinism, and on real CIFAR-10 weights
// (../shared) that a 50% trace keeps the dense prediction.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "engine/executor.h"
#include "formats/image.h"
#include "formats/image_folder.h"
#include "formats/model.h"
#include "formats/zoo.h"
#include "interpret/spade/trace.h"
#include "support/test_support.h"

using namespace spade;
using namespace spade::interp;

namespace {

int64_t count_selected(const Graph& g, const LayerSelection& sel) {
  return static_cast<int64_t>(plan_layers(g, SparsitySchedule::uniform(0.5), sel).size());
}

Model random_cifar_model(uint64_t seed) {
  Model m = make_zoo_model("cifar_resnet20", {});
  random_init(m.graph, seed);
  return m;
}

int64_t zeros(const Tensor& t) {
  int64_t z = 0;
  for (int64_t i = 0; i < t.numel(); ++i) z += t[i] == 0.f;
  return z;
}

int argmax(const Tensor& logits) {
  return static_cast<int>(std::max_element(logits.data(), logits.data() + logits.numel()) - logits.data());
}

}  // namespace

TEST_CASE("layer selection follows the paper", "[spade]") {
  // ResNet-50: every conv and linear but the stem = 53 layers.
  Graph r50 = build_zoo_graph("resnet50", {});
  CHECK(count_selected(r50, {}) == 53);
  CHECK(count_selected(r50, {true, false}) == 54);
  auto plan = plan_layers(r50, SparsitySchedule::uniform(0.9), {});
  CHECK(std::none_of(plan.begin(), plan.end(), [](const PlannedLayer& p) { return p.layer.name == "conv1"; }));
  CHECK(std::any_of(plan.begin(), plan.end(), [](const PlannedLayer& p) { return p.layer.name == "layer1.0.downsample.0"; }));
  CHECK(std::any_of(plan.begin(), plan.end(), [](const PlannedLayer& p) { return p.layer.name == "fc"; }));
  // MobileNetV2: 52 convs + classifier; 17 depthwise, 1 stem.
  Graph mb = build_zoo_graph("mobilenet_v2", {});
  const int64_t all = static_cast<int64_t>(conv_and_linear_layers(mb).size());
  CHECK(all == 53);
  CHECK(count_selected(mb, {}) == all - 17 - 1);
  CHECK(count_selected(mb, {true, false}) == all - 17);
  CHECK(count_selected(mb, {true, true}) == all);
  for (const auto& l : conv_and_linear_layers(mb))
    if (l.depthwise) {
      CHECK(l.groups > 1);
      CHECK(l.cols == 9);
      CHECK(l.rows == 1);
    }
}

TEST_CASE("sparsity schedules: uniform, prefixes at name boundaries, errors", "[spade]") {
  SparsitySchedule u = SparsitySchedule::parse("0.9");
  CHECK(u.target("anything") == 0.9);
  SparsitySchedule s = SparsitySchedule::from_json(R"({"layer4": 0.5, "layer4.1": 0.95, "fc": 0.99})", "s.json");
  CHECK(s.target("layer4.1.conv2") == 0.95);  // longest prefix wins
  CHECK(s.target("layer4.0.conv1") == 0.5);
  CHECK(s.target("layer4.10.conv1") == 0.5);  // "layer4.1" is not a prefix of block 10
  CHECK(s.target("fc") == 0.99);
  CHECK(s.target("layer1.0.conv1") == 0.0);  // unmatched: dense
  CHECK(SparsitySchedule::from_json(R"({"default": 0.3, "fc": 0.9})", "d").target("layer1.0.conv1") == 0.3);

  CHECK(test::error_of([] { SparsitySchedule::parse("1.5"); }).find("outside [0, 1]") != std::string::npos);
  CHECK(test::error_of([] { SparsitySchedule::from_json("[0.5]", "x.json"); }).find("x.json") != std::string::npos);
  CHECK(test::error_of([] { SparsitySchedule::from_json(R"({"fc": "high"})", "x.json"); }).find("not a number") !=
        std::string::npos);
  CHECK(test::error_of([] { SparsitySchedule::from_json("{", "x.json"); }).find("not valid JSON") != std::string::npos);
  CHECK(test::error_of([] { SparsitySchedule::parse("/nonexistent/s.json"); }).find("/nonexistent/s.json") !=
        std::string::npos);
  Graph r50 = build_zoo_graph("resnet50", {});
  CHECK(test::error_of([&] { plan_layers(r50, SparsitySchedule::from_json(R"({"layer5": 0.9})", "t.json"), {}); })
            .find("\"layer5\" matches no conv or linear") != std::string::npos);
  CHECK(test::error_of([&] { plan_layers(r50, SparsitySchedule::from_json(R"({"conv1": 0.9})", "t.json"), {}); })
            .find("--include-stem") != std::string::npos);
}

TEST_CASE("sparsegpt traces hit the target per layer and leave the rest alone", "[spade]") {
  Model m = random_cifar_model(3);
  const Graph& g = m.graph;
  auto calib = tensor_calibration(test::random_tensor({24, 3, 32, 32}, 5, -2.f, 2.f), "random");
  PruneConfig cfg;
  cfg.sparsity = SparsitySchedule::from_json(R"({"default": 0.5, "layer1": 0, "linear": 0.9})", "schedule");
  cfg.batch = 10;  // several batches
  Trace t = compute_trace(g, *calib, cfg);
  REQUIRE(t.layers.size() == 18 + 1);  // 18 convs without the stem, and the linear layer
  CHECK(t.samples == 24);
  for (const auto& l : t.layers) {
    INFO(l.name);
    const Tensor& dense = g.node(g.at(l.name)).params.at("weight");
    if (l.name.rfind("layer1.", 0) == 0) {
      CHECK_FALSE(l.pruned);
      CHECK(t.weights.count(l.weight_key) == 0);
      continue;
    }
    REQUIRE(t.weights.count(l.weight_key) == 1);
    const Tensor& w = t.weights.at(l.weight_key);
    CHECK(w.shape() == dense.shape());
    CHECK(zeros(w) == l.zeros);
    // Exactly round(rows * 9 * s) per 9-column block (per input feature for fc).
    const int64_t rows = dense.dim(0), cols = dense.numel() / rows, bs = l.name == "linear" ? 1 : 9;
    CHECK(l.zeros == cols / bs * std::llround(rows * bs * l.target));
    CHECK(l.loss > 0.0);
    CHECK(l.relative_loss > 0.0);
    CHECK(l.relative_loss < 1.0);
  }
  // Biases and BatchNorm never change: the overlay holds conv/linear weights only.
  for (const auto& [key, w] : t.weights) CHECK(key.substr(key.size() - 7) == ".weight");

  SECTION("same inputs, same thread count: the same bits") {
    Trace again = compute_trace(g, *calib, cfg);
    for (const auto& [key, w] : t.weights) CHECK(w.to_vector() == again.weights.at(key).to_vector());
  }
  SECTION("a target of 0 everywhere changes nothing") {
    PruneConfig zero = cfg;
    zero.sparsity = SparsitySchedule::uniform(0.0);
    Trace z = compute_trace(g, *calib, zero);
    CHECK(z.weights.empty());
    ForwardOptions fo;
    fo.overlay = &z.weights;
    Tensor x = calib->batch(0, 2);
    CHECK(forward(g, x, fo).out().to_vector() == forward(g, x).out().to_vector());
  }
}

TEST_CASE("a NaN weight stops the trace at the solve stage and names the layer", "[spade]") {
  // Loading refuses NaN weights; this is the backstop for anything that gets past it: no trace
  // with NaN weights reaches a saliency map.
  Model m = random_cifar_model(3);
  Tensor w = m.graph.node(m.graph.at("linear")).params.at("weight");
  w.data()[5] = NAN;
  auto calib = tensor_calibration(test::random_tensor({8, 3, 32, 32}, 5, -2.f, 2.f), "random");
  for (Solver solver : {Solver::SparseGPT, Solver::OBC}) {
    INFO(solver_name(solver));
    PruneConfig cfg;
    cfg.solver = solver;
    cfg.sparsity = SparsitySchedule::from_json(R"({"default": 0, "linear": 0.5})", "schedule");
    CHECK_THROWS_WITH(compute_trace(m.graph, *calib, cfg),
                      Catch::Contains("layer \"linear\"") && Catch::Contains("solve stage") && Catch::Contains("NaN"));
  }
}

TEST_CASE("obc traces allocate the layer's sparsity over its rows", "[spade][obc]") {
  Model m = random_cifar_model(4);
  auto calib = tensor_calibration(test::random_tensor({12, 3, 32, 32}, 6, -2.f, 2.f), "random");
  PruneConfig cfg;
  cfg.solver = Solver::OBC;
  cfg.sparsity = SparsitySchedule::from_json(R"({"layer3.2": 0.6, "linear": 0.7})", "schedule");
  Trace t = compute_trace(m.graph, *calib, cfg);
  int pruned = 0;
  for (const auto& l : t.layers) {
    if (!l.pruned) continue;
    ++pruned;
    INFO(l.name);
    const int64_t block = l.name == "linear" ? 1 : 9;
    const int64_t blocks = l.weights / block;
    CHECK(l.zeros == static_cast<int64_t>(std::ceil(blocks * l.target - 1e-9)) * block);
    CHECK(l.relative_loss < 1.0);
  }
  CHECK(pruned == 3);  // layer3.2.conv1, layer3.2.conv2, linear
}

TEST_CASE("augmented traces of a real CIFAR-10 ResNet-20 keep the dense prediction", "[spade][shared]") {
  if (!test::shared_available()) {
    WARN("../shared not present: skipping the real-weights trace test");
    return;
  }
  LoadOptions lo;
  lo.weights = test::shared_path("models/cifar10_resnet20.safetensors");
  Model m = load_model("cifar_resnet20", lo);
  ImageFolder test_set(test::shared_path("data/cifar10/test.tar"));
  AugmentConfig ac;
  ac.size = 32;
  ac.mean = m.preprocess.mean;
  ac.std = m.preprocess.std;
  for (size_t i : {0ul, 1234ul, 5678ul}) {
    LabeledImage li = test_set.get(i);
    Image im = decode_image(li.bytes.data(), li.bytes.size(), li.name);
    Tensor x = preprocess_image(im, m.preprocess);
    const int dense = argmax(forward(m.graph, x).out());
    // OBC unstructured: its kh*kw-block variant is structured pruning, with a higher loss.
    for (Solver solver : {Solver::SparseGPT, Solver::OBC}) {
      auto calib = augmented_calibration(im, ac, 128, 0);
      PruneConfig cfg;
      cfg.solver = solver;
      cfg.obc_block = 1;
      cfg.sparsity = SparsitySchedule::uniform(0.5);
      Trace t = compute_trace(m.graph, *calib, cfg);
      ForwardOptions fo;
      fo.overlay = &t.weights;
      INFO(li.name << " solver " << solver_name(solver));
      CHECK(argmax(forward(m.graph, x, fo).out()) == dense);
    }
  }
}

TEST_CASE("the Hessian pass measures each layer's output energy tr(W H W^T)", "[spade]") {
  Model m = random_cifar_model(8);
  auto calib = tensor_calibration(test::random_tensor({6, 3, 32, 32}, 2), "random");
  auto plan = plan_layers(m.graph, SparsitySchedule::uniform(0.5), {});
  TraceTimings t;
  auto hs = collect_hessians(m.graph, plan, *calib, 4, t);
  REQUIRE(hs.size() == plan.size());
  CHECK(t.hessian_flops > 0);
  for (size_t i = 0; i < plan.size(); ++i) {
    hs[i].finalize();
    const PrunableLayer& l = plan[i].layer;
    const Tensor& w = m.graph.node(l.node).params.at("weight");
    const LayerHessian& h = hs[i].hessian();
    CHECK(h.samples == 6);
    double energy = 0.0;
    for (int64_t r = 0; r < l.rows; ++r)
      for (int64_t a = 0; a < l.cols; ++a)
        for (int64_t b = 0; b < l.cols; ++b)
          energy += static_cast<double>(w[r * l.cols + a]) * h.h[a * l.cols + b] * w[r * l.cols + b];
    INFO(l.name);
    CHECK(hs[i].output_energy() == Approx(energy).epsilon(1e-4));
  }
}

TEST_CASE("depthwise convs can be pruned per channel", "[spade]") {
  ZooOptions zo;
  zo.width = 0.25;
  zo.num_classes = 10;
  Graph g = build_zoo_graph("mobilenet_v2", zo);
  random_init(g, 1);
  auto calib = tensor_calibration(test::random_tensor({4, 3, 64, 64}, 3), "random");
  PruneConfig cfg;
  cfg.sparsity = SparsitySchedule::uniform(0.5);
  cfg.selection.include_depthwise = true;
  Trace t = compute_trace(g, *calib, cfg);
  // Taps whose input is zero on every image (a dead ReLU6 channel) are zeroed as dead columns;
  // they count towards the mask, so a channel ends with max(5, dead taps) zeros.
  auto plan = plan_layers(g, cfg.sparsity, cfg.selection);
  TraceTimings timings;
  auto hs = collect_hessians(g, plan, *calib, 4, timings);
  int depthwise = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const PrunableLayer& l = plan[i].layer;
    if (!l.depthwise) continue;
    ++depthwise;
    INFO(l.name);
    REQUIRE(t.weights.count(l.weight_key) == 1);
    const Tensor& w = t.weights.at(l.weight_key);
    hs[i].finalize();
    // One 3x3 kernel per channel, each its own Hessian and mask block: round(9 * 0.5) = 5 zeros.
    for (int64_t c = 0; c < l.groups; ++c) {
      int64_t z = 0, dead = 0;
      for (int64_t k = 0; k < 9; ++k) {
        z += w[c * 9 + k] == 0.f;
        dead += hs[i].hessian().group(c)[k * 9 + k] == 0.0;
      }
      CHECK(z == std::max<int64_t>(5, dead));
    }
  }
  CHECK(depthwise == 17);
}
