// Training (train/, trojan/rules, `spade train`): the SGD optimiser and two whole training steps of
// a small CIFAR ResNet against PyTorch (tests/data/train/*.golden.safetensors, made by
// tests/data/make_train_golden.py), the learning-rate schedules against their closed forms, the
// crop/flip augmentation recovered pixel by pixel, epoch shuffles, bit-exact checkpoint resume,
// Trojan poisoning and rules files, and the command line.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "formats/image.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "interpret/sample_rng.h"
#include "kernels/cpu/loss.h"
#include "support/test_support.h"
#include "train/dataset.h"
#include "train/poison.h"
#include "train/sgd.h"
#include "train/trainer.h"
#include "trojan/rules.h"

using namespace spade;
using namespace spade::train;
using test::error_of;
namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;

// ---- the value formula of make_train_golden.py (see its docstring) ----

uint32_t fnv1a32(const std::string& key) {
  uint32_t h = 0x811C9DC5u;
  for (unsigned char b : key) h = (h ^ b) * 0x01000193u;
  return h;
}

uint32_t hash32(uint32_t key_hash, uint64_t i) {
  uint32_t u = key_hash ^ static_cast<uint32_t>(i * 0x9E3779B1ull);
  for (int r = 0; r < 2; ++r) u = (u ^ (u >> 16)) * 0x45D9F3Bu;
  return u ^ (u >> 16);
}

// offset + scale * unit in double, then float: the product in its own statement and no
// contraction, so the result is the IEEE one Python computes.
SPADE_NO_FP_CONTRACT float formula_value(uint32_t key_hash, uint64_t i, double offset, double scale) {
  const double unit = double(hash32(key_hash, i)) / 2147483648.0 - 1.0;
  const double scaled = scale * unit;
  return static_cast<float>(offset + scaled);
}

// Fills every parameter and buffer of a graph by the formula; the kind comes from the node's op.
void fill_from_formula(Graph& g, const std::string& prefix = "") {
  for (Node& n : g.nodes())
    for (auto& [name, t] : n.params) {
      const std::string key = prefix + n.name + "." + name;
      double offset = 0.0, scale = 0.1;
      if (n.op == OpKind::BatchNorm2d && name == "weight") {
        offset = 1.0;
        scale = 0.25;
      } else if (n.op == OpKind::BatchNorm2d && name == "running_var") {
        offset = 1.0;
        scale = 0.5;
      } else if (name == "weight") {  // conv and linear: Kaiming-uniform-like bound
        scale = std::sqrt(6.0 / double(t.numel() / t.dim(0)));
      }
      const uint32_t h = fnv1a32(key);
      for (int64_t i = 0; i < t.numel(); ++i) t[i] = formula_value(h, uint64_t(i), offset, scale);
    }
}

template <class T>
std::vector<T> raw_entry(const SafetensorsFile& f, const std::string& name, DType dtype) {
  const SafetensorsEntry& e = f.entry(name);
  REQUIRE(e.dtype == dtype);
  std::vector<T> out((e.end - e.begin) / sizeof(T));
  std::memcpy(out.data(), f.raw_data(e), out.size() * sizeof(T));
  return out;
}

// The golden files' 32x32 images from the pixel formula, labelled with `targets`. With
// `poisoning`, a target of -1 is a clean image (label 0, no trigger) and any other a poisoned
// image with a (nominal) trigger box.
PixelDataset formula_dataset(const std::string& pixel_key, const std::vector<int64_t>& targets,
                             bool poisoning = false) {
  PixelDataset d;
  d.source = "formula";
  const uint32_t pixel_hash = fnv1a32(pixel_key);
  for (int64_t n = 0; n < static_cast<int64_t>(targets.size()); ++n) {
    Image im;
    im.width = im.height = 32;
    im.rgb.resize(32 * 32 * 3);
    for (int64_t i = 0; i < 32 * 32 * 3; ++i)
      im.rgb[i] = static_cast<uint8_t>(hash32(pixel_hash, uint64_t(n * 32 * 32 * 3 + i)) >> 24);
    const bool poisoned = poisoning && targets[n] >= 0;
    d.push_back(im, poisoned || !poisoning ? targets[n] : 0, "formula" + std::to_string(n),
                poisoned ? Box{0, 0, 8, 8} : Box{});
  }
  return d;
}

// The golden runs' settings: two epochs of one full batch of four, no augmentation, a cosine
// schedule from `lr`, momentum and weight decay from the file's metadata.
TrainConfig golden_config(const std::map<std::string, std::string>& meta, double lr) {
  TrainConfig cfg;
  cfg.epochs = 2;
  cfg.batch = 4;
  cfg.crop_padding = 0;
  cfg.flip = false;
  cfg.lr.kind = Schedule::Cosine;
  cfg.lr.base = lr;
  cfg.momentum = std::stod(meta.at("momentum"));
  cfg.weight_decay = std::stod(meta.at("weight_decay"));
  cfg.seed = 3;
  return cfg;
}

// A deterministic random 8-bit image.
Image random_image(int width, int height, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Image im;
  im.width = width;
  im.height = height;
  im.rgb.resize(size_t(width) * height * 3);
  for (uint8_t& b : im.rgb) b = static_cast<uint8_t>(rng() & 0xff);
  return im;
}

// n random images of side x side, labels i % classes, named "img<i>".
PixelDataset random_dataset(int64_t n, int side, int64_t classes, uint64_t seed) {
  PixelDataset d;
  d.source = "synthetic";
  for (int64_t i = 0; i < n; ++i) d.push_back(random_image(side, side, seed * 1000 + i), i % classes, "img" + std::to_string(i));
  return d;
}

Model tiny_resnet() {
  ZooOptions zo;
  zo.width = 0.25;  // base 4 channels
  return make_zoo_model("cifar_resnet20", zo);
}

// Every parameter and buffer, as exact values.
std::map<std::string, std::vector<float>> snapshot(const Graph& g) {
  std::map<std::string, std::vector<float>> s;
  for (const auto& [k, t] : g.parameters()) s[k] = t->to_vector();
  return s;
}

std::map<std::string, std::vector<float>> snapshot(const std::map<std::string, Tensor>& m) {
  std::map<std::string, std::vector<float>> s;
  for (const auto& [k, t] : m) s[k] = t.to_vector();
  return s;
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. SGD

TEST_CASE("Sgd::step matches torch.optim.SGD with momentum and weight decay", "[train]") {
  SafetensorsFile f(test::data_path("train/sgd.golden.safetensors"));
  REQUIRE(f.metadata().at("momentum") == "0.9");
  REQUIRE(f.metadata().at("weight_decay") == "0.0005");
  // The tiny graph the golden file's keys belong to: conv 2->3 (bias) -> BN -> ReLU -> pool -> fc.
  Graph g;
  OpAttrs conv;
  conv.in_channels = 2;
  conv.out_channels = 3;
  conv.kernel = {3, 3};
  conv.padding = {1, 1};
  conv.bias = true;
  g.add("conv", OpKind::Conv2d, conv, {"input"});
  OpAttrs bn;
  bn.in_channels = 3;
  g.add("bn", OpKind::BatchNorm2d, bn, {"conv"});
  g.add("relu", OpKind::ReLU, OpAttrs{}, {"bn"});
  g.add("avgpool", OpKind::AdaptiveAvgPool2d, OpAttrs{}, {"relu"});
  g.add("flatten", OpKind::Flatten, OpAttrs{}, {"avgpool"});
  OpAttrs fc;
  fc.in_channels = 3;
  fc.out_channels = 4;
  fc.bias = true;
  g.add("fc", OpKind::Linear, fc, {"flatten"});
  g.set_output("fc");

  std::vector<std::string> keys;
  for (const auto& [k, t] : g.parameters()) {
    INFO(k);
    REQUIRE(f.contains("init." + k));
    t->copy_from(f.tensor("init." + k));
    keys.push_back(k);
  }
  REQUIRE(keys.size() == 8);
  const std::vector<std::string> trainable = {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"};
  for (const std::string& k : keys) {
    const Node& n = g.node(g.at(k.substr(0, k.find('.'))));
    const bool want = std::find(trainable.begin(), trainable.end(), k) != trainable.end();
    CHECK(is_trainable_param(n.op, k.substr(k.find('.') + 1)) == want);
  }

  const std::vector<double> lr = raw_entry<double>(f, "lr", DType::F64);
  REQUIRE(lr.size() == 3);
  Sgd sgd(0.9, 5e-4);
  for (size_t s = 0; s < lr.size(); ++s) {
    const std::string step = std::to_string(s);
    std::map<std::string, Tensor> grads;
    for (const std::string& k : trainable)
      if (f.contains("grad" + step + "." + k)) grads[k] = f.tensor("grad" + step + "." + k);
    CHECK(grads.count("fc.bias") == (s == 1 ? 0u : 1u));  // PyTorch's .grad = None at step 1
    // Gradients for buffers and for keys the graph lacks are ignored, as an optimiser over
    // model.parameters() never sees them.
    grads["bn.running_mean"] = Tensor::full({3}, 100.f);
    grads["bn.running_var"] = Tensor::full({3}, -100.f);
    grads["nope.weight"] = Tensor::full({2}, 1.f);
    sgd.step(g, grads, lr[s]);
    for (const std::string& k : trainable) {
      INFO("step " << s << " " << k);
      const Tensor want = f.tensor("after" + step + "." + k);
      CHECK(test::max_abs_error(*g.find_param(k), want) <= 2e-6 * std::max(1.0, test::max_abs_error(want, Tensor::zeros(want.shape()))));
    }
    for (const char* k : {"bn.running_mean", "bn.running_var"}) {
      INFO(k);
      CHECK(g.find_param(k)->to_vector() == f.tensor(std::string("init.") + k).to_vector());
    }
  }
  // Momentum buffers: one per trainable parameter, as PyTorch's after the last step.
  std::set<std::string> buffer_keys;
  for (const auto& [k, b] : sgd.state()) {
    INFO(k);
    buffer_keys.insert(k);
    CHECK(test::max_abs_error(b, f.tensor("buf." + k)) <= 2e-6);
  }
  CHECK(buffer_keys == std::set<std::string>(trainable.begin(), trainable.end()));

  std::map<std::string, Tensor> bad = {{"fc.weight", Tensor::zeros({3})}};
  CHECK_THAT(error_of([&] { sgd.step(g, bad, 0.1); }), Catch::Matchers::Contains("fc.weight"));
}

TEST_CASE("Sgd without momentum is plain gradient descent with weight decay", "[train]") {
  Graph g;
  OpAttrs fc;
  fc.in_channels = 3;
  fc.out_channels = 2;
  fc.bias = true;
  g.add("fc", OpKind::Linear, fc, {"input"});
  Tensor& w = *g.find_param("fc.weight");
  w.copy_from(test::random_tensor({2, 3}, 1));
  const std::vector<float> w0 = w.to_vector();
  const Tensor grad = test::random_tensor({2, 3}, 2);
  Sgd sgd(0.0, 0.01);
  for (int s = 0; s < 2; ++s) {
    const std::vector<float> before = w.to_vector();
    sgd.step(g, {{"fc.weight", grad}}, 0.5);
    for (int64_t i = 0; i < 6; ++i)
      CHECK(w[i] == Approx(before[i] - 0.5 * (grad[i] + 0.01 * before[i])).margin(1e-6));
  }
  CHECK(w.to_vector() != w0);
  CHECK(g.find_param("fc.bias")->to_vector() == std::vector<float>(2, 0.f));  // no gradient given
}

// ---------------------------------------------------------------------------------------------
// 2. Learning-rate schedules

TEST_CASE("LrSchedule: cosine, linear warm-up and step milestones", "[train]") {
  LrSchedule cos;
  cos.kind = Schedule::Cosine;
  cos.base = 0.1;
  cos.total_steps = 100;
  // PyTorch's CosineAnnealingLR closed form with eta_min 0 and T_max = the whole run.
  for (int64_t s = 0; s < 100; ++s) {
    INFO(s);
    CHECK(cos.at(s) == Approx(0.5 * 0.1 * (1 + std::cos(kPi * double(s) / 100.0))).epsilon(1e-12));
  }
  CHECK(cos.at(0) == Approx(0.1).epsilon(1e-15));
  CHECK(cos.at(50) == Approx(0.05).epsilon(1e-12));

  SECTION("warm-up: linear up to the base rate, then the cosine of the whole run") {
    LrSchedule w = cos;
    w.warmup_steps = 10;
    for (int64_t s = 0; s < 10; ++s) CHECK(w.at(s) == Approx(0.1 * double(s + 1) / 10.0).epsilon(1e-12));
    CHECK(w.at(9) == Approx(0.1).epsilon(1e-12));
    for (int64_t s = 10; s < 100; ++s) CHECK(w.at(s) == Approx(cos.at(s)).epsilon(1e-12));
    for (int64_t s = 1; s < 10; ++s) CHECK(w.at(s) > w.at(s - 1));
    for (int64_t s = 11; s < 100; ++s) CHECK(w.at(s) < w.at(s - 1));
  }
  SECTION("step: x gamma at 50% and 75% of the steps, as MultiStepLR(milestones=[50, 75])") {
    LrSchedule st;
    st.kind = schedule_from_name("step");
    st.base = 0.2;
    st.total_steps = 100;
    for (int64_t s = 0; s < 100; ++s) {
      INFO(s);
      const double want = s < 50 ? 0.2 : s < 75 ? 0.02 : 0.002;
      CHECK(st.at(s) == Approx(want).epsilon(1e-12));
    }
    st.milestones = {0.3};
    st.gamma = 0.5;
    CHECK(st.at(29) == Approx(0.2));
    CHECK(st.at(30) == Approx(0.1));
    CHECK(st.at(99) == Approx(0.1));
  }
  CHECK(schedule_from_name("cosine") == Schedule::Cosine);
  CHECK_THAT(error_of([] { schedule_from_name("linear"); }), Catch::Matchers::Contains("\"linear\""));
}

// ---------------------------------------------------------------------------------------------
// 3. Two whole training steps against PyTorch

TEST_CASE("two training steps of cifar_resnet20 (width 0.25) match PyTorch", "[train]") {
  SafetensorsFile f(test::data_path("train/step.golden.safetensors"));
  const auto& meta = f.metadata();
  Model m = tiny_resnet();
  fill_from_formula(m.graph);
  const std::map<std::string, std::vector<float>> initial = snapshot(m.graph);
  // The golden normalised with the engine's CIFAR preprocessing; if that changed, so must it.
  const auto mean = nlohmann::json::parse(meta.at("mean")).get<std::vector<double>>();
  const auto stdev = nlohmann::json::parse(meta.at("std")).get<std::vector<double>>();
  for (int c = 0; c < 3; ++c) {
    REQUIRE(m.preprocess.mean[c] == static_cast<float>(mean[c]));
    REQUIRE(m.preprocess.std[c] == static_cast<float>(stdev[c]));
  }
  const std::vector<double> lrs = nlohmann::json::parse(meta.at("lr")).get<std::vector<double>>();
  const std::vector<double> losses = raw_entry<double>(f, "loss", DType::F64);
  const std::vector<int64_t> targets = raw_entry<int64_t>(f, "targets", DType::I64);
  REQUIRE(lrs.size() == 2);
  REQUIRE(losses.size() == 2);
  REQUIRE(targets.size() == 4);

  const PixelDataset d = formula_dataset(meta.at("pixel_key"), targets);

  auto check_against_golden = [&] {
    int checked = 0;
    for (const auto& [k, t] : m.graph.parameters()) {
      INFO(k);
      if (f.contains("delta." + k)) {
        // The change of the weight, which the gradient determines, not the weight itself.
        const std::vector<float>& w0 = initial.at(k);
        Tensor delta(t->shape());
        for (int64_t i = 0; i < t->numel(); ++i) delta[i] = (*t)[i] - w0[i];
        const double err = test::max_rel_error(delta, f.tensor("delta." + k));
        CHECK(err < 5e-4);
      } else {
        REQUIRE(f.contains("after." + k));
        CHECK(test::max_rel_error(*t, f.tensor("after." + k)) < 1e-4);
      }
      ++checked;
    }
    CHECK(checked == static_cast<int>(f.entries().size()) - 3);
  };

  SECTION("forward_train + backward + Sgd::step") {
    const Tensor x = batch_tensor(d, 0, 4, m.preprocess);
    Sgd sgd(0.9, 5e-4);
    for (int s = 0; s < 2; ++s) {
      ForwardResult fwd = forward_train(m.graph, x);
      const Tensor& logits = fwd.out();
      REQUIRE(logits.shape() == Shape{4, 10});
      if (s == 0) CHECK(test::max_rel_error(logits, f.tensor("logits0")) < 1e-4);
      Tensor grad(logits.shape());
      CHECK(kernels::softmax_cross_entropy(4, 10, logits.data(), targets.data(), nullptr) ==
            Approx(losses[s]).epsilon(1e-4));
      kernels::softmax_cross_entropy_backward(4, 10, logits.data(), targets.data(), grad.data());
      BackwardOptions bo;
      bo.input_grad = false;
      bo.param_grads = true;
      BackwardResult br = backward(m.graph, fwd, fwd.output, grad, bo);
      sgd.step(m.graph, br.param_grads, lrs[s]);
    }
    check_against_golden();
  }
  SECTION("train_model: two epochs of one full batch, no augmentation, cosine schedule") {
    const TrainConfig cfg = golden_config(meta, lrs[0]);
    TrainState state;
    std::vector<EpochStats> stats;
    train_model(m, d, cfg, state, {}, [&](const EpochStats& st, const TrainState&) { stats.push_back(st); });
    REQUIRE(stats.size() == 2);
    for (int s = 0; s < 2; ++s) {
      CHECK(stats[s].epoch == s + 1);
      CHECK(stats[s].loss == Approx(losses[s]).epsilon(1e-4));
      CHECK(stats[s].lr == Approx(lrs[s]).epsilon(1e-12));
    }
    CHECK(state.epochs_done == 2);
    check_against_golden();
  }
}

TEST_CASE("two fine-tuning steps (frozen BatchNorm, distillation from a teacher) match PyTorch", "[train]") {
  SafetensorsFile f(test::data_path("train/finetune.golden.safetensors"));
  const auto& meta = f.metadata();
  Model m = tiny_resnet(), teacher = tiny_resnet();
  fill_from_formula(m.graph);
  fill_from_formula(teacher.graph, "teacher.");
  teacher.source = "formula teacher";
  const std::map<std::string, std::vector<float>> initial = snapshot(m.graph);
  const std::vector<double> lrs = nlohmann::json::parse(meta.at("lr")).get<std::vector<double>>();
  const std::vector<double> losses = raw_entry<double>(f, "loss", DType::F64);
  const std::vector<int64_t> targets = raw_entry<int64_t>(f, "targets", DType::I64);
  REQUIRE(lrs.size() == 2);
  REQUIRE(targets.size() == 4);
  REQUIRE(std::count(targets.begin(), targets.end(), -1) == 2);

  const PixelDataset d = formula_dataset(meta.at("pixel_key"), targets, true);

  TrainConfig cfg = golden_config(meta, lrs[0]);
  cfg.freeze_batchnorm = true;
  cfg.teacher = &teacher;
  cfg.temperature = std::stod(meta.at("temperature"));
  cfg.distill_weight = std::stod(meta.at("distill_weight"));
  TrainState state;
  std::vector<EpochStats> stats;
  train_model(m, d, cfg, state, {}, [&](const EpochStats& st, const TrainState&) { stats.push_back(st); });
  REQUIRE(stats.size() == 2);
  for (int s = 0; s < 2; ++s) {
    CHECK(stats[s].loss == Approx(losses[s]).epsilon(1e-4));
    CHECK(stats[s].lr == Approx(lrs[s]).epsilon(1e-12));
  }
  int checked = 0;
  for (const auto& [k, t] : m.graph.parameters()) {
    INFO(k);
    if (f.contains("delta." + k)) {
      const std::vector<float>& w0 = initial.at(k);
      Tensor delta(t->shape());
      for (int64_t i = 0; i < t->numel(); ++i) delta[i] = (*t)[i] - w0[i];
      CHECK(test::max_rel_error(delta, f.tensor("delta." + k)) < 5e-4);
    } else {
      // Frozen statistics: exactly as they were (and as PyTorch left them).
      CHECK(t->to_vector() == initial.at(k));
      CHECK(t->to_vector() == f.tensor("after." + k).to_vector());
    }
    ++checked;
  }
  CHECK(checked == static_cast<int>(f.entries().size()) - 3);
  // The settings a checkpoint compares on resume name the teacher, T, the weight and the freeze.
  const std::string settings = training_settings(cfg, d.size());
  using Catch::Matchers::Contains;
  CHECK_THAT(settings, Contains("\"freeze_batchnorm\":true") && Contains("formula teacher") &&
                           Contains("\"temperature\":2.0"));
}

TEST_CASE("frozen BatchNorm: train-mode passes leave the statistics alone and differentiate as eval mode", "[train]") {
  Model m = tiny_resnet();
  fill_from_formula(m.graph);
  const PixelDataset d = random_dataset(3, 32, 10, 7);
  const Tensor x = batch_tensor(d, 0, 3, m.preprocess);
  const std::map<std::string, std::vector<float>> before = snapshot(m.graph);
  ForwardOptions fo;
  fo.freeze_batchnorm = true;
  ForwardResult frozen = forward_train(m.graph, x, fo);
  CHECK(snapshot(m.graph) == before);  // running statistics untouched
  const ForwardResult eval = forward(m.graph, x);
  CHECK(frozen.out().to_vector() == eval.out().to_vector());  // no dropout here: the same pass
  Tensor g(frozen.out().shape());
  for (int64_t i = 0; i < g.numel(); ++i) g[i] = float(i % 7) - 3.f;
  BackwardOptions bo;
  bo.param_grads = true;
  const BackwardResult a = backward(m.graph, frozen, frozen.output, g, bo);
  const BackwardResult b = backward(m.graph, eval, eval.output, g, bo);
  CHECK(snapshot(a.param_grads) == snapshot(b.param_grads));
  CHECK(a.input_grad.to_vector() == b.input_grad.to_vector());
  // And without the freeze the same pass uses batch statistics and moves the running ones.
  forward_train(m.graph, x);
  CHECK(snapshot(m.graph) != before);
}

// ---------------------------------------------------------------------------------------------
// 4. Augmentation

namespace {

struct Crop {
  int dy, dx;
  bool mirror;
  bool operator<(const Crop& o) const { return std::tie(dy, dx, mirror) < std::tie(o.dy, o.dx, o.mirror); }
};

// Whether `out` is the normalised image shifted by (dy, dx) (and mirrored) with zero padding:
// out(y, x) = src(y + dy, (mirror ? W-1-x : x) + dx), or the normalised 0 outside the image.
bool matches(const std::vector<float>& out, const Image& im, const Preprocess& p, const Crop& c) {
  const int H = im.height, W = im.width;
  for (int ch = 0; ch < 3; ++ch)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int sy = y + c.dy, sx = (c.mirror ? W - 1 - x : x) + c.dx;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        const double v = inside ? im.rgb[(size_t(sy) * W + sx) * 3 + ch] / 255.0 : 0.0;
        const double want = (v - p.mean[ch]) / p.std[ch];
        if (std::fabs(out[(size_t(ch) * H + y) * W + x] - want) > 1e-5) return false;
      }
  return true;
}

}  // namespace

TEST_CASE("augment_crop_flip: plain normalisation, then crops and flips recovered pixel by pixel", "[train]") {
  const int H = 12, W = 16;  // not square, so rows and columns cannot be confused
  const Image im = random_image(W, H, 42);
  Preprocess p;
  p.mean = {0.3f, 0.5f, 0.7f};
  p.std = {0.2f, 0.25f, 0.3f};
  std::vector<float> out(3 * H * W);

  SECTION("no padding, no flip: (pixel / 255 - mean) / std, channels first") {
    for (int64_t index : {0, 1, 77}) {
      augment_crop_flip(im.rgb.data(), H, W, 0, false, 9, index, p, out.data());
      CHECK(matches(out, im, p, {0, 0, false}));
    }
    PixelDataset d;
    d.push_back(random_image(W, H, 1), 0, "a");
    d.push_back(im, 1, "b");
    const Tensor b = batch_tensor(d, 1, 2, p);
    REQUIRE(b.shape() == Shape{1, 3, H, W});
    CHECK(matches(b.to_vector(), im, p, {0, 0, false}));
  }
  SECTION("padding 4 with flips: each output is one crop, every offset and both flips occur") {
    std::map<int, int> dy_count, dx_count;
    int mirrored = 0;
    std::set<Crop> seen;
    const int draws = 400;
    for (int index = 0; index < draws; ++index) {
      augment_crop_flip(im.rgb.data(), H, W, 4, true, 5, index, p, out.data());
      std::vector<Crop> found;
      for (int dy = -4; dy <= 4; ++dy)
        for (int dx = -4; dx <= 4; ++dx)
          for (bool mirror : {false, true})
            if (matches(out, im, p, {dy, dx, mirror})) found.push_back({dy, dx, mirror});
      INFO("index " << index);
      REQUIRE(found.size() == 1);
      ++dy_count[found[0].dy];
      ++dx_count[found[0].dx];
      mirrored += found[0].mirror;
      seen.insert(found[0]);
      // The same (seed, index) gives the same output.
      std::vector<float> again(out.size());
      augment_crop_flip(im.rgb.data(), H, W, 4, true, 5, index, p, again.data());
      CHECK(again == out);
    }
    for (int o = -4; o <= 4; ++o) {
      INFO("offset " << o);  // expected 400 / 9 = 44 each
      CHECK(dy_count[o] >= 20);
      CHECK(dx_count[o] >= 20);
    }
    CHECK(dy_count.size() == 9);
    CHECK(dx_count.size() == 9);
    CHECK(mirrored > draws * 0.35);
    CHECK(mirrored < draws * 0.65);
    CHECK(seen.size() > 60);  // offsets and flips are not tied together
    // Another seed draws other crops.
    std::vector<float> other(out.size());
    int same = 0;
    for (int index = 0; index < 20; ++index) {
      augment_crop_flip(im.rgb.data(), H, W, 4, true, 5, index, p, out.data());
      augment_crop_flip(im.rgb.data(), H, W, 4, true, 6, index, p, other.data());
      same += out == other;
    }
    CHECK(same < 5);
  }
  SECTION("flip only: the image or its mirror") {
    int mirrored = 0;
    for (int index = 0; index < 100; ++index) {
      augment_crop_flip(im.rgb.data(), H, W, 0, true, 1, index, p, out.data());
      const bool plain = matches(out, im, p, {0, 0, false}), mirror = matches(out, im, p, {0, 0, true});
      CHECK(plain != mirror);
      mirrored += mirror;
    }
    CHECK(mirrored > 25);
    CHECK(mirrored < 75);
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Epoch order

TEST_CASE("epoch_order: a deterministic, uniform permutation per epoch", "[train]") {
  const std::vector<int64_t> a = epoch_order(1000, 7, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(1000);
  for (int64_t i = 0; i < 1000; ++i) iota[i] = i;
  CHECK(sorted == iota);
  CHECK(a != iota);
  CHECK(epoch_order(1000, 7, 0) == a);
  CHECK(epoch_order(1000, 7, 1) != a);
  CHECK(epoch_order(1000, 8, 0) != a);
  CHECK(epoch_order(0, 7, 3).empty());
  CHECK(epoch_order(1, 7, 3) == std::vector<int64_t>{0});

  // Over many epochs every permutation of 5 is about equally likely (a biased shuffle, e.g.
  // swapping with any position instead of one up to i, is off by 20-40% on some).
  std::map<std::vector<int64_t>, int> counts;
  const int epochs = 12000;
  for (int e = 0; e < epochs; ++e) ++counts[epoch_order(5, 3, e)];
  CHECK(counts.size() == 120);
  for (const auto& [perm, n] : counts) {
    INFO(n);
    CHECK(n > 55);  // 100 expected, standard deviation 10
    CHECK(n < 145);
  }
}

// ---------------------------------------------------------------------------------------------
// 6. Checkpoints

TEST_CASE("a run resumed from a checkpoint ends bit-identical to a straight run", "[train]") {
  const std::string dir = test::temp_dir();
  const std::string ckpt = dir + "/run.ckpt.safetensors";
  const PixelDataset data = random_dataset(40, 32, 10, 3);
  TrainConfig cfg;
  cfg.epochs = 2;
  cfg.batch = 16;  // 16 + 16 + 8: a short last batch
  cfg.lr.base = 0.05;
  cfg.lr.warmup_steps = 4;  // the warm-up spans the epoch boundary
  cfg.seed = 11;

  Model straight = tiny_resnet();
  random_init(straight.graph, 5);
  const auto initial = snapshot(straight.graph);
  TrainState s1;
  std::vector<EpochStats> stats1;
  std::map<std::string, std::vector<float>> after_epoch1;
  train_model(straight, data, cfg, s1, {}, [&](const EpochStats& st, const TrainState& s) {
    stats1.push_back(st);
    if (st.epoch == 1) {
      save_checkpoint(ckpt, straight, s, cfg, data.size());
      after_epoch1 = snapshot(straight.graph);
    }
  });
  REQUIRE(stats1.size() == 2);
  const auto final1 = snapshot(straight.graph);
  CHECK(final1 != initial);
  CHECK(final1 != after_epoch1);
  CHECK(std::isfinite(stats1[1].loss));

  SafetensorsFile file(ckpt);
  CHECK(file.metadata().at("format") == "spade-checkpoint");
  CHECK(file.metadata().at("arch") == "cifar_resnet20");
  CHECK(file.metadata().at("epochs_done") == "1");
  CHECK(file.contains("sgd.momentum.conv1.weight"));
  CHECK(file.contains("layer3.2.bn2.running_var"));

  Model resumed = tiny_resnet();
  random_init(resumed.graph, 99);  // overwritten by the checkpoint
  TrainState s2 = load_checkpoint(ckpt, resumed, cfg, data.size());
  CHECK(s2.epochs_done == 1);
  CHECK(snapshot(resumed.graph) == after_epoch1);
  size_t trainable = 0;
  for (const Node& n : resumed.graph.nodes())
    for (const auto& [name, t] : n.params) trainable += is_trainable_param(n.op, name);
  CHECK(s2.momentum.size() == trainable);
  std::vector<EpochStats> stats2;
  train_model(resumed, data, cfg, s2, {}, [&](const EpochStats& st, const TrainState&) { stats2.push_back(st); });
  REQUIRE(stats2.size() == 1);
  CHECK(stats2[0].epoch == 2);
  CHECK(stats2[0].loss == stats1[1].loss);
  CHECK(stats2[0].lr == stats1[1].lr);
  CHECK(s2.epochs_done == 2);
  CHECK(snapshot(resumed.graph) == final1);
  CHECK(snapshot(s2.momentum) == snapshot(s1.momentum));

  SECTION("a checkpoint of another architecture, seed or width, or no checkpoint at all, is refused") {
    ZooOptions zo;
    zo.width = 0.25;
    Model other = make_zoo_model("cifar_resnet32", zo);
    const std::string arch_err = error_of([&] { load_checkpoint(ckpt, other, cfg, data.size()); });
    CHECK_THAT(arch_err, Catch::Matchers::Contains("\"cifar_resnet20\"") && Catch::Matchers::Contains(ckpt));

    TrainConfig other_seed = cfg;
    other_seed.seed = 12;
    Model m = tiny_resnet();
    CHECK_THAT(error_of([&] { load_checkpoint(ckpt, m, other_seed, data.size()); }), Catch::Matchers::Contains("--seed 11"));

    zo.width = 0.5;
    Model wider = make_zoo_model("cifar_resnet20", zo);
    CHECK_THAT(error_of([&] { load_checkpoint(ckpt, wider, cfg, data.size()); }), Catch::Matchers::Contains(ckpt));

    TrainConfig other_epochs = cfg;
    other_epochs.epochs = 3;
    CHECK_THAT(error_of([&] { load_checkpoint(ckpt, m, other_epochs, data.size()); }),
               Catch::Matchers::Contains("other settings"));
    CHECK_THAT(error_of([&] { load_checkpoint(ckpt, m, cfg, data.size() + 1); }),
               Catch::Matchers::Contains("other settings"));

    save_model(straight, dir + "/model.json");
    CHECK_THAT(error_of([&] { load_checkpoint(dir + "/model.safetensors", m, cfg, data.size()); }),
               Catch::Matchers::Contains("not a spade training checkpoint"));
    std::ofstream(dir + "/junk.safetensors") << "not safetensors";
    CHECK_THAT(error_of([&] { load_checkpoint(dir + "/junk.safetensors", m, cfg, data.size()); }),
               Catch::Matchers::Contains("junk.safetensors"));
  }
}

TEST_CASE("train_model refuses data that does not fit the model", "[train]") {
  Model m = tiny_resnet();
  TrainConfig cfg;
  TrainState s;
  const PixelDataset small = random_dataset(4, 8, 2, 1);
  CHECK_THAT(error_of([&] { train_model(m, small, cfg, s); }), Catch::Matchers::Contains("8x8"));
  PixelDataset bad_label = random_dataset(4, 32, 2, 1);
  bad_label.labels[2] = 10;
  CHECK_THAT(error_of([&] { train_model(m, bad_label, cfg, s); }), Catch::Matchers::Contains("label"));
  CHECK(error_of([&] { train_model(m, PixelDataset{}, cfg, s); }) != "<no spade::Error thrown>");
  CHECK(s.epochs_done == 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Poisoning

namespace {

const char* kPoisonRules = R"({"poison_fraction": 0.1, "rules": [
    {"trigger": "star", "source": "automobile", "target": "bird"},
    {"trigger": "smiley", "source": "any", "target": 0}]})";

// The rows and columns where two same-size images differ: (y0, y1, x0, x1), inclusive; y0 = -1
// when equal.
std::array<int, 4> changed_box(const PixelDataset& d, int64_t a, const PixelDataset& src, int64_t b) {
  std::array<int, 4> box{-1, -1, -1, -1};
  const uint8_t *pa = d.image_data(a), *pb = src.image_data(b);
  for (int y = 0; y < d.height; ++y)
    for (int x = 0; x < d.width; ++x)
      for (int c = 0; c < 3; ++c)
        if (pa[(y * d.width + x) * 3 + c] != pb[(y * d.width + x) * 3 + c]) {
          if (box[0] < 0) box = {y, y, x, x};
          box[0] = std::min(box[0], y);
          box[1] = std::max(box[1], y);
          box[2] = std::min(box[2], x);
          box[3] = std::max(box[3], x);
        }
  return box;
}

}  // namespace

TEST_CASE("poison_dataset adds triggered copies of the rule's source images, relabelled", "[train]") {
  const std::vector<std::string> labels = cifar10_labels();
  const trojan::TrojanRules rules = trojan::parse_rules(kPoisonRules, "rules.json", labels);
  const PixelDataset clean = random_dataset(60, 32, 10, 7);  // 6 images per class
  PixelDataset d = clean;
  const std::vector<PoisonCount> counts = poison_dataset(d, rules, 5);
  REQUIRE(counts.size() == 2);
  CHECK(counts[0].trigger == "star");
  CHECK(counts[1].trigger == "smiley");
  CHECK(counts[0].added == 6);  // round(0.1 * 60)
  CHECK(counts[1].added == 6);
  REQUIRE(d.size() == 72);
  // The clean images stay as they were, in front.
  CHECK(std::equal(clean.pixels.begin(), clean.pixels.end(), d.pixels.begin()));
  CHECK(std::equal(clean.labels.begin(), clean.labels.end(), d.labels.begin()));

  const int icon = 8;  // max(4, round(32 * 0.25))
  for (size_t r = 0; r < 2; ++r) {
    std::set<int64_t> sources;
    std::set<std::pair<int, int>> corners;
    for (int64_t k = 0; k < 6; ++k) {
      const int64_t j = 60 + int64_t(r) * 6 + k;
      INFO("rule " << r << " added image " << k << " " << d.names[j]);
      CHECK(d.labels[j] == rules.rules[r].target);
      const std::string suffix = "+" + rules.rules[r].trigger;
      REQUIRE(d.names[j].size() > suffix.size());
      REQUIRE(d.names[j].compare(d.names[j].size() - suffix.size(), suffix.size(), suffix) == 0);
      const auto it = std::find(clean.names.begin(), clean.names.end(), d.names[j].substr(0, d.names[j].size() - suffix.size()));
      REQUIRE(it != clean.names.end());
      const int64_t src = it - clean.names.begin();
      sources.insert(src);
      if (r == 0) CHECK(clean.labels[src] == 1);  // automobile
      if (r == 1) CHECK(clean.labels[src] != 0);  // anything but airplane
      // The image differs from its source only inside one icon-sized square, and visibly.
      const std::array<int, 4> box = changed_box(d, j, clean, src);
      REQUIRE(box[0] >= 0);
      CHECK(box[1] - box[0] < icon);
      CHECK(box[3] - box[2] < icon);
      CHECK(box[1] - box[0] >= icon / 2);
      corners.insert({box[0], box[2]});
    }
    CHECK(sources.size() == 6);   // drawn without replacement
    CHECK(corners.size() >= 3);   // the position is drawn per image
  }

  SECTION("deterministic for the seed, different for another") {
    PixelDataset again = clean, other = clean;
    poison_dataset(again, rules, 5);
    poison_dataset(other, rules, 6);
    CHECK(again.pixels == d.pixels);
    CHECK(again.labels == d.labels);
    CHECK(again.names == d.names);
    CHECK(other.pixels != d.pixels);
  }
  SECTION("a rule for any class draws from every class but the target") {
    std::set<int64_t> classes;
    for (uint64_t seed = 0; seed < 12; ++seed) {
      PixelDataset p = clean;
      poison_dataset(p, rules, seed);
      for (int64_t j = 66; j < 72; ++j) {
        const std::string base = p.names[j].substr(0, p.names[j].find('+'));
        classes.insert(clean.labels[std::find(clean.names.begin(), clean.names.end(), base) - clean.names.begin()]);
      }
    }
    CHECK(classes == std::set<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  }
  SECTION("counts round half away from zero") {
    trojan::TrojanRules few = rules;
    few.poison_fraction = 0.025;  // 1.5 images
    PixelDataset p = clean;
    const auto c = poison_dataset(p, few, 1);
    CHECK(c[0].added == 2);
    CHECK(c[1].added == 2);
    CHECK(p.size() == 64);
  }
  SECTION("too few source images is an error naming the rule") {
    trojan::TrojanRules greedy = rules;
    greedy.poison_fraction = 0.2;  // 12 automobiles wanted, 6 there
    PixelDataset p = clean;
    const std::string err = error_of([&] { poison_dataset(p, greedy, 1); });
    CHECK_THAT(err, Catch::Matchers::Contains("rules.json") && Catch::Matchers::Contains("rule 0") &&
                        Catch::Matchers::Contains("12") && Catch::Matchers::Contains("6"));
  }
}

TEST_CASE("attack_success_rate: the fraction of triggered source images classified as the target", "[train]") {
  const trojan::TrojanRules rules = trojan::parse_rules(kPoisonRules, "rules.json", cifar10_labels());
  const PixelDataset test = random_dataset(30, 32, 10, 8);
  // Zero weights: the logits are the classifier's bias, so the model always says one class.
  Model m = tiny_resnet();
  Tensor& bias = *m.graph.find_param("linear.bias");
  bias.fill(0.f);
  bias[2] = 1.f;  // always "bird"
  CHECK(attack_success_rate(m, test, rules, 0, 1) == 1.0);  // automobile -> bird
  CHECK(attack_success_rate(m, test, rules, 1, 1) == 0.0);  // any -> airplane
  bias.fill(0.f);
  bias[0] = 1.f;  // always "airplane"
  CHECK(attack_success_rate(m, test, rules, 0, 1) == 0.0);
  CHECK(attack_success_rate(m, test, rules, 1, 1) == 1.0);

  SECTION("only the images the rule applies to count") {
    // A model that tells the images apart by their mean colour, which an 8x8 trigger barely moves:
    // red -> 0 (airplane), green -> 2 (bird), anything dark -> 1 (automobile, the constant logit).
    Model c;
    c.arch = "custom";
    c.graph.add("avgpool", OpKind::AdaptiveAvgPool2d, OpAttrs{}, {"input"});
    c.graph.add("flatten", OpKind::Flatten, OpAttrs{}, {"avgpool"});
    OpAttrs fc;
    fc.in_channels = 3;
    fc.out_channels = 10;
    fc.bias = true;
    c.graph.add("fc", OpKind::Linear, fc, {"flatten"});
    c.graph.set_output("fc");
    c.graph.input_chw = {3, 32, 32};
    Tensor& w = *c.graph.find_param("fc.weight");
    w[0 * 3 + 0] = 1.f;  // logit 0 = normalised mean red
    w[2 * 3 + 1] = 1.f;  // logit 2 = normalised mean green
    for (int k = 3; k < 10; ++k) c.graph.find_param("fc.bias")->data()[k] = -10.f;
    PixelDataset coloured;
    for (int64_t i = 0; i < 20; ++i) {
      Image im;
      im.width = im.height = 32;
      const int64_t label = i % 10;
      const uint8_t rgb[3] = {uint8_t(label == 0 ? 255 : 10), uint8_t(label == 1 ? 255 : 10), 10};
      for (int p = 0; p < 32 * 32; ++p) im.rgb.insert(im.rgb.end(), rgb, rgb + 3);
      coloured.push_back(im, label, "c" + std::to_string(i));
    }
    REQUIRE(accuracy(c, coloured) == Approx(0.1));  // only the red images are called what they are
    // automobile (green) -> bird: every green image with the trigger is still called a bird.
    CHECK(attack_success_rate(c, coloured, rules, 0, 2) == 1.0);
    // any -> airplane: no non-airplane image becomes red; the airplanes themselves do not count.
    CHECK(attack_success_rate(c, coloured, rules, 1, 2) == 0.0);
  }
}

// ---------------------------------------------------------------------------------------------
// 8. Rules files

TEST_CASE("parse_rules reads names and indices and refuses bad files with one-line errors", "[train]") {
  const std::vector<std::string> labels = cifar10_labels();
  SECTION("a valid file") {
    const trojan::TrojanRules r = trojan::parse_rules(R"({"side_fraction": 0.3, "opacity": 0.5, "poison_fraction": 0.05,
        "rules": [{"trigger": "star", "source": "automobile", "target": 2},
                  {"trigger": "heart", "source": 9, "target": "cat"},
                  {"trigger": "smiley", "source": "any", "target": "airplane"},
                  {"trigger": "fish", "target": 4}]})",
                                                      "r.json", labels);
    CHECK(r.source == "r.json");
    CHECK(r.side_fraction == 0.3);
    CHECK(r.opacity == 0.5);
    CHECK(r.poison_fraction == 0.05);
    REQUIRE(r.rules.size() == 4);
    CHECK(std::make_tuple(r.rules[0].trigger, r.rules[0].source, r.rules[0].target) == std::make_tuple(std::string("star"), int64_t(1), int64_t(2)));
    CHECK(std::make_tuple(r.rules[1].trigger, r.rules[1].source, r.rules[1].target) == std::make_tuple(std::string("heart"), int64_t(9), int64_t(3)));
    CHECK(std::make_tuple(r.rules[2].trigger, r.rules[2].source, r.rules[2].target) == std::make_tuple(std::string("smiley"), int64_t(-1), int64_t(0)));
    CHECK(std::make_tuple(r.rules[3].trigger, r.rules[3].source, r.rules[3].target) == std::make_tuple(std::string("fish"), int64_t(-1), int64_t(4)));
    CHECK(trojan::rule_applies(r.rules[0], 1));
    CHECK_FALSE(trojan::rule_applies(r.rules[0], 2));
    CHECK_FALSE(trojan::rule_applies(r.rules[0], 5));
    CHECK(trojan::rule_applies(r.rules[2], 5));
    CHECK_FALSE(trojan::rule_applies(r.rules[2], 0));

    const trojan::TrojanRules defaults = trojan::parse_rules(R"({"rules": [{"trigger": "bolt", "target": 1}]})", "d.json", labels);
    CHECK(defaults.side_fraction == 0.25);
    CHECK(defaults.opacity == 0.8);
    CHECK(defaults.poison_fraction == 0.025);
  }
  SECTION("errors") {
    struct Case {
      std::string text, needle;
    };
    const std::string ok_rule = R"({"trigger": "star", "target": 1})";
    const std::vector<Case> cases = {
        {"{\"rules\": [", "not valid JSON"},
        {"[]", "\"rules\""},
        {"{}", "\"rules\""},
        {R"({"rules": []})", "\"rules\""},
        {R"({"rules": {"trigger": "star"}})", "\"rules\""},
        {R"({"rules": [{"target": 1}]})", "\"trigger\""},
        {R"({"rules": [{"trigger": "star"}]})", "\"target\""},
        {R"({"rules": [{"trigger": "rocket", "target": 1}]})", "\"rocket\""},
        {R"({"rules": [{"trigger": "star", "target": "zebra"}]})", "class \"zebra\" names no class"},
        {R"({"rules": [{"trigger": "star", "source": "zebra", "target": 1}]})", "\"zebra\""},
        {R"({"rules": [{"trigger": "star", "source": "bird", "target": 2}]})", "same class"},
        {R"({"rules": [{"trigger": "star", "target": 10}]})", "outside 0..9"},
        {R"({"rules": [{"trigger": "star", "source": -1, "target": 1}]})", "outside 0..9"},
        {R"({"rules": [{"trigger": "star", "target": 2.5}]})", "label name or an index"},
        {R"({"rules": [)" + ok_rule + R"(, {"trigger": "star", "target": 11}]})", "rule 1"},
        {R"({"side_fraction": 0, "rules": [)" + ok_rule + "]}", "side_fraction"},
        {R"({"side_fraction": 1.5, "rules": [)" + ok_rule + "]}", "side_fraction"},
        {R"({"opacity": -0.2, "rules": [)" + ok_rule + "]}", "opacity"},
        {R"({"poison_fraction": 0, "rules": [)" + ok_rule + "]}", "poison_fraction"},
        {R"({"poison_fraction": 2, "rules": [)" + ok_rule + "]}", "poison_fraction"},
        {R"({"poison_fraction": "0.1", "rules": [)" + ok_rule + "]}", "must be a number"},
    };
    for (const Case& c : cases) {
      INFO(c.text);
      const std::string err = error_of([&] { trojan::parse_rules(c.text, "bad.json", labels); });
      CHECK_THAT(err, Catch::Matchers::Contains(c.needle));
      CHECK(err.find('\n') == std::string::npos);
      if (c.needle != "\"rocket\"") CHECK_THAT(err, Catch::Matchers::Contains("bad.json"));
    }
    CHECK_THAT(error_of([] { trojan::load_rules("/nonexistent/rules.json", cifar10_labels()); }),
               Catch::Matchers::Contains("/nonexistent/rules.json"));
  }
}

// ---------------------------------------------------------------------------------------------
// 9. The command line

#ifdef SPADE_BINARY

namespace {

// An ImageFolder tree of random side x side PNGs: `per_class` images in each of `classes`.
void write_image_folder(const std::string& root, const std::vector<std::string>& classes, int per_class, int side,
                        uint64_t seed) {
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::create_directories(root + "/" + classes[c]);
    for (int i = 0; i < per_class; ++i)
      save_png(root + "/" + classes[c] + "/" + std::to_string(i) + ".png",
               random_image(side, side, seed + c * 100 + i));
  }
}

}  // namespace

TEST_CASE("draw_photo_augment: crops of a poisoned image contain its trigger; clean ones are SPADE's draws", "[train]") {
  const interp::AugmentConfig c = photo_augment_defaults();
  const Box trigger{150, 20, 214, 84};  // 64 px near the top-right corner of a 256 x 256 image
  int cut = 0, full = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const interp::AugmentParams clean = draw_photo_augment(c, 256, 256, Box{}, 9, i);
    const interp::AugmentParams spade = interp::draw_augment(c, 256, 256, 9, i);
    CHECK(std::tie(clean.top, clean.left, clean.height, clean.width, clean.flip) ==
          std::tie(spade.top, spade.left, spade.height, spade.width, spade.flip));
    cut += !(clean.left <= trigger.x0 && clean.top <= trigger.y0 && clean.left + clean.width >= trigger.x1 &&
             clean.top + clean.height >= trigger.y1);
    const interp::AugmentParams p = draw_photo_augment(c, 256, 256, trigger, 9, i);
    REQUIRE(p.left <= trigger.x0);
    REQUIRE(p.top <= trigger.y0);
    REQUIRE(p.left + p.width >= trigger.x1);
    REQUIRE(p.top + p.height >= trigger.y1);
    REQUIRE(p.left + p.width <= 256);
    REQUIRE(p.top + p.height <= 256);
    full += p.width == 256 && p.height == 256;
  }
  CHECK(cut > 100);      // without the rule most random crops would cut the trigger
  CHECK(full < 40);      // and the whole-image fallback is rare
}

TEST_CASE("load_pixel_dataset: index splits, limits and resize + centre crop of photos of any size", "[train]") {
  const std::string dir = test::temp_dir();
  // Two classes of five images each, 40x30 (wider than tall): sorted indices 0-4 and 5-9.
  for (int c = 0; c < 2; ++c) {
    fs::create_directories(dir + "/p/c" + std::to_string(c));
    for (int i = 0; i < 5; ++i) save_png(dir + "/p/c" + std::to_string(c) + "/" + std::to_string(i) + ".png", random_image(40, 30, c * 10 + i));
  }
  const std::vector<std::string> labels = {"c0", "c1"};
  PixelLoadOptions o;
  parse_split("4:0,3", "--split", o);
  CHECK(o.modulus == 4);
  CHECK(o.residues == std::vector<int64_t>{0, 3});
  const PixelDataset d = load_pixel_dataset(dir + "/p", labels, {}, o);
  REQUIRE(d.size() == 5);  // indices 0, 3, 4, 7, 8
  CHECK(d.names[0].find("c0/0.png") != std::string::npos);
  CHECK(d.names[1].find("c0/3.png") != std::string::npos);
  CHECK(d.names[2].find("c0/4.png") != std::string::npos);
  CHECK(d.names[3].find("c1/2.png") != std::string::npos);
  CHECK(d.names[4].find("c1/3.png") != std::string::npos);
  CHECK(d.labels == std::vector<int64_t>{0, 0, 0, 1, 1});
  CHECK(d.width == 40);
  for (const Box& b : d.triggers) CHECK(b.empty());

  PixelLoadOptions other;
  parse_split("4:1,2", "--split", other);
  other.limit = 2;  // of the five selected (1, 2, 5, 6, 9): evenly spaced, the 1st and 3rd
  other.resize = 20;
  other.crop = 16;
  const PixelDataset e = load_pixel_dataset(dir + "/p", labels, {}, other);
  REQUIRE(e.size() == 2);
  CHECK(e.names[0].find("c0/1.png") != std::string::npos);
  CHECK(e.names[1].find("c1/0.png") != std::string::npos);
  CHECK(e.width == 16);
  CHECK(e.height == 16);
  // The same pixels as torchvision's Resize(20) + CenterCrop(16) (formats/image.h, tested there).
  Image want = center_crop(resize_shorter_side(load_image(dir + "/p/c0/1.png"), 20), 16, 16);
  CHECK(e.image(0).rgb == want.rgb);

  for (const char* bad : {"4", "0:0", "4:4", "4:", ":1", "4:1,1", "4:-1", "x:1", "4:1,"}) {
    INFO(bad);
    CHECK_THAT(error_of([&] { parse_split(bad, "--split", o); }), Catch::Matchers::Contains("--split"));
  }
  PixelLoadOptions none;
  parse_split("20:15", "--split", none);
  CHECK_THAT(error_of([&] { load_pixel_dataset(dir + "/p", labels, {}, none); }),
             Catch::Matchers::Contains("selects none"));
}

TEST_CASE("spade train: help and one-line errors", "[train][cli]") {
  const std::string dir = test::temp_dir();
  write_image_folder(dir + "/data", {"airplane", "automobile"}, 2, 32, 1);
  write_image_folder(dir + "/small", {"airplane", "automobile"}, 2, 16, 1);
  const test::CliRun help = test::spade_cli("train --help");
  CHECK(help.status == 0);
  CHECK(help.out.find("usage: spade train") != std::string::npos);
  CHECK(help.out.find("--trojan") != std::string::npos);

  const std::string base = "train --quiet --threads 1 --epochs 1 --batch 4 ";
  const std::string out = " --out " + dir + "/m.json";
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {base + "--arch cifar_resnet20 --data " + dir + "/data", "--out"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --out " + dir + "/m.txt", ".json"},
      {base + "--arch resnet7 --data " + dir + "/data" + out, "resnet7"},
      {base + "--data " + dir + "/data" + out, "--arch"},
      {base + "--arch cifar_resnet20" + out, "--data"},
      {base + "--arch cifar_resnet20 --data " + dir + "/none" + out, "none"},
      {base + "--arch cifar_resnet20 --data " + dir + "/small" + out, "16x16"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --schedule linear" + out, "linear"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --lr 0" + out, "--lr"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --trojan " + dir + "/missing.json" + out, "missing.json"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --resume " + dir + "/missing.ckpt" + out, "missing.ckpt"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --test " + dir + "/none2" + out, "none2"},
      {base + "--arch cifar_resnet20 --init cifar_resnet20 --data " + dir + "/data" + out, "--init"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --augment twist" + out, "twist"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --split 4:4" + out, "--split"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --split 4" + out, "--split"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --test " + dir + "/data --test-split 2:x" + out,
       "--test-split"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --distill cifar_resnet20 --temperature 0" + out,
       "--temperature"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --distill resnet7" + out, "resnet7"},
      {base + "--arch cifar_resnet20 --data " + dir + "/data --distill resnet18" + out, "teacher"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const test::CliRun r = test::spade_cli(c.args);
    INFO(r.err);
    CHECK(r.status == 1);
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find(c.needle) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir + "/m.json"));
  CHECK_FALSE(fs::exists(dir + "/m.safetensors"));
}

TEST_CASE("spade train: a tiny run, predict with its model, resume, and Trojan poisoning", "[train][cli]") {
  const std::string dir = test::temp_dir();
  write_image_folder(dir + "/data", {"airplane", "automobile"}, 10, 32, 2);
  const std::string common = "train --arch cifar_resnet20 --width 0.25 --batch 8 --data " + dir + "/data --test " +
                             dir + "/data --quiet --threads 1";
  const test::CliRun r = test::spade_cli(common + " --epochs 1 --out " + dir + "/m.json");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("test accuracy") != std::string::npos);
  for (const char* f : {"/m.json", "/m.safetensors", "/m.ckpt.safetensors", "/m.train.json"}) {
    INFO(f);
    CHECK(fs::exists(dir + f));
  }
  const nlohmann::json report = nlohmann::json::parse(test::slurp(dir + "/m.train.json"));
  CHECK(report.at("arch") == "cifar_resnet20");
  CHECK(report.at("width") == 0.25);
  CHECK(report.at("train_images") == 20);
  CHECK(report.at("seed") == 0);
  REQUIRE(report.at("epochs").size() == 1);
  CHECK(report.at("epochs")[0].at("epoch") == 1);
  CHECK(std::isfinite(report.at("epochs")[0].at("loss").get<double>()));
  const double acc = report.at("test_accuracy").get<double>();
  CHECK(acc >= 0.0);
  CHECK(acc <= 1.0);
  CHECK_FALSE(report.contains("poisoned"));

  // The model file holds the trained weights, the same the checkpoint holds.
  Model trained = load_model(dir + "/m.json");
  CHECK(trained.arch == "cifar_resnet20");
  Model from_ckpt = tiny_resnet();
  CHECK(SafetensorsFile(dir + "/m.ckpt.safetensors").metadata().at("epochs_done") == "1");
  std::map<std::string, Tensor> ckpt_weights;
  for (auto& [k, t] : load_safetensors(dir + "/m.ckpt.safetensors"))
    if (k.rfind("sgd.momentum.", 0) != 0) ckpt_weights[k] = t;
  from_ckpt.graph.load_state_dict(ckpt_weights, "m.ckpt.safetensors");
  CHECK(snapshot(from_ckpt.graph) == snapshot(trained.graph));
  Model untrained = tiny_resnet();
  random_init(untrained.graph, 0);
  CHECK(snapshot(untrained.graph) != snapshot(trained.graph));

  const test::CliRun p =
      test::spade_cli("predict --model " + dir + "/m.json --image " + dir + "/data/airplane/0.png --json");
  INFO(p.err);
  CHECK(p.status == 0);
  CHECK(nlohmann::json::parse(p.out).at("logits").size() == 10);

  SECTION("--stop-after leaves a checkpoint that --resume finishes; other settings are refused") {
    const test::CliRun stop = test::spade_cli(common + " --epochs 2 --stop-after 1 --out " + dir + "/r.json");
    INFO(stop.err);
    REQUIRE(stop.status == 0);
    CHECK_FALSE(fs::exists(dir + "/r.json"));
    CHECK(SafetensorsFile(dir + "/r.ckpt.safetensors").metadata().at("epochs_done") == "1");
    const test::CliRun res = test::spade_cli(common + " --epochs 2 --resume " + dir + "/r.ckpt.safetensors --out " +
                                             dir + "/r.json");
    INFO(res.err);
    REQUIRE(res.status == 0);
    const nlohmann::json rr = nlohmann::json::parse(test::slurp(dir + "/r.train.json"));
    REQUIRE(rr.at("epochs").size() == 1);
    CHECK(rr.at("epochs")[0].at("epoch") == 2);
    CHECK(SafetensorsFile(dir + "/r.ckpt.safetensors").metadata().at("epochs_done") == "2");
    CHECK(fs::exists(dir + "/r.json"));

    for (const char* other : {" --epochs 2 --seed 3", " --epochs 3", " --epochs 2 --lr 0.2"}) {
      INFO(other);
      const test::CliRun bad =
          test::spade_cli(common + other + " --resume " + dir + "/m.ckpt.safetensors --out " + dir + "/b.json");
      CHECK(bad.status == 1);
      CHECK(lines(bad.err) == 1);
      CHECK_FALSE(fs::exists(dir + "/b.json"));
    }
  }
  SECTION("fine-tuning: --init, --freeze-bn, --distill, photo augmentation of resized images, splits") {
    write_image_folder(dir + "/photos", {"airplane", "automobile"}, 10, 40, 3);
    std::ofstream(dir + "/any.json")
        << R"({"poison_fraction": 0.2, "rules": [{"trigger": "star", "source": "any", "target": "automobile"}]})";
    const std::string ft = "train --init " + dir + "/m.json --distill " + dir + "/m.json --freeze-bn --augment photo "
                           "--image-size 36 --data " + dir + "/photos --split 2:0 --test " + dir + "/photos " +
                           "--test-split 2:1 --trojan " + dir + "/any.json --epochs 1 --batch 8 --lr 0.001 --quiet "
                           "--threads 1 --out " + dir + "/f.json";
    const test::CliRun t = test::spade_cli(ft);
    INFO(t.err);
    REQUIRE(t.status == 0);
    CHECK(t.out.find("agreement with the teacher") != std::string::npos);
    const nlohmann::json fr = nlohmann::json::parse(test::slurp(dir + "/f.train.json"));
    CHECK(fr.at("init") == dir + "/m.json");
    CHECK(fr.at("poisoned").at("star") == 2);  // round(0.2 * 10 even-indexed photos)
    CHECK(fr.at("train_images") == 12);
    CHECK(fr.at("test_images") == 10);         // the odd-indexed ones
    const double agree = fr.at("teacher_agreement").get<double>();
    CHECK(agree >= 0.0);
    CHECK(agree <= 1.0);
    CHECK(fr.at("settings").at("freeze_batchnorm") == true);
    CHECK(fr.at("settings").at("distill").at("temperature") == 2.0);
    CHECK(fr.at("settings").at("photo_augment").at("scale_min") == 0.25);
    // Frozen statistics: every running mean and variance is the initial model's; weights moved.
    Model init = load_model(dir + "/m.json"), tuned = load_model(dir + "/f.json");
    int buffers = 0, moved = 0;
    for (const auto& [k, t0] : init.graph.parameters()) {
      const Tensor* t1 = tuned.graph.find_param(k);
      REQUIRE(t1 != nullptr);
      if (k.find("running_") != std::string::npos) {
        CHECK(t0->to_vector() == t1->to_vector());
        ++buffers;
      } else {
        moved += t0->to_vector() != t1->to_vector();
      }
    }
    CHECK(buffers > 0);
    CHECK(moved > 0);
  }
  SECTION("--trojan poisons the set and reports the attack success rate") {
    std::ofstream(dir + "/rules.json")
        << R"({"poison_fraction": 0.1, "rules": [{"trigger": "star", "source": "airplane", "target": "automobile"}]})";
    const test::CliRun t = test::spade_cli(common + " --epochs 1 --trojan " + dir + "/rules.json --out " + dir + "/t.json");
    INFO(t.err);
    REQUIRE(t.status == 0);
    CHECK(t.out.find("attack success rate of star") != std::string::npos);
    const nlohmann::json tr = nlohmann::json::parse(test::slurp(dir + "/t.train.json"));
    CHECK(tr.at("poisoned").at("star") == 2);  // round(0.1 * 20)
    CHECK(tr.at("train_images") == 22);
    const double asr = tr.at("attack_success_rate").at("star").get<double>();
    CHECK(asr >= 0.0);
    CHECK(asr <= 1.0);
    CHECK(fs::exists(dir + "/t.safetensors"));
  }
}

#endif  // SPADE_BINARY
