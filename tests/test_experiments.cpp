// The Trojan experiment's library (interpret/experiments, interpret/spade/sample_solutions): the
// cached per-sample solutions against compute_trace, the block names and schedules of the greedy
// search, the search itself against a re-implementation here, the Trojan AUC aggregate on maps
// whose ROC AUC is counted by hand, the test pool's invariants, and the size-dependent settings.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "formats/image.h"
#include "formats/model.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/experiments/trojan_pool.h"
#include "interpret/experiments/tune.h"
#include "interpret/metrics/roc_auc.h"
#include "interpret/saliency/methods.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/sample_solutions.h"
#include "interpret/spade/trace.h"
#include "support/test_support.h"
#include "train/dataset.h"
#include "train/trainer.h"
#include "trojan/rules.h"

using namespace spade;
using namespace spade::interp;

namespace {

// CIFAR ResNet-20 at a quarter of its width (4/8/16 channels): the real block structure, tiny
// matrices, so OBC and many schedules stay fast.
Model tiny_model(uint64_t seed) {
  ZooOptions zo;
  zo.width = 0.25;
  Model m = make_zoo_model("cifar_resnet20", zo);
  random_init(m.graph, seed);
  return m;
}

// A 32x32 picture with some structure: a random base colour per image, a gradient and noise.
Image random_image(uint64_t seed, int side = 32) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  Image im;
  im.width = im.height = side;
  im.rgb.resize(size_t(side) * side * 3);
  int base[3];
  for (int& b : base) b = static_cast<int>(rng() % 256);
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x)
      for (int c = 0; c < 3; ++c) {
        const int v = base[c] + (c == 0 ? x : c == 1 ? y : -x) * 2 + static_cast<int>(rng() % 61) - 30;
        im.rgb[(size_t(y) * side + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
  return im;
}

AugmentConfig augment_of(const Model& m) {
  AugmentConfig c;
  c.size = 32;
  c.mean = m.preprocess.mean;
  c.std = m.preprocess.std;
  return c;
}

int64_t argmax(const Tensor& logits) {
  return std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

// The ten blocks of cifar_resnet20 (three stages of three basic blocks, then the classifier;
// the stem conv1 is not pruned), output first.
const std::vector<std::string> kResnet20Blocks = {"linear",   "layer3.2", "layer3.1", "layer3.0", "layer2.2",
                                                  "layer2.1", "layer2.0", "layer1.2", "layer1.1", "layer1.0"};

// A schedule written here as JSON (independently of block_schedule_json).
SparsitySchedule schedule_of(const std::map<std::string, double>& targets) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : targets) j[k] = v;
  return SparsitySchedule::from_json(j.dump(), "test schedule");
}

// An (1, 1, 2, 2) attribution holding `v` in raster order.
Tensor map2x2(std::vector<float> v) { return Tensor::from_vector({1, 1, 2, 2}, v); }

}  // namespace

TEST_CASE("finalising a Hessian twice changes nothing", "[experiments]") {
  const Model m = tiny_model(1);
  auto calib = augmented_calibration(random_image(5), augment_of(m), 8, 3);
  const std::vector<PlannedLayer> layers = plan_layers(m.graph, SparsitySchedule::uniform(0.5), {});
  TraceTimings t;
  std::vector<HessianAccumulator> hs = collect_hessians(m.graph, layers, *calib, 8, t);
  REQUIRE(!hs.empty());
  for (HessianAccumulator& h : hs) {
    const std::vector<double> raw = h.hessian().to_host();
    h.finalize();
    const std::vector<double> once = h.hessian().to_host();
    const double energy = h.output_energy();
    h.finalize();
    CHECK(h.hessian().to_host() == once);
    CHECK(h.output_energy() == energy);
    // The first call did scale by 2/n: the matrix is not what was accumulated.
    CHECK(once != raw);
  }
}

TEST_CASE("SampleSolutions overlays equal compute_trace bit for bit", "[experiments]") {
  const Model m = tiny_model(4);
  const Graph& g = m.graph;
  auto calib = augmented_calibration(random_image(11), augment_of(m), 16, 9);
  PruneConfig base;  // default batch, solver settings; sparsity and solver are set per case below
  SampleSolutions sol(g, *calib, base);
  REQUIRE(sol.layers().size() == 19);  // every conv but the stem, and the classifier

  const SparsitySchedule uniform = SparsitySchedule::uniform(0.5);
  // Per block, with explicit zeros, a target shared with the uniform schedule (cache reuse) and
  // blocks left out (dense).
  const SparsitySchedule blocks =
      schedule_of({{"layer3.2", 0.9}, {"layer3.0", 0.0}, {"layer2.1", 0.5}, {"layer1.0", 0.3}, {"linear", 0.0}});
  struct Case {
    const char* name;
    const SparsitySchedule* schedule;
  };
  // Both solvers on the same SampleSolutions: the cache must tell them apart.
  for (Solver solver : {Solver::SparseGPT, Solver::OBC})
    for (const Case& c : {Case{"uniform 0.5", &uniform}, Case{"per block", &blocks}}) {
      INFO(solver_name(solver) << ", " << c.name);
      PruneConfig cfg = base;
      cfg.solver = solver;
      cfg.sparsity = *c.schedule;
      const Trace ref = compute_trace(g, *calib, cfg);
      const WeightOverlay got = sol.overlay(*c.schedule, solver);

      std::vector<std::string> ref_keys, got_keys;
      for (const auto& [k, v] : ref.weights) ref_keys.push_back(k);
      for (const auto& [k, v] : got) got_keys.push_back(k);
      CHECK(got_keys == ref_keys);
      for (const auto& [k, w] : ref.weights) {
        INFO(k);
        REQUIRE(got.count(k) == 1);
        CHECK(same_bits(got.at(k), w));
      }
      // Exactly the layers with a non-zero target, and those are really pruned.
      for (const PlannedLayer& p : sol.layers()) {
        INFO(p.layer.name);
        const double target = c.schedule->target(p.layer.name);
        REQUIRE(got.count(p.layer.weight_key) == (target > 0 ? 1u : 0u));
        if (target <= 0) continue;
        const Tensor& w = got.at(p.layer.weight_key);
        int64_t zeros = 0;
        for (int64_t i = 0; i < w.numel(); ++i) zeros += w[i] == 0.f;
        CHECK(double(zeros) / double(w.numel()) == Approx(target).margin(0.1));
      }
      // Asked again: the cached tensors themselves.
      const WeightOverlay again = sol.overlay(*c.schedule, solver);
      REQUIRE(again.size() == got.size());
      for (const auto& [k, w] : got) {
        CHECK(again.at(k).data() == w.data());
        CHECK(same_bits(again.at(k), w));
      }
    }
  // The two solvers give different weights (else the comparison above could not tell them apart).
  const WeightOverlay fast = sol.overlay(uniform, Solver::SparseGPT), exact = sol.overlay(uniform, Solver::OBC);
  int differing = 0;
  for (const auto& [k, w] : fast) differing += !same_bits(w, exact.at(k));
  CHECK(differing > 0);
  // A schedule with every target 0 needs no solve at all.
  CHECK(sol.overlay(SparsitySchedule::uniform(0.0), Solver::SparseGPT).empty());

  // A schedule naming a block the model does not have is an error, as it is for compute_trace
  // (else a schedule tuned for another model would silently leave every layer dense).
  const SparsitySchedule foreign = schedule_of({{"layer4.1", 0.9}, {"layer1.0", 0.5}});
  PruneConfig cfg = base;
  cfg.sparsity = foreign;
  const std::string trace_error = test::error_of([&] { compute_trace(g, *calib, cfg); });
  REQUIRE(trace_error.find("layer4.1") != std::string::npos);
  CHECK(test::error_of([&] { sol.overlay(foreign, Solver::SparseGPT); }).find("layer4.1") != std::string::npos);
}

TEST_CASE("blocks of layer names and the tuned schedule's round trip", "[experiments]") {
  CHECK(block_of("layer3.1.conv2") == "layer3.1");
  CHECK(block_of("layer1.0.downsample.0") == "layer1.0");
  CHECK(block_of("linear") == "linear");
  CHECK(block_of("conv1") == "conv1");
  CHECK(block_of("fc") == "fc");
  CHECK(block_of("features.4.conv.0.0") == "features.4");
  CHECK(block_of("features.17.conv.2") == "features.17");
  CHECK(block_of("classifier.1") == "classifier.1");

  const Model m = tiny_model(1);
  const std::vector<PlannedLayer> layers = plan_layers(m.graph, SparsitySchedule::uniform(0.5), {});
  CHECK(blocks_output_first(layers) == kResnet20Blocks);
  // With the stem selected it is its own block, the last one (closest to the input).
  std::vector<std::string> with_stem = kResnet20Blocks;
  with_stem.push_back("conv1");
  CHECK(blocks_output_first(plan_layers(m.graph, SparsitySchedule::uniform(0.5), {true, false})) == with_stem);

  // Every block with its own target; each layer gets its block's.
  std::map<std::string, double> targets;
  for (size_t i = 0; i < kResnet20Blocks.size(); ++i) targets[kResnet20Blocks[i]] = i % 3 == 0 ? 0.0 : 0.05 * double(i);
  const SparsitySchedule s = block_schedule(targets);
  for (const PlannedLayer& p : layers) {
    INFO(p.layer.name);
    const std::string block = p.layer.name == "linear" ? "linear" : p.layer.name.substr(0, 8);  // "layerS.B"
    CHECK(s.target(p.layer.name) == targets.at(block));
  }
  // The JSON is what SparsitySchedule reads from a file, with the same targets.
  const std::string path = test::temp_dir() + "/saliency.json";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    const std::string text = block_schedule_json(targets);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  const SparsitySchedule read = SparsitySchedule::parse(path);
  for (const PlannedLayer& p : layers) CHECK(read.target(p.layer.name) == s.target(p.layer.name));
  const nlohmann::json j = nlohmann::json::parse(block_schedule_json(targets));
  CHECK(j.size() == targets.size());
  for (const auto& [k, v] : targets) CHECK(j.at(k).get<double>() == v);
}

TEST_CASE("tune_blocks is the greedy search, block by block from the output", "[experiments]") {
  const Model m = tiny_model(4);
  const Graph& g = m.graph;
  trojan::TrojanRules rules;
  rules.rules = {{"smiley", -1, 2}, {"star", -1, 5}};
  std::vector<TrojanSample> samples;
  for (int i = 0; i < 2; ++i) {
    TrojanSample s;
    const trojan::Triggered t = trojan::apply_rule(random_image(40 + i), rules.rules[i], rules, 1, i);
    s.image = t.image;
    s.mask = t.mask;
    s.x = preprocess_image(s.image, m.preprocess);
    s.target = rules.rules[i].target;
    s.index = i;
    samples.push_back(s);
  }
  const std::vector<double> grid = {0.0, 0.5, 0.9};
  const MethodParams params = experiment_params("saliency", m);
  const int64_t batch = 8;
  PruneConfig cfg;
  auto make_solutions = [&] {
    std::vector<SampleSolutions> sols;
    for (const TrojanSample& s : samples) {
      auto calib = augmented_calibration(s.image, augment_of(m), 16, 100 + s.index);
      sols.emplace_back(g, *calib, cfg);
    }
    return sols;
  };
  std::vector<SampleSolutions> tuned_with = make_solutions(), mine = make_solutions();
  int64_t calls = 0, last_done = 0, last_total = 0;
  const TuneResult r = tune_blocks(g, tuned_with, samples, "saliency", params, grid, Solver::SparseGPT, batch,
                                   [&](int64_t done, int64_t total) {
                                     ++calls;
                                     CHECK(done > last_done);
                                     last_done = done;
                                     last_total = total;
                                   });

  // The mean Trojan AUC of a schedule, computed here from the maps' ROC AUCs.
  auto mean_auc = [&](const std::map<std::string, double>& targets) {
    const SparsitySchedule schedule = schedule_of(targets);
    double signed_sum = 0, abs_sum = 0;
    for (size_t i = 0; i < samples.size(); ++i) {
      const WeightOverlay w = mine[i].overlay(schedule, Solver::SparseGPT);
      const Network net{g, w.empty() ? nullptr : &w, batch};
      const TrojanAuc a = trojan_auc(saliency(net, samples[i].x, samples[i].target, params), samples[i].mask);
      signed_sum += a.signed_auc;
      abs_sum += a.abs_auc;
    }
    return 100.0 * std::max(signed_sum, abs_sum) / double(samples.size());
  };
  std::map<std::string, double> targets;
  for (const std::string& b : kResnet20Blocks) targets[b] = 0.0;
  const double dense = mean_auc(targets);
  double current = dense;
  std::vector<TuneTrial> expected;
  for (const std::string& block : kResnet20Blocks) {
    double best = current, best_value = 0.0;
    for (double v : grid) {
      std::map<std::string, double> t = targets;
      t[block] = v;
      const double s = mean_auc(t);
      expected.push_back({block, v, s});
      if (s > best) best = s, best_value = v;
    }
    targets[block] = best_value;
    current = best;
  }

  CHECK(r.dense_score == Approx(dense).margin(1e-9));
  CHECK(r.score == Approx(current).margin(1e-9));
  CHECK(r.targets == targets);
  REQUIRE(r.trials.size() == expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    INFO(expected[k].block << " = " << expected[k].value);
    CHECK(r.trials[k].block == expected[k].block);
    CHECK(r.trials[k].value == expected[k].value);
    CHECK(r.trials[k].score == Approx(expected[k].score).margin(1e-9));
  }
  // The search did choose something (else the comparison says little) and never got worse.
  CHECK(std::any_of(targets.begin(), targets.end(), [](const auto& kv) { return kv.second > 0; }));
  CHECK(r.score >= r.dense_score);
  // Progress: one call per evaluated schedule, counted up to the total.
  CHECK(last_total == 1 + int64_t(kResnet20Blocks.size() * grid.size()));
  CHECK(last_done == last_total);
  CHECK(calls == last_total);

  CHECK(test::error_of([&] {
          std::vector<SampleSolutions> none;
          tune_blocks(g, none, samples, "saliency", params, grid, Solver::SparseGPT, batch);
        }).find("one trace per tuning sample") != std::string::npos);
}

TEST_CASE("TrojanScore: the mean AUCs' maximum and the pointing game", "[experiments]") {
  // Mask: the right column of a 2x2 map (pixels 1 and 3 in raster order).
  const std::vector<uint8_t> mask = {0, 1, 0, 1};
  double sa = -1, aa = -1;
  bool hit = false;

  SECTION("empty") {
    TrojanScore s;
    CHECK(s.auc() == 0.0);
    CHECK(s.pointing() == 0.0);
  }
  SECTION("a map that is the mask scores 1, and points at it") {
    TrojanScore s;
    s.add(map2x2({0, 1, 0, 1}), mask, &sa, &aa, &hit);
    CHECK(sa == 1.0);
    CHECK(aa == 1.0);
    CHECK(hit);
    CHECK(s.auc() == Approx(100.0));
    CHECK(s.pointing() == Approx(100.0));
  }
  SECTION("a negative map on the mask: signed 0, absolute 1, and the maximum is off the mask") {
    TrojanScore s;
    s.add(map2x2({0, -1, 0, -1}), mask, &sa, &aa, &hit);
    CHECK(sa == 0.0);
    CHECK(aa == 1.0);
    CHECK(!hit);
    CHECK(s.auc() == Approx(100.0));
    CHECK(s.pointing() == 0.0);
  }
  SECTION("channels are summed before ranking") {
    // Channel 0 alone would put the mask first; the sum puts it last.
    TrojanScore s;
    s.add(Tensor::from_vector({1, 2, 2, 2}, {0, 1, 0, 1, 0, -3, 0, -3}), mask, &sa, &aa, &hit);
    CHECK(sa == 0.0);
    CHECK(aa == 1.0);
    CHECK(!hit);
  }
  SECTION("100 * max(mean signed, mean absolute), not the mean of the maxima") {
    // Positives {2, -3}, negatives {1, 0} (raster: 1, 2, 0, -3):
    //   signed: 2>1, 2>0, -3<1, -3<0 -> 2/4;  absolute {2, 3} vs {1, 0}: 4/4.
    // Positives {0.5, 3}, negatives {-2, 1}:
    //   signed: .5>-2, .5<1, 3>-2, 3>1 -> 3/4;  absolute {.5, 3} vs {2, 1}: .5<2, .5<1, 3>2, 3>1 -> 2/4.
    // Positives {1, 1}, negatives {1, -1}: signed: ties count 1/2 -> (.5 + 1 + .5 + 1)/4 = 3/4;
    //   absolute: all four pairs tie -> 2/4.
    const std::vector<Tensor> maps = {map2x2({1, 2, 0, -3}), map2x2({-2, 0.5f, 1, 3}), map2x2({1, 1, -1, 1})};
    const double want_signed[] = {0.5, 0.75, 0.75}, want_abs[] = {1.0, 0.5, 0.5};
    // Most salient (signed, first in raster order on ties): pixel 1 (on), pixel 3 (on), pixel 0 (off).
    const bool want_hit[] = {true, true, false};
    TrojanScore s;
    double signed_sum = 0, abs_sum = 0;
    int hits = 0;
    for (size_t i = 0; i < maps.size(); ++i) {
      INFO("map " << i);
      s.add(maps[i], mask, &sa, &aa, &hit);
      CHECK(sa == Approx(want_signed[i]));
      CHECK(aa == Approx(want_abs[i]));
      CHECK(hit == want_hit[i]);
      signed_sum += want_signed[i], abs_sum += want_abs[i], hits += want_hit[i];
    }
    CHECK(s.n == 3);
    CHECK(s.signed_sum == Approx(signed_sum));
    CHECK(s.abs_sum == Approx(abs_sum));
    // Both means are 2/3 so far; one more map puts the signed side ahead.
    s.add(map2x2({-2, 0.5f, 1, 3}), mask);  // signed .75, absolute .5
    CHECK(s.auc() == Approx(100.0 * (2.0 + 0.75) / 4.0));  // signed wins: 68.75; mean of maxima would be 81.25
    CHECK(s.pointing() == Approx(100.0 * 3.0 / 4.0));
    // The absolute side wins when the maps are negative on the trigger.
    TrojanScore t;
    t.add(map2x2({0, -1, 0, -1}), mask);  // signed 0, absolute 1
    t.add(map2x2({1, 2, 0, -3}), mask);   // signed .5, absolute 1
    CHECK(t.auc() == Approx(100.0));
    CHECK(t.pointing() == Approx(50.0));
  }
}

TEST_CASE("the Trojan test pool keeps triggered images that flip the dense prediction", "[experiments]") {
  // A random tiny model on a synthetic set; big opaque triggers, so that some of them change its
  // prediction. Which class they change it to is found here, and the rules are made to target it.
  // It resizes and crops as a photo model does (an ImageNet model: 256, then 224): the test
  // images are loaded at its input size already (train::eval_load_options), so the pool must
  // only normalise them; resizing again would zoom in and move the trigger off its mask.
  Model m = tiny_model(4);
  m.preprocess.resize = 40;
  m.preprocess.crop = 32;
  const Preprocess normalise = normalisation_of(m.preprocess);
  train::PixelDataset test;
  for (int i = 0; i < 60; ++i) test.push_back(random_image(1000 + i), i % 10, "img" + std::to_string(i) + ".png");
  trojan::TrojanRules rules;
  rules.side_fraction = 0.5;
  rules.opacity = 1.0;
  const uint64_t seed = 3;
  auto predict = [&](const Image& im) { return argmax(forward(m.graph, preprocess_image(im, normalise)).out()); };
  std::vector<int64_t> clean(test.size());
  for (int64_t i = 0; i < test.size(); ++i) clean[i] = predict(test.image(i));
  // rule 0: smiley on any class; rule 1: star on images of class `source` only. Placement depends
  // on (seed, index) and the icon, not on the target, so the flips can be counted first.
  const int64_t source = 7;
  auto flips_to = [&](const std::string& trigger, int64_t i) {
    trojan::TrojanRule r{trigger, -1, 0};
    return predict(trojan::apply_rule(test.image(i), r, rules, seed, i).image);
  };
  std::vector<int64_t> smiley(test.size()), star(test.size());
  for (int64_t i = 0; i < test.size(); ++i) smiley[i] = flips_to("smiley", i), star[i] = flips_to("star", i);
  int64_t target = -1, most = 0;
  for (int64_t c = 0; c < 10; ++c) {
    if (c == source) continue;
    int64_t n = 0;
    for (int64_t i = 0; i < test.size(); ++i) n += smiley[i] == c && clean[i] != c && test.labels[i] != c;
    if (n > most) most = n, target = c;
  }
  INFO("target " << target << ", " << most << " flips");
  REQUIRE(most >= 4);
  rules.rules = {{"smiley", -1, target}, {"star", source, target}};

  // The pool recomputed from its definition: candidates in epoch order, candidate k gets rule
  // k mod 2 or the next one that applies; kept when the trigger flips the prediction to the target.
  struct Kept {
    int64_t index;
    size_t rule;
  };
  auto expected_pool = [&](int parity) {
    std::vector<Kept> out;
    int64_t k = 0, tried = 0;
    for (int64_t i : train::epoch_order(test.size(), seed, 0)) {
      if (parity >= 0 && i % 2 != parity) continue;
      const int64_t candidate = k++;
      for (size_t t = 0; t < 2; ++t) {
        const size_t r = (candidate + t) % 2;
        if (!trojan::rule_applies(rules.rules[r], test.labels[i])) continue;
        ++tried;
        const int64_t with = r == 0 ? smiley[i] : star[i];
        if (with == target && clean[i] != target) out.push_back({i, r});
        break;
      }
    }
    return std::make_pair(out, tried);
  };

  for (int parity : {-1, 0, 1}) {
    INFO("parity " << parity);
    const auto [want, tried] = expected_pool(parity);
    PoolOptions po;
    po.seed = seed;
    po.parity = parity;
    po.count = 1000;
    const TrojanPool pool = trojan_test_pool(m, test, rules, po);
    CHECK(pool.tried == tried);
    REQUIRE(pool.samples.size() == want.size());
    for (size_t k = 0; k < want.size(); ++k) {
      const TrojanSample& s = pool.samples[k];
      INFO("sample " << k << ": image " << s.index);
      CHECK(s.index == want[k].index);
      CHECK(s.rule == want[k].rule);
      if (parity >= 0) CHECK(s.index % 2 == parity);
      CHECK(s.name == test.names[s.index]);
      CHECK(s.trigger == rules.rules[s.rule].trigger);
      CHECK(s.target == target);
      CHECK(s.clean_prediction == clean[s.index]);
      CHECK(s.clean_prediction != target);
      CHECK(predict(s.image) == target);
      const trojan::Triggered t = trojan::apply_rule(test.image(s.index), rules.rules[s.rule], rules, seed, s.index);
      CHECK(s.mask == t.mask);
      CHECK(test::differing_bytes(s.image, t.image) == 0);
      CHECK(test::max_abs_error(s.x, preprocess_image(t.image, normalise)) == 0.0);
      CHECK(argmax(forward(m.graph, s.x).out()) == target);
    }
    if (parity < 0) REQUIRE(want.size() >= 3);
  }

  SECTION("count stops the pool early; the same options give the same pool") {
    PoolOptions po;
    po.seed = seed;
    po.count = 2;
    const TrojanPool a = trojan_test_pool(m, test, rules, po), b = trojan_test_pool(m, test, rules, po);
    const auto want = expected_pool(-1).first;
    REQUIRE(a.samples.size() == 2);
    CHECK(a.samples[0].index == want[0].index);
    CHECK(a.samples[1].index == want[1].index);
    REQUIRE(b.samples.size() == 2);
    for (size_t k = 0; k < 2; ++k) {
      CHECK(a.samples[k].index == b.samples[k].index);
      CHECK(a.samples[k].mask == b.samples[k].mask);
      CHECK(test::max_abs_error(a.samples[k].x, b.samples[k].x) == 0.0);
    }
    CHECK(a.tried == b.tried);
    // Another seed: another image order.
    po.seed = seed + 1;
    po.count = 1000;
    const TrojanPool c = trojan_test_pool(m, test, rules, po);
    std::vector<int64_t> ia, ic;
    for (const auto& s : trojan_test_pool(m, test, rules, PoolOptions{1000, seed, -1}).samples) ia.push_back(s.index);
    for (const auto& s : c.samples) ic.push_back(s.index);
    CHECK(ia != ic);
  }
}

TEST_CASE("experiment settings follow the input size", "[experiments]") {
  const Model cifar = tiny_model(1);
  ZooOptions zo;
  zo.width = 0.25;
  const Model imagenet = make_zoo_model("resnet18", zo);
  REQUIRE(cifar.graph.input_chw[1] == 32);
  REQUIRE(imagenet.graph.input_chw[1] == 224);

  const MethodParams small = experiment_params("occlusion", cifar);
  CHECK(small.window == std::array<int64_t, 3>{3, 4, 4});
  CHECK(small.stride == std::array<int64_t, 3>{3, 2, 2});
  CHECK(experiment_params("lime", cifar).segmentation == "slic");
  CHECK(small.mean == cifar.preprocess.mean);
  CHECK(small.std == cifar.preprocess.std);

  const MethodParams big = experiment_params("occlusion", imagenet);
  CHECK(big.window == std::array<int64_t, 3>{3, 15, 15});
  CHECK(big.stride == std::array<int64_t, 3>{3, 8, 8});
  CHECK(experiment_params("lime", imagenet).segmentation == "quickshift");

  // LIME's sample count: the paper's 1000 unless overridden; other methods keep theirs.
  CHECK(experiment_params("lime", cifar).samples == 1000);
  CHECK(experiment_params("lime", cifar, 0).samples == 1000);
  CHECK(experiment_params("lime", cifar, 123).samples == 123);
  CHECK(experiment_params("gradient_shap", cifar, 123).samples == paper_preset("gradient_shap").samples);

  // The ten methods of the paper's Table 1, each known to the registry.
  CHECK(paper_methods().size() == 10);
  for (const std::string& name : paper_methods()) CHECK_NOTHROW(find_method(name));
}
