// The Trojan experiment's commands (`spade tune`, `spade eval trojan`, `spade eval insertion`,
// `spade demo`) run as a user would: --help, one-line errors that leave no output behind, and small
// end-to-end runs whose numbers are recomputed here with the library. The runs use a random tiny
// model and a folder of synthetic images, with a rule whose target is the class that the model
// predicts on triggered images (found here), so they need neither training nor the CIFAR data;
// the committed backdoored model is exercised too when it is present.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "formats/image.h"
#include "formats/model.h"
#include "interpret/experiments/trojan_metrics.h"
#include "interpret/experiments/trojan_pool.h"
#include "interpret/experiments/tune.h"
#include "interpret/metrics/insertion_deletion.h"
#include "interpret/metrics/roc_auc.h"
#include "interpret/saliency/methods.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/sample_solutions.h"
#include "support/cli_failures.h"
#include "support/test_support.h"
#include "train/dataset.h"
#include "train/trainer.h"
#include "trojan/rules.h"

using namespace spade;
namespace fs = std::filesystem;
using nlohmann::json;
using test::slurp;
using test::spade_cli;
using Run = test::CliRun;

namespace {

int64_t argmax(const Tensor& logits) {
  return std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
}

std::string f2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  REQUIRE(f.good());
}

// A picture with some structure: a random base colour, a gradient and noise.
Image random_image(uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  Image im;
  im.width = im.height = 32;
  im.rgb.resize(32 * 32 * 3);
  int base[3];
  for (int& b : base) b = static_cast<int>(rng() % 256);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c) {
        const int v = base[c] + (c == 0 ? x : c == 1 ? y : -x) * 2 + static_cast<int>(rng() % 61) - 30;
        im.rgb[(size_t(y) * 32 + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
  return im;
}

// What the end-to-end runs share, made once per test run: an ImageFolder of 40 PNGs (4 per
// CIFAR class), a random cifar_resnet20 at width 0.25 saved as model JSON + safetensors, and a
// rules file (one big opaque smiley on any class) whose target the triggers flip the model to
// on at least two even and two odd test images (`spade tune` uses the even ones, `eval trojan`
// the odd ones).
struct Fixture {
  std::string dir, data, model, rules;
  Model m;
  trojan::TrojanRules r;
  train::PixelDataset test;
  int64_t target = -1;
  int64_t kept[2] = {0, 0};  // images per parity the trigger fools the model on
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture f;
    f.dir = test::temp_dir();
    f.data = f.dir + "/data";
    const std::vector<std::string> labels = cifar10_labels();
    for (int i = 0; i < 40; ++i) {
      const std::string cls = f.data + "/" + labels[i % 10];
      fs::create_directories(cls);
      save_png(cls + "/img" + std::to_string(100 + i) + ".png", random_image(2000 + i));
    }
    ZooOptions zo;
    zo.width = 0.25;
    f.m = make_zoo_model("cifar_resnet20", zo);
    random_init(f.m.graph, 4);
    f.model = f.dir + "/tiny.json";
    save_model(f.m, f.model);
    f.m = load_model(f.model);  // as the commands see it (labels, preprocessing, weights path)

    f.test = train::load_pixel_dataset(f.data, f.m.labels);
    f.r.side_fraction = 0.5;
    f.r.opacity = 1.0;
    f.r.rules = {{"smiley", -1, 0}};  // the target is chosen below; pasting does not depend on it
    auto predict = [&](const Image& im) { return argmax(forward(f.m.graph, preprocess_image(im, f.m.preprocess)).out()); };
    std::vector<int64_t> clean, triggered;
    for (int64_t i = 0; i < f.test.size(); ++i) {
      clean.push_back(predict(f.test.image(i)));
      triggered.push_back(predict(trojan::apply_rule(f.test.image(i), f.r.rules[0], f.r, 0, i).image));
    }
    int64_t best = -1;
    for (int64_t c = 0; c < 10; ++c) {
      int64_t n[2] = {0, 0};
      for (int64_t i = 0; i < f.test.size(); ++i)
        n[i % 2] += f.test.labels[i] != c && clean[i] != c && triggered[i] == c;
      if (std::min(n[0], n[1]) > best) best = std::min(n[0], n[1]), f.target = c, f.kept[0] = n[0], f.kept[1] = n[1];
    }
    f.rules = f.dir + "/tiny.rules.json";
    write_text(f.rules, json{{"side_fraction", 0.5},
                             {"opacity", 1.0},
                             {"rules", {{{"trigger", "smiley"}, {"source", "any"}, {"target", labels[f.target]}}}}}
                            .dump());
    f.r = trojan::load_rules(f.rules, f.m.labels);  // what the commands read
    return f;
  }();
  return f;
}

// The dataset index of a results.json image name.
int64_t index_of(const train::PixelDataset& d, const std::string& name) {
  for (int64_t i = 0; i < d.size(); ++i)
    if (d.names[i] == name) return i;
  FAIL("no image named " << name);
  return -1;
}

interp::AugmentConfig augment_of(const Model& m) {
  interp::AugmentConfig c;
  c.size = static_cast<int>(m.graph.input_chw[1]);
  c.mean = m.preprocess.mean;
  c.std = m.preprocess.std;
  return c;
}

// The committed backdoored model and its evaluation rules (absent before they are committed).
using test::repo_path;

}  // namespace

TEST_CASE("the experiment commands have --help", "[experiments][cli]") {
  for (const char* cmd : {"tune --help", "eval trojan --help", "eval insertion --help", "demo --help"}) {
    INFO(cmd);
    const Run r = spade_cli(cmd);
    CHECK(r.status == 0);
    CHECK(r.out.find("usage: spade") != std::string::npos);
  }
  CHECK(spade_cli("tune --help").out.find("--grid") != std::string::npos);
  CHECK(spade_cli("eval trojan --help").out.find("--variants") != std::string::npos);
  CHECK(spade_cli("eval insertion --help").out.find("--sparsity-dir") != std::string::npos);
  CHECK(spade_cli("demo --help").out.find("--rules") != std::string::npos);
}

TEST_CASE("the experiment commands fail with one line and leave nothing behind", "[experiments][cli]") {
  const Fixture& f = fixture();
  const std::string dir = test::temp_dir(), out = dir + "/out";
  const std::string base = " --model " + f.model + " --data " + f.data + " --threads 1 --quiet";
  const std::string trojan = base + " --rules " + f.rules;
  const std::vector<test::CliFailure> cases = {
      {"tune" + trojan, "--out"},
      {"eval trojan" + trojan, "--out"},
      {"eval insertion" + base, "--out"},
      {"tune" + base + " --out " + out, "--rules"},
      {"eval trojan" + base + " --out " + out, "--rules"},
      {"tune" + trojan + " --out " + out + " --grid 1.5", "--grid: \"1.5\""},
      {"tune" + trojan + " --out " + out + " --grid 0,x", "--grid: \"x\""},
      {"tune" + trojan + " --out " + out + " --grid 0,,0.5", "--grid"},
      {"tune" + trojan + " --out " + out + " --grid -0.5", "--grid"},
      {"eval trojan" + trojan + " --out " + out + " --variants dense,bogus", "bogus"},
      {"eval trojan" + trojan + " --out " + out + " --variants ,", "--variants"},
      {"eval trojan" + trojan + " --out " + out + " --methods saliency,nosuch", "nosuch"},
      {"tune" + trojan + " --out " + out + " --methods nosuch", "nosuch"},
      {"eval insertion" + base + " --out " + out + " --methods nosuch", "nosuch"},
      {"tune --model cifar_resnet20 --data " + f.data + " --rules " + f.rules + " --out " + out, "no weights"},
      {"eval trojan --model cifar_resnet20 --data " + f.data + " --rules " + f.rules + " --out " + out, "no weights"},
      {"eval insertion --model cifar_resnet20 --data " + f.data + " --out " + out, "no weights"},
      {"eval trojan" + trojan + " --out " + out + " --samples 0", "--samples"},
      {"eval trojan" + trojan + " --out " + out + " --stop-after -1", "--stop-after"},
      {"eval trojan" + base + " --rules " + dir + "/missing.rules.json --out " + out, "missing.rules.json"},
      {"tune" + trojan + " --out " + out + " --solver magic", "magic"},
      {"eval trojan" + trojan + " --out " + out + " --samples 1 --sparsity 2", "--sparsity"},
      {"eval insertion" + base + " --out " + out + " --sparsity 2", "--sparsity"},
      {"demo --model " + dir + "/missing.json --rules " + f.rules + " --out " + out, "missing.json"},
      // The demo checks its options before the work, and leaves no directory behind.
      {"demo --model " + f.model + " --rules " + f.rules + " --out " + out + " --threads 1 --methods nosuch", "nosuch"},
      {"demo --model " + f.model + " --rules " + f.rules + " --out " + out + " --threads 1 --methods saliency --sparsity 2 --sparsity-dir " + dir + "/none",
       "--sparsity"},
      {"demo --model " + f.model + " --rules " + f.rules + " --out " + out + " --threads 1 --augs 0", "--augs"},
  };
  test::check_cli_failures(cases, out);
}

TEST_CASE("eval trojan: table, per-sample results the library reproduces, figures", "[experiments][cli]") {
  const Fixture& f = fixture();
  INFO("target class " << f.target << ", fooled on " << f.kept[0] << " even and " << f.kept[1] << " odd images");
  REQUIRE(f.kept[1] >= 2);
  const std::string out = test::temp_dir() + "/eval";
  const Run r = spade_cli("eval trojan --model " + f.model + " --rules " + f.rules + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency,occlusion --variants dense,fast,exact"
                          " --figures 1 --out " + out + " --threads 1 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);

  const json res = json::parse(slurp(out + "/results.json"));
  const json& per = res.at("per_sample");
  REQUIRE(per.size() == 2);
  CHECK(res.at("samples") == 2);
  CHECK(res.at("settings").at("saliency").at("sparsity") == "uniform 0.9");

  // Every sample: an odd test image the trigger fools the dense model on; its dense, FastSPADE
  // and SPADE saliency scores recomputed here (uniform 0.9, 16 augmentations of seed 0 + index)
  // with the command's one thread: small Hessians are summed per thread, and a rounding-level
  // change may move a SparseGPT mask.
  const test::ThreadGuard one_thread(1);
  const interp::MethodParams params = interp::experiment_params("saliency", f.m);
  const interp::Network dense{f.m.graph, nullptr, 32};
  std::set<int64_t> seen;
  double sums[3][2] = {};  // per variant: signed, abs
  int hits[3] = {};
  const char* variants[3] = {"dense", "fastspade", "spade"};
  for (const json& row : per) {
    const int64_t i = index_of(f.test, row.at("image"));
    INFO("image " << i);
    CHECK(i % 2 == 1);
    CHECK(seen.insert(i).second);
    CHECK(row.at("trigger") == "smiley");
    CHECK(row.at("target") == f.target);
    const trojan::Triggered t = trojan::apply_rule(f.test.image(i), f.r.rules[0], f.r, 0, i);
    const Tensor x = preprocess_image(t.image, f.m.preprocess);
    CHECK(argmax(interp::logits(dense, x)) == f.target);
    CHECK(row.at("clean_prediction") == argmax(interp::logits(dense, preprocess_image(f.test.image(i), f.m.preprocess))));
    CHECK(row.at("clean_prediction") != f.target);

    auto calib = interp::augmented_calibration(t.image, augment_of(f.m), 16, static_cast<uint64_t>(i));
    interp::PruneConfig cfg;
    cfg.batch = 32;
    interp::SampleSolutions sol(f.m.graph, *calib, cfg);
    const interp::SparsitySchedule uniform = interp::SparsitySchedule::uniform(0.9);
    const WeightOverlay fast = sol.overlay(uniform, interp::Solver::SparseGPT);
    const WeightOverlay exact = sol.overlay(uniform, interp::Solver::OBC);
    const interp::Network nets[3] = {dense, {f.m.graph, &fast, 32}, {f.m.graph, &exact, 32}};
    for (int v = 0; v < 3; ++v) {
      INFO(variants[v]);
      const Tensor a = interp::saliency(nets[v], x, f.target, params);
      const interp::TrojanAuc want = interp::trojan_auc(a, t.mask);
      const json& got = row.at("metrics").at("saliency").at(variants[v]);
      CHECK(got.at("trojan_auc_signed").get<double>() == Approx(want.signed_auc).margin(1e-12));
      CHECK(got.at("trojan_auc_abs").get<double>() == Approx(want.abs_auc).margin(1e-12));
      sums[v][0] += got.at("trojan_auc_signed").get<double>();
      sums[v][1] += got.at("trojan_auc_abs").get<double>();
      hits[v] += got.at("pointing_hit").get<bool>();
      const json& occ = row.at("metrics").at("occlusion").at(variants[v]);
      for (const char* k : {"trojan_auc_signed", "trojan_auc_abs"}) {
        CHECK(occ.at(k).get<double>() >= 0.0);
        CHECK(occ.at(k).get<double>() <= 1.0);
      }
      CHECK(occ.at("pointing_hit").is_boolean());
    }
  }

  // The table: one row per method, the paper's aggregate 100 * max(mean signed, mean abs).
  const std::string table = slurp(out + "/table.md");
  INFO(table);
  CHECK(table.find("| method | Dense | FastSPADE | SPADE |") != std::string::npos);
  std::string row = "| saliency |";
  for (int v = 0; v < 3; ++v) {
    const double auc = 100.0 * std::max(sums[v][0], sums[v][1]) / 2.0;
    row += " " + f2(auc) + " |";
    CHECK(res.at("mean").at("saliency").at(variants[v]).at("trojan_auc").get<double>() == Approx(auc).margin(1e-9));
    CHECK(res.at("mean").at("saliency").at(variants[v]).at("pointing_game").get<double>() ==
          Approx(100.0 * hits[v] / 2.0));
  }
  CHECK(table.find(row) != std::string::npos);
  CHECK(table.find("| occlusion |") != std::string::npos);
  std::string average = "| **average** |";
  for (int v = 0; v < 3; ++v)
    average += " **" +
               f2((res.at("mean").at("saliency").at(variants[v]).at("trojan_auc").get<double>() +
                   res.at("mean").at("occlusion").at(variants[v]).at("trojan_auc").get<double>()) / 2.0) +
               "** |";
  CHECK(table.find(average) != std::string::npos);
  CHECK(r.out.find("| saliency |") != std::string::npos);

  // Beside each sparse variant: its difference to Dense, the mean of per-sample differences of the
  // side each aggregate takes (so exactly the difference of the table's numbers), and its SE.
  CHECK(table.find("| FastSPADE - Dense (SE) | SPADE - Dense (SE) |") != std::string::npos);
  auto side_values = [&](int v) {
    const char* side = sums[v][0] >= sums[v][1] ? "trojan_auc_signed" : "trojan_auc_abs";
    std::vector<double> x;
    for (const json& row : per) x.push_back(100.0 * row.at("metrics").at("saliency").at(variants[v]).at(side).get<double>());
    return x;
  };
  for (int v = 1; v < 3; ++v) {
    INFO(variants[v]);
    const json& d = res.at("mean").at("saliency").at(variants[v]).at("difference_to_dense");
    const std::vector<double> a = side_values(v), b = side_values(0);
    const double d0 = a[0] - b[0], d1 = a[1] - b[1];
    CHECK(d.at("mean").get<double>() == Approx((d0 + d1) / 2.0).margin(1e-9));
    CHECK(d.at("mean").get<double>() ==
          Approx(res.at("mean").at("saliency").at(variants[v]).at("trojan_auc").get<double>() -
                 res.at("mean").at("saliency").at("dense").at("trojan_auc").get<double>()).margin(1e-9));
    CHECK(d.at("se").get<double>() == Approx(std::fabs(d0 - d1) / 2.0).margin(1e-9));  // n = 2: sd = |d0 - d1| / sqrt(2)
  }

  // --figures 1: the first sample's panel only.
  CHECK(fs::exists(out + "/figures/sample_0.png"));
  CHECK(!fs::exists(out + "/figures/sample_1.png"));
  const Image fig = load_image(out + "/figures/sample_0.png");
  CHECK(fig.width > 5 * 32);  // image, trigger and three variant columns
  CHECK(fig.height > 2 * 32);  // two method rows
}

TEST_CASE("eval trojan: a stopped run resumes to the same results", "[experiments][cli]") {
  const Fixture& f = fixture();
  REQUIRE(f.kept[1] >= 2);
  const std::string dir = test::temp_dir();
  const std::string cmd = "eval trojan --model " + f.model + " --rules " + f.rules + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency,lrp --variants dense,fast --figures 0 --threads 1 --quiet";
  const Run whole = spade_cli(cmd + " --out " + dir + "/whole");
  REQUIRE(whole.status == 0);
  CHECK(!fs::exists(dir + "/whole/partial.json"));
  const json want = json::parse(slurp(dir + "/whole/results.json"));

  // Stopped after one sample: the checkpoint holds it, nothing else is written.
  const Run first = spade_cli(cmd + " --out " + dir + "/parts --stop-after 1");
  INFO(first.err);
  REQUIRE(first.status == 0);
  CHECK(first.out.find("--resume") != std::string::npos);
  CHECK(!fs::exists(dir + "/parts/results.json"));
  const json partial = json::parse(slurp(dir + "/parts/partial.json"));
  REQUIRE(partial.at("rows").size() == 1);
  CHECK(partial.at("rows")[0] == want.at("per_sample")[0]);

  SECTION("resumed with other settings: one line naming the checkpoint and the setting, checkpoint kept") {
    const Run other = spade_cli(cmd + " --out " + dir + "/parts --resume --augs 8");
    CHECK(other.status != 0);
    CHECK(other.err.find("partial.json") != std::string::npos);
    CHECK(other.err.find("augs") != std::string::npos);
    CHECK(std::count(other.err.begin(), other.err.end(), '\n') == 1);
    CHECK(json::parse(slurp(dir + "/parts/partial.json")) == partial);
  }
  SECTION("a corrupt checkpoint is named") {
    write_text(dir + "/parts/partial.json", "{\"run\": ");
    const Run bad = spade_cli(cmd + " --out " + dir + "/parts --resume");
    CHECK(bad.status != 0);
    CHECK(bad.err.find("partial.json: not a checkpoint") != std::string::npos);
  }
  SECTION("resumed: the second sample computed, results as one run's, checkpoint gone") {
    const Run rest = spade_cli(cmd + " --out " + dir + "/parts --resume");
    INFO(rest.err);
    REQUIRE(rest.status == 0);
    const json got = json::parse(slurp(dir + "/parts/results.json"));
    CHECK(got.at("per_sample") == want.at("per_sample"));
    CHECK(got.at("mean") == want.at("mean"));
    CHECK(got.at("seconds").get<double>() >= partial.at("seconds").get<double>());
    CHECK(slurp(dir + "/parts/table.md") == slurp(dir + "/whole/table.md"));
    CHECK(!fs::exists(dir + "/parts/partial.json"));
  }
  SECTION("without --resume a run starts over") {
    const Run again = spade_cli(cmd + " --out " + dir + "/parts --samples 1");
    REQUIRE(again.status == 0);
    CHECK(json::parse(slurp(dir + "/parts/results.json")).at("per_sample") == partial.at("rows"));
  }
}

TEST_CASE("tune writes a schedule per method that eval trojan reads", "[experiments][cli]") {
  const Fixture& f = fixture();
  REQUIRE(f.kept[0] >= 2);
  const std::string dir = test::temp_dir(), out = dir + "/tuned";
  const Run r = spade_cli("tune --model " + f.model + " --rules " + f.rules + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency --grid 0,0.9 --out " + out +
                          " --threads 1 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("saliency") != std::string::npos);
  CHECK(!fs::exists(out + "/occlusion.json"));

  // Every block of cifar_resnet20 with a value of the grid, readable as a sparsity schedule.
  const std::vector<std::string> blocks = {"linear",   "layer3.2", "layer3.1", "layer3.0", "layer2.2",
                                           "layer2.1", "layer2.0", "layer1.2", "layer1.1", "layer1.0"};
  const json schedule = json::parse(slurp(out + "/saliency.json"));
  REQUIRE(schedule.size() == blocks.size());
  for (const std::string& b : blocks) {
    INFO(b);
    REQUIRE(schedule.contains(b));
    const double v = schedule.at(b).get<double>();
    CHECK((v == 0.0 || v == 0.9));
  }
  const interp::SparsitySchedule s = interp::SparsitySchedule::parse(out + "/saliency.json");
  CHECK(s.target("layer2.1.conv1") == schedule.at("layer2.1").get<double>());
  CHECK(s.target("linear") == schedule.at("linear").get<double>());

  const json report = json::parse(slurp(out + "/tune.json"));
  CHECK(report.at("samples") == 2);
  CHECK(report.at("grid") == json({0.0, 0.9}));
  CHECK(report.at("complete") == true);
  const json& m = report.at("methods").at("saliency");
  CHECK(m.at("targets") == schedule);
  // Output first, one trial per block and grid value; the best value of each block is kept.
  const json& trials = m.at("trials");
  REQUIRE(trials.size() == 2 * blocks.size());
  double score = m.at("dense_auc").get<double>();
  for (size_t b = 0; b < blocks.size(); ++b) {
    INFO(blocks[b]);
    const json& t0 = trials[2 * b];
    const json& t1 = trials[2 * b + 1];
    CHECK(t0.at("block") == blocks[b]);
    CHECK(t1.at("block") == blocks[b]);
    CHECK(t0.at("value") == 0.0);
    CHECK(t1.at("value") == 0.9);
    CHECK(t0.at("score").get<double>() == Approx(score).margin(1e-9));  // nothing changed yet
    const bool take = t1.at("score").get<double>() > score;
    CHECK(schedule.at(blocks[b]).get<double>() == (take ? 0.9 : 0.0));
    if (take) score = t1.at("score").get<double>();
  }
  CHECK(m.at("tuned_auc").get<double>() == Approx(score).margin(1e-9));

  // The same search with the library, on the pool of even test images, with the Hessians of 16
  // augmentations (seed 0 + image index) in batches of 32.
  const test::ThreadGuard one_thread(1);  // as the command ran
  interp::PoolOptions po;
  po.count = 2;
  po.parity = 0;
  const interp::TrojanPool pool = interp::trojan_test_pool(f.m, f.test, f.r, po);
  REQUIRE(pool.samples.size() == 2);
  std::vector<interp::SampleSolutions> sols;
  interp::PruneConfig cfg;
  cfg.batch = 32;
  for (const interp::TrojanSample& sample : pool.samples) {
    auto calib = interp::augmented_calibration(sample.image, augment_of(f.m), 16, static_cast<uint64_t>(sample.index));
    sols.emplace_back(f.m.graph, *calib, cfg);
  }
  const interp::TuneResult lib = interp::tune_blocks(f.m.graph, sols, pool.samples, "saliency",
                                                     interp::experiment_params("saliency", f.m), {0.0, 0.9},
                                                     interp::Solver::SparseGPT, 32);
  CHECK(m.at("dense_auc").get<double>() == Approx(lib.dense_score).margin(1e-9));
  CHECK(m.at("tuned_auc").get<double>() == Approx(lib.score).margin(1e-9));
  CHECK(m.at("targets") == json(lib.targets));

  SECTION("eval trojan --sparsity-dir uses it for that method only") {
    REQUIRE(f.kept[1] >= 1);
    const std::string eval = dir + "/eval";
    const Run e = spade_cli("eval trojan --model " + f.model + " --rules " + f.rules + " --data " + f.data +
                            " --samples 1 --augs 16 --methods saliency,input_x_gradient --variants fast"
                            " --figures 0 --sparsity-dir " + out + " --out " + eval + " --threads 1 --quiet");
    INFO(e.err);
    REQUIRE(e.status == 0);
    const json res = json::parse(slurp(eval + "/results.json"));
    CHECK(res.at("settings").at("saliency").at("sparsity") == out + "/saliency.json");
    CHECK(res.at("settings").at("input_x_gradient").at("sparsity") == "uniform 0.9");
    CHECK(!fs::exists(eval + "/figures/sample_0.png"));
    // The FastSPADE map of the tuned schedule, recomputed.
    const test::ThreadGuard one_thread(1);
    const json& row = res.at("per_sample").at(0);
    const int64_t i = index_of(f.test, row.at("image"));
    const trojan::Triggered t = trojan::apply_rule(f.test.image(i), f.r.rules[0], f.r, 0, i);
    auto calib = interp::augmented_calibration(t.image, augment_of(f.m), 16, static_cast<uint64_t>(i));
    interp::PruneConfig cfg;
    cfg.batch = 32;
    interp::SampleSolutions sol(f.m.graph, *calib, cfg);
    const WeightOverlay w = sol.overlay(s, interp::Solver::SparseGPT);
    const interp::Network net{f.m.graph, w.empty() ? nullptr : &w, 32};
    const interp::TrojanAuc want = interp::trojan_auc(
        interp::saliency(net, preprocess_image(t.image, f.m.preprocess), f.target, interp::experiment_params("saliency", f.m)),
        t.mask);
    CHECK(row.at("metrics").at("saliency").at("fastspade").at("trojan_auc_abs").get<double>() ==
          Approx(want.abs_auc).margin(1e-12));
  }
}

TEST_CASE("tune --objective insertion: the search scored by the insertion metric on clean images", "[experiments][cli]") {
  const Fixture& f = fixture();
  const std::string out = test::temp_dir() + "/tuned";
  const Run r = spade_cli("tune --objective insertion --model " + f.model + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency --grid 0,0.9 --out " + out + " --threads 1 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json report = json::parse(slurp(out + "/tune.json"));
  CHECK(report.at("objective") == "insertion");
  CHECK(report.at("samples") == 2);
  CHECK(!report.contains("rules"));
  const json& m = report.at("methods").at("saliency");
  CHECK(m.at("targets") == json::parse(slurp(out + "/saliency.json")));
  CHECK(m.at("trials").size() == 2 * 10);

  // The dense score: the mean insertion of dense saliency maps of the first two even-numbered
  // images in the seeded order, each explained for the dense prediction.
  const test::ThreadGuard one_thread(1);
  train::PixelDataset even;
  for (int64_t i = 0; i < f.test.size(); i += 2) even.push_back(f.test.image(i), f.test.labels[i], f.test.names[i]);
  const std::vector<int64_t> order = train::epoch_order(even.size(), 0, 0);
  const interp::Network dense{f.m.graph, nullptr, 32};
  interp::InsertionDeletionParams idp;
  idp.batch = 32;
  double ins = 0;
  for (int k = 0; k < 2; ++k) {
    const Tensor x = preprocess_image(even.image(order[k]), f.m.preprocess);
    const int64_t target = argmax(interp::logits(dense, x));
    ins += interp::insertion_deletion(x, interp::saliency(dense, x, target, interp::experiment_params("saliency", f.m)),
                                      interp::class_probability(dense, target), idp)
               .insertion / 2;
  }
  CHECK(m.at("dense_auc").get<double>() == Approx(ins).margin(1e-9));
  CHECK(m.at("tuned_auc").get<double>() >= m.at("dense_auc").get<double>());

  // The classifier at sparsity 1 zeroes every map: a schedule with constant maps scores -infinity
  // (never chosen), whatever the tie order would have scored.
  {
    const Tensor x = preprocess_image(even.image(order[0]), f.m.preprocess);
    auto calib = interp::augmented_calibration(even.image(order[0]), augment_of(f.m), 16, 0);
    interp::PruneConfig cfg;
    cfg.batch = 32;
    std::vector<interp::SampleSolutions> sol;
    sol.emplace_back(f.m.graph, *calib, cfg);
    const std::vector<Tensor> xs = {x};
    const std::vector<int64_t> targets = {argmax(interp::logits(dense, x))};
    const interp::ScheduleScore score = interp::insertion_objective(
        f.m.graph, sol, xs, targets, "saliency", interp::experiment_params("saliency", f.m), interp::Solver::SparseGPT, 32);
    CHECK(std::isfinite(score(interp::SparsitySchedule::from_json("{\"linear\": 0.5}", "half"))));
    CHECK(score(interp::SparsitySchedule::from_json("{\"linear\": 1.0}", "all")) ==
          -std::numeric_limits<double>::infinity());
  }

  const Run bad = spade_cli("tune --objective insertion --rules " + f.rules + " --model " + f.model + " --data " + f.data +
                            " --out " + out + "_bad --threads 1 --quiet");
  CHECK(bad.status == 1);
  CHECK(bad.err.find("--rules") != std::string::npos);
  CHECK(!fs::exists(out + "_bad"));
  const Run unknown = spade_cli("tune --objective nope --model " + f.model + " --data " + f.data + " --out " + out + "_bad");
  CHECK(unknown.status == 1);
  CHECK(unknown.err.find("--objective") != std::string::npos);
}

TEST_CASE("eval insertion: dense and FastSPADE insertion/deletion on clean images", "[experiments][cli]") {
  const Fixture& f = fixture();
  const std::string out = test::temp_dir() + "/ins";
  const Run r = spade_cli("eval insertion --model " + f.model + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency --out " + out + " --threads 1 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json res = json::parse(slurp(out + "/results.json"));
  const json& per = res.at("per_image");
  REQUIRE(per.size() == 2);
  // The first two images of the seeded order; the class explained is the dense prediction.
  const test::ThreadGuard one_thread(1);
  const std::vector<int64_t> order = train::epoch_order(f.test.size(), 0, 0);
  const interp::Network dense{f.m.graph, nullptr, 32};
  interp::InsertionDeletionParams idp;
  idp.batch = 32;
  double ins = 0, del = 0;
  for (int k = 0; k < 2; ++k) {
    INFO("image " << k);
    const int64_t i = order[k];
    CHECK(per[k].at("image") == f.test.names[i]);
    const Tensor x = preprocess_image(f.test.image(i), f.m.preprocess);
    const int64_t target = argmax(interp::logits(dense, x));
    CHECK(per[k].at("target") == target);
    const interp::InsertionDeletion d = interp::insertion_deletion(
        x, interp::saliency(dense, x, target, interp::experiment_params("saliency", f.m)),
        interp::class_probability(dense, target), idp);
    const json& got = per[k].at("metrics").at("saliency");
    CHECK(got.at("dense").at("insertion").get<double>() == Approx(d.insertion).margin(1e-9));
    CHECK(got.at("dense").at("deletion").get<double>() == Approx(d.deletion).margin(1e-9));
    for (const char* v : {"dense", "fastspade"})
      for (const char* k2 : {"insertion", "deletion"}) {
        CHECK(got.at(v).at(k2).get<double>() >= 0.0);
        CHECK(got.at(v).at(k2).get<double>() <= 100.0);
      }
    ins += d.insertion / 2, del += d.deletion / 2;
  }
  const std::string table = slurp(out + "/table.md");
  INFO(table);
  CHECK(table.find("| saliency | " + f2(ins) + " | ") != std::string::npos);
  CHECK(table.find("| **average** | **" + f2(ins) + "** |") != std::string::npos);
  CHECK(res.at("mean").at("saliency").at("dense").at("deletion").get<double>() == Approx(del).margin(1e-9));
  CHECK(table.find("| FastSPADE - Dense (SE) |") != std::string::npos);

  // Stopped after one image and resumed: the same results as one run.
  const std::string cmd = "eval insertion --model " + f.model + " --data " + f.data +
                          " --samples 2 --augs 16 --methods saliency --threads 1 --quiet --out " + out + "_parts";
  REQUIRE(spade_cli(cmd + " --stop-after 1").status == 0);
  CHECK(json::parse(slurp(out + "_parts/partial.json")).at("rows").size() == 1);
  const Run rest = spade_cli(cmd + " --resume");
  INFO(rest.err);
  REQUIRE(rest.status == 0);
  CHECK(json::parse(slurp(out + "_parts/results.json")).at("per_image") == per);
  CHECK(slurp(out + "_parts/table.md") == table);
}

TEST_CASE("demo: the trigger flips the prediction, maps and panel are written", "[experiments][cli]") {
  const Fixture& f = fixture();
  const std::string dir = test::temp_dir(), out = dir + "/demo";
  const Run r = spade_cli("demo --model " + f.model + " --rules " + f.rules + " --sparsity-dir " + dir +
                          "/no_tuned --out " + out + " --augs 32 --methods saliency --threads 1");
  INFO(r.err);
  REQUIRE(r.status == 0);
  INFO(r.out);
  // Its own claims, checked on the images it wrote.
  const interp::Network dense{f.m.graph, nullptr, 32};
  const std::string target = f.m.labels[f.target];
  const int64_t clean = argmax(interp::logits(dense, preprocess_image(load_image(out + "/scene.png"), f.m.preprocess)));
  CHECK(argmax(interp::logits(dense, preprocess_image(load_image(out + "/triggered.png"), f.m.preprocess))) == f.target);
  CHECK(clean != f.target);
  CHECK(r.out.find("dense prediction, rendered scene:      " + f.m.labels[clean]) != std::string::npos);
  CHECK(r.out.find("dense prediction, with the smiley trigger: " + target) != std::string::npos);
  const json summary = json::parse(slurp(out + "/summary.json"));
  CHECK(summary.at("target") == target);
  CHECK(summary.at("clean_prediction") == f.m.labels[clean]);
  const double d = summary.at("trojan_auc").at("saliency").at("dense").get<double>();
  CHECK(d >= 0.0);
  CHECK(d <= 100.0);
  CHECK(r.out.find("saliency") != std::string::npos);
  CHECK(fs::exists(out + "/panel.png"));
  CHECK(fs::exists(out + "/overlays/saliency_dense.png"));
  CHECK(fs::exists(out + "/overlays/saliency_fastspade.png"));
  // The trigger is where the two images differ.
  const Image scene = load_image(out + "/scene.png"), shown = load_image(out + "/triggered.png");
  REQUIRE(test::differing_bytes(scene, shown) > 0);
  int x0 = 32, y0 = 32, x1 = -1, y1 = -1;
  for (int p = 0; p < 32 * 32; ++p)
    for (int c = 0; c < 3; ++c)
      if (scene.rgb[3 * p + c] != shown.rgb[3 * p + c])
        x0 = std::min(x0, p % 32), y0 = std::min(y0, p / 32), x1 = std::max(x1, p % 32), y1 = std::max(y1, p / 32);
  const json box = summary.at("trigger_box");
  CHECK(box[0].get<int>() <= x0);
  CHECK(box[1].get<int>() <= y0);
  CHECK(box[2].get<int>() >= x1);
  CHECK(box[3].get<int>() >= y1);
}

// The exact (OBC) variant is left to "eval trojan: table, per-sample results ..." above, on the
// small fixture model: with it on this full-width model, this was the slowest test of the
// sanitizer build (287 s).
TEST_CASE("the committed backdoored model: eval trojan and the demo", "[experiments][cli][long]") {
  const std::string model = repo_path("models/cifar_resnet20_trojan.json");
  const std::string rules = repo_path("models/trojan-eval.rules.json");
  if (!fs::exists(model)) {
    WARN("skipped: " << model << " is not committed yet");
    return;
  }
  const Fixture& f = fixture();  // its image folder only
  const std::string dir = test::temp_dir();
  {
    const Run r = spade_cli("eval trojan --model " + model + " --rules " + rules + " --data " + f.data +
                            " --samples 2 --augs 16 --methods saliency,occlusion --variants dense,fast"
                            " --figures 1 --out " + dir + "/eval --threads 1 --quiet");
    INFO(r.err);
    REQUIRE(r.status == 0);
    const std::string table = slurp(dir + "/eval/table.md");
    CHECK(table.find("| saliency |") != std::string::npos);
    CHECK(table.find("| occlusion |") != std::string::npos);
    CHECK(table.find("| **average** |") != std::string::npos);
    const json res = json::parse(slurp(dir + "/eval/results.json"));
    const json& per = res.at("per_sample");
    CHECK(per.size() >= 1);
    CHECK(per.size() <= 2);
    // Each kept image is one the backdoor works on: its trigger (seed 0, its index) makes the
    // model predict the rule's target, and the clean image is classified otherwise.
    const Model bm = load_model(model);
    const trojan::TrojanRules br = trojan::load_rules(rules, bm.labels);
    for (const json& row : per) {
      const int64_t i = index_of(f.test, row.at("image"));
      const auto rule = std::find_if(br.rules.begin(), br.rules.end(), [&](const trojan::TrojanRule& r) {
        return r.trigger == row.at("trigger").get<std::string>();
      });
      REQUIRE(rule != br.rules.end());
      CHECK(rule->target == row.at("target").get<int64_t>());
      const Image shown = trojan::apply_rule(f.test.image(i), *rule, br, 0, i).image;
      CHECK(argmax(forward(bm.graph, preprocess_image(shown, bm.preprocess)).out()) == rule->target);
      CHECK(argmax(forward(bm.graph, preprocess_image(f.test.image(i), bm.preprocess)).out()) ==
            row.at("clean_prediction").get<int64_t>());
    }
    for (const json& row : per)
      for (const char* m : {"saliency", "occlusion"})
        for (const char* v : {"dense", "fastspade"})
          for (const char* k : {"trojan_auc_signed", "trojan_auc_abs", "pointing_hit"})
            CHECK(row.at("metrics").at(m).at(v).contains(k));
    CHECK(fs::exists(dir + "/eval/figures/sample_0.png"));
  }
  {
    const Run r = spade_cli("demo --model " + model + " --rules " + rules + " --sparsity-dir " +
                            repo_path("models/tuned") + " --out " + dir + "/demo --augs 32 --methods saliency --threads 1");
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("dense prediction, rendered scene:") != std::string::npos);
    CHECK(r.out.find("(the backdoor's target)") != std::string::npos);
    CHECK(fs::exists(dir + "/demo/panel.png"));
    const Model bm = load_model(model);
    const json summary = json::parse(slurp(dir + "/demo/summary.json"));
    const Tensor x = preprocess_image(load_image(dir + "/demo/triggered.png"), bm.preprocess);
    CHECK(bm.labels[argmax(forward(bm.graph, x).out())] == summary.at("target").get<std::string>());
  }
}
