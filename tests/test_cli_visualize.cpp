// `spade visualize` and `spade eval featurevis` run as a user would, on the committed 32x32 CIFAR
// ResNet-20. visualize: --help, the files
// of a dense run and of a run with --image and --spade, determinism, and one-line errors that
// leave no output directory behind. The objective values it reports are recomputed here from the
// images it wrote (a forward pass of the model, the layer's mean read off the activations), and
// the SPADE variant's with a trace of the same image computed with the library. Every run is a
// few optimisation steps on one thread.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "formats/image.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "interpret/spade/calibration.h"
#include "interpret/spade/default_schedules.h"
#include "interpret/spade/trace.h"
#include "support/cli_failures.h"
#include "support/test_support.h"

using namespace spade;
namespace fs = std::filesystem;
using nlohmann::json;
using test::slurp;
using test::spade_cli;
using Run = test::CliRun;

namespace {

using test::repo_path;
std::string model_path() { return repo_path("models/cifar_resnet20_trojan.json"); }

// The command on the committed model, quiet and on one thread, writing into `out`.
Run visualize(const std::string& args, const std::string& out) {
  return spade_cli("visualize --model " + model_path() + " --threads 1 --quiet --out " + out + " " + args);
}

const Model& model() {
  static const Model m = load_model(model_path());
  return m;
}

// A 32x32 picture with some structure: a gradient per channel and noise.
Image synthetic_image(uint32_t seed) {
  std::mt19937 rng(seed);
  Image im;
  im.width = im.height = 32;
  im.rgb.resize(32 * 32 * 3);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c) {
        const int v = 60 + (c == 0 ? 5 * x : c == 1 ? 5 * y : 3 * (x + y)) + static_cast<int>(rng() % 41) - 20;
        im.rgb[(size_t(y) * 32 + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
  return im;
}

// Images (N, 3, H, W) in [0, 1] through the model's normalisation, as the model is fed.
Tensor normalised(const Tensor& images, const Preprocess& p) {
  Tensor x = Tensor::empty(images.shape());
  const int64_t plane = images.dim(2) * images.dim(3);
  for (int64_t i = 0; i < images.numel(); ++i) {
    const int64_t c = (i / plane) % 3;
    x[i] = (images[i] - p.mean[c]) / p.std[c];
  }
  return x;
}

// What the objectives read from one forward pass: the logits and the output of module layer3
// (its last node, layer3.2.relu2, (N, 64, 8, 8) at 32x32).
struct Readout {
  Tensor logits, layer3;
  double logit(int64_t n, int64_t k) const { return logits[n * logits.dim(1) + k]; }
  double layer3_mean(int64_t n, int64_t c) const {
    const int64_t C = layer3.dim(1), hw = layer3.dim(2) * layer3.dim(3);
    double s = 0;
    for (int64_t i = 0; i < hw; ++i) s += layer3[(n * C + c) * hw + i];
    return s / double(hw);
  }
};

Readout readout(const Tensor& images, const WeightOverlay* weights = nullptr) {
  const Model& m = model();
  const int layer3 = m.graph.find("layer3.2.relu2");
  REQUIRE(layer3 >= 0);
  ForwardOptions fo;
  fo.overlay = weights;
  const ForwardResult r = forward(m.graph, normalised(images, m.preprocess), fo);
  return {r.out(), r.acts.at(layer3)};
}

double final_of(const json& meta, const char* variant, size_t k) {
  return meta.at(variant).at("images").at(k).at("final").get<double>();
}

// Checks an NPY of visualisations: shape (n, 3, 32, 32), values in [0, 1].
void check_images(const Tensor& t, int64_t n) {
  REQUIRE(t.shape() == Shape{n, 3, 32, 32});
  float lo = 1, hi = 0;
  for (int64_t i = 0; i < t.numel(); ++i) lo = std::min(lo, t[i]), hi = std::max(hi, t[i]);
  CHECK(lo >= 0.f);
  CHECK(hi <= 1.f);
  CHECK(hi > lo);  // not a blank image
}

// Image n of the array as the 8-bit pixels a PNG of it should hold.
Image pixels_of(const Tensor& t, int64_t n) {
  Image im;
  im.width = int(t.dim(3));
  im.height = int(t.dim(2));
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      for (int c = 0; c < 3; ++c)
        im.rgb.push_back(uint8_t(std::lround(std::clamp(t[((n * 3 + c) * im.height + y) * im.width + x], 0.f, 1.f) * 255.f)));
  return im;
}

}  // namespace

TEST_CASE("visualize --help lists its options", "[cli][featurevis]") {
  const Run r = spade_cli("visualize --help");
  CHECK(r.status == 0);
  CHECK(r.out.find("usage: spade visualize") != std::string::npos);
  for (const char* opt : {"--objective", "--spade", "--steps", "--transforms", "--starts", "--image", "--vis-seed", "--out"}) {
    INFO(opt);
    CHECK(r.out.find(opt) != std::string::npos);
  }
}

TEST_CASE("visualize: two objectives with two starts each on the dense model", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const std::string out = test::temp_dir() + "/vis";
  const Run r = visualize("--objective \"logit:3,layer3:5\" --starts 2 --steps 16", out);
  INFO(r.err);
  REQUIRE(r.status == 0);

  // One PNG per image (starts in a row), the array, the curves and meta.json; nothing of SPADE.
  for (const char* f : {"dense_00.png", "dense_01.png", "dense_02.png", "dense_03.png", "dense.npy", "curve.png", "meta.json"}) {
    INFO(f);
    CHECK(fs::exists(out + "/" + f));
  }
  for (const char* f : {"dense.png", "dense_04.png", "spade.png", "spade.npy", "compare.png"}) {
    INFO(f);
    CHECK(!fs::exists(out + "/" + f));
  }
  const Tensor images = load_npy(out + "/dense.npy");
  check_images(images, 4);
  for (int64_t k = 0; k < 4; ++k) {
    char name[32];
    std::snprintf(name, sizeof name, "/dense_%02d.png", int(k));
    INFO(name);
    CHECK(test::differing_bytes(load_image(out + name), pixels_of(images, k)) == 0);
  }
  // Two starts of one objective are two different images.
  CHECK(test::differing_bytes(pixels_of(images, 0), pixels_of(images, 1)) > 0);
  CHECK(test::differing_bytes(pixels_of(images, 2), pixels_of(images, 3)) > 0);
  const Image curve = load_image(out + "/curve.png");
  CHECK(curve.width > 0);

  const json meta = json::parse(slurp(out + "/meta.json"));
  CHECK(meta.at("objectives") == json({"logit:3", "logit:3", "layer3:5", "layer3:5"}));
  CHECK(meta.at("settings").at("steps") == 16);
  CHECK(meta.at("settings").at("size") == 32);
  CHECK(meta.at("settings").at("starts") == 2);
  CHECK(meta.at("prediction").is_null());
  CHECK(meta.at("spade").is_null());
  CHECK(meta.at("spade_result").is_null());
  CHECK(meta.at("timings").at("optimise_s").get<double>() > 0.0);
  CHECK(meta.at("objective").at("final").get<double>() == final_of(meta, "dense", 0));
  const json& per = meta.at("dense").at("images");
  REQUIRE(per.size() == 4);
  const Readout got = readout(images);
  for (size_t k = 0; k < 4; ++k) {
    INFO("image " << k);
    const json& c = per[k].at("curve");
    REQUIRE(c.size() == 16);
    CHECK(per[k].at("objective") == meta.at("objectives")[k]);
    CHECK(per[k].at("first_step") == c.front());
    CHECK(per[k].at("last_step") == c.back());
    // The final values are those of the images it wrote, without transforms.
    const double want = k < 2 ? got.logit(k, 3) : got.layer3_mean(k, 5);
    CHECK(per[k].at("final").get<double>() == Approx(want).epsilon(1e-4).margin(1e-5));
  }
}

TEST_CASE("visualize: a channel range and a weighted sum", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const std::string out = test::temp_dir() + "/vis";
  const Run r = visualize("--objective \"layer3:0-2,0.5*layer3:4 + logit:1\" --steps 4", out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json meta = json::parse(slurp(out + "/meta.json"));
  CHECK(meta.at("objectives") == json({"layer3:0", "layer3:1", "layer3:2", "0.5*layer3:4 + logit:1"}));
  const Tensor images = load_npy(out + "/dense.npy");
  check_images(images, 4);
  const Readout got = readout(images);
  for (int64_t k = 0; k < 3; ++k)
    CHECK(final_of(meta, "dense", k) == Approx(got.layer3_mean(k, k)).epsilon(1e-4).margin(1e-5));
  CHECK(final_of(meta, "dense", 3) == Approx(0.5 * got.layer3_mean(3, 4) + got.logit(3, 1)).epsilon(1e-4).margin(1e-5));
}

TEST_CASE("visualize --image --spade fast: the predicted class on the dense model and the trace", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const Model& m = model();
  const std::string dir = test::temp_dir(), out = dir + "/vis", png = dir + "/picture.png";
  const Image picture = synthetic_image(7);
  save_png(png, picture);
  const Run r = visualize("--image " + png + " --spade fast --augs 16 --steps 8", out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  for (const char* f : {"dense.png", "spade.png", "compare.png", "dense.npy", "spade.npy", "curve.png", "meta.json"}) {
    INFO(f);
    CHECK(fs::exists(out + "/" + f));
  }

  // The default objective is the logit of the class the dense model predicts on the picture.
  const Tensor logits = forward(m.graph, preprocess_image(picture, m.preprocess)).out();
  const int64_t predicted = std::max_element(logits.data(), logits.data() + logits.dim(1)) - logits.data();
  const json meta = json::parse(slurp(out + "/meta.json"));
  CHECK(meta.at("input") == png);
  CHECK(meta.at("prediction").at("class") == predicted);
  CHECK(meta.at("prediction").at("label") == m.labels.at(predicted));
  CHECK(meta.at("objectives") == json({"logit:" + std::to_string(predicted)}));
  CHECK(meta.at("spade").at("mode") == "fast");
  CHECK(meta.at("spade").at("sparsity") == "built-in " + m.arch + "/other_methods");
  REQUIRE(!meta.at("spade_result").is_null());
  CHECK(meta.at("spade_result").at("images").at(0).at("curve").size() == 8);
  CHECK(meta.at("timings").at("trace_s").get<double>() > 0.0);
  CHECK(meta.at("timings").at("spade_optimise_s").get<double>() > 0.0);

  const Tensor dense = load_npy(out + "/dense.npy"), sparse = load_npy(out + "/spade.npy");
  check_images(dense, 1);
  check_images(sparse, 1);
  CHECK(test::differing_bytes(load_image(out + "/dense.png"), pixels_of(dense, 0)) == 0);
  CHECK(test::differing_bytes(load_image(out + "/spade.png"), pixels_of(sparse, 0)) == 0);
  // The same start and transforms on other weights: another image.
  CHECK(test::differing_bytes(pixels_of(dense, 0), pixels_of(sparse, 0)) > 0);
  CHECK(final_of(meta, "dense", 0) == Approx(readout(dense).logit(0, predicted)).epsilon(1e-4).margin(1e-5));

  // The SPADE variant's value is the logit under the picture's FastSPADE trace (16 augmentations
  // of seed 0, the architecture's built-in schedule for no particular method), computed here with
  // the library.
  interp::AugmentConfig ac;
  ac.size = 32;
  ac.mean = m.preprocess.mean;
  ac.std = m.preprocess.std;
  const auto calib = interp::augmented_calibration(picture, ac, 16, 0);
  interp::PruneConfig pc;
  pc.solver = interp::Solver::SparseGPT;
  pc.sparsity = interp::default_schedule(m.arch, "").value();
  const interp::Trace trace = interp::compute_trace(m.graph, *calib, pc);
  REQUIRE(!trace.weights.empty());
  CHECK(final_of(meta, "spade_result", 0) ==
        Approx(readout(sparse, &trace.weights).logit(0, predicted)).epsilon(1e-4).margin(1e-5));

  // compare.png: picture | dense | SPADE, each at least 128 pixels wide.
  const Image compare = load_image(out + "/compare.png");
  CHECK(compare.width >= 3 * 128);
  CHECK(compare.height >= 128);
}

TEST_CASE("visualize is deterministic given --vis-seed, whatever --batch", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const std::string dir = test::temp_dir();
  const std::string args = "--objective \"logit:3,layer3:5\" --starts 2 --steps 8";
  for (const char* run : {"a", "b"}) {
    const Run r = visualize(args, dir + "/" + run);
    INFO(r.err);
    REQUIRE(r.status == 0);
  }
  const Run s = visualize(args + " --vis-seed 1", dir + "/seed1");
  INFO(s.err);
  REQUIRE(s.status == 0);
  const Run b = visualize(args + " --batch 3", dir + "/batch3");
  INFO(b.err);
  REQUIRE(b.status == 0);
  const std::string a = slurp(dir + "/a/dense.npy");
  REQUIRE(!a.empty());
  CHECK(a == slurp(dir + "/b/dense.npy"));
  CHECK(a == slurp(dir + "/batch3/dense.npy"));
  CHECK(a != slurp(dir + "/seed1/dense.npy"));
}

TEST_CASE("visualize raises a class logit", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const std::string out = test::temp_dir() + "/vis";
  const Run r = visualize("--objective \"logit:1,logit:6\" --steps 32", out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json meta = json::parse(slurp(out + "/meta.json"));
  const Readout got = readout(load_npy(out + "/dense.npy"));
  for (size_t k = 0; k < 2; ++k) {
    INFO("image " << k);
    const json& im = meta.at("dense").at("images").at(k);
    CHECK(im.at("first_step") == im.at("curve").at(0));
    CHECK(im.at("final").get<double>() > im.at("first_step").get<double>());
    CHECK(got.logit(k, k == 0 ? 1 : 6) > im.at("first_step").get<double>());
  }
}

TEST_CASE("visualize fails with one line and leaves no output directory", "[cli][featurevis]") {
  REQUIRE(fs::exists(model_path()));
  const std::string dir = test::temp_dir(), out = dir + "/out";
  const std::string png = dir + "/picture.png";
  save_png(png, synthetic_image(3));
  const std::string base = "visualize --model " + model_path() + " --threads 1 --quiet --steps 2";
  const std::vector<test::CliFailure> cases = {
      {base + " --out " + out, "--objective"},
      {base + " --objective logit:1", "--out"},
      {base + " --objective nosuch:1 --out " + out, "nosuch"},
      {base + " --objective layer3:64 --out " + out, "out of range"},
      {base + " --objective logit:10 --out " + out, "out of range"},
      {base + " --objective layer3:0@20,20 --out " + out, "outside"},
      {base + " --objective logit:1 --spade fast --out " + out, "--image"},
      {base + " --objective logit:1 --spade sometimes --image " + png + " --out " + out, "sometimes"},
      {base + " --objective logit:1 --transforms bogus --out " + out, "bogus"},
      {base + " --objective logit:1 --steps 0 --out " + out, "--steps"},
      {base + " --objective logit:1 --starts 0 --out " + out, "--starts"},
      {base + " --objective logit:1 --batch 0 --out " + out, "--batch"},
      {base + " --objective logit:1 --lr -1 --out " + out, "--lr"},
      {base + " --objective logit:1 --size 4 --out " + out, "--size"},
      {"visualize --model " + dir + "/missing.json --objective logit:1 --out " + out, "missing.json"},
      {base + " --image " + dir + "/missing.png --out " + out, "missing.png"},
      {base + " --image " + png + " --input " + dir + "/x.npy --out " + out, "exactly one"},
  };
  test::check_cli_failures(cases, out);
}

TEST_CASE("eval featurevis: votes, rates and stuck counts agree with the per-image record", "[cli][featurevis][long]") {
  REQUIRE(fs::exists(model_path()));
  const std::string dir = test::temp_dir(), data = dir + "/data", out = dir + "/fv";
  const char* classes[3] = {"airplane", "automobile", "bird"};
  for (int i = 0; i < 6; ++i) {
    fs::create_directories(data + "/" + classes[i % 3]);
    save_png(data + "/" + classes[i % 3] + "/img" + std::to_string(i) + ".png", synthetic_image(40 + i));
  }
  const std::string base = "eval featurevis --model " + model_path() + " --data " + data +
                           " --threads 1 --augs 16 --steps 8 --limit 4";
  const Run r = spade_cli(base + " --out " + out + " --figures --margin 0.01");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("| Dense |") != std::string::npos);
  const nlohmann::json res = nlohmann::json::parse(test::slurp(out + "/results.json"));
  REQUIRE(res["per_image"].size() == 4);
  CHECK(fs::exists(out + "/table.md"));
  for (int k = 0; k < 4; ++k) CHECK(fs::exists(out + "/figures/00" + std::to_string(k) + ".png"));
  // The images are spread over the folder (class by class): indices 0, 1, 3, 4 of 6.
  CHECK(res["per_image"][0]["image"] == "airplane/img0.png");
  CHECK(res["per_image"][2]["label"] == "automobile");
  for (const char* variant : {"dense", "spade"}) {
    int agree = 0, undecided = 0;
    double mean = 0;
    for (const auto& row : res["per_image"]) {
      const auto& v = row[variant];
      const double d = v["cos_top"].get<double>() - v["cos_bottom"].get<double>();
      const std::string expect = d > 0.01 ? "agree" : (d < -0.01 ? "disagree" : "undecided");
      CHECK(v["vote"] == expect);
      agree += expect == "agree";
      undecided += expect == "undecided";
      mean += d / 4;
      // The patches lie inside the 32x32 image (16x16 by default) and do not overlap.
      const int ty = row["top_patch"][0], tx = row["top_patch"][1], by = row["bottom_patch"][0], bx = row["bottom_patch"][1];
      CHECK((ty >= 0 && tx >= 0 && ty + 16 <= 32 && tx + 16 <= 32 && by + 16 <= 32 && bx + 16 <= 32));
      CHECK((std::abs(ty - by) >= 16 || std::abs(tx - bx) >= 16));
    }
    INFO(variant);
    CHECK(res[variant]["agree"].get<double>() == Approx(agree / 4.0));
    CHECK(res[variant]["undecided"].get<double>() == Approx(undecided / 4.0));
    CHECK(res[variant]["mean_difference"].get<double>() == Approx(mean).margin(1e-12));
  }
  int stuck = 0;
  for (const auto& row : res["per_image"]) stuck += row["spade"]["stuck"].get<bool>();
  CHECK(res["spade_stuck"] == stuck);
  // The dense visualisation of one class does not depend on the image: images of the same predicted
  // class share its objective values.
  std::map<int64_t, double> dense_final;
  for (const auto& row : res["per_image"]) {
    const int64_t c = row["predicted"];
    const double v = row["dense"]["objective_final"];
    if (dense_final.count(c)) CHECK(dense_final[c] == v);
    dense_final[c] = v;
  }

  test::check_cli_failures({{base + " --out " + out + "x --limit 0", "--limit"},
                            {base + " --out " + out + "x --spade off", "--spade"},
                            {base + " --out " + out + "x --margin -1", "--margin"},
                            {base + " --out " + out + "x --patch 40", "--patch"},
                            {base + " --out " + out + "x --steps 0", "--steps"},
                            {"eval featurevis --model " + model_path() + " --out " + out + "x", "--data"},
                            {base + " --out " + out + "x --data " + dir + "/nowhere", "nowhere"}},
                           out + "x");
}
