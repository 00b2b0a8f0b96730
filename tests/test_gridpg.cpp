// The grid pointing game: the metric on maps whose answer is known, the grids (assembly, class
// selection, seeding), and `spade eval gridpg` on a model whose evidence location is known exactly:
// it detects four pure colours with ReLU-gated 1x1 filters, so the gradient of a class's logit is
// non-zero only on the pixels of that colour, i.e. inside the cell holding the photo of that class.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "formats/image.h"
#include "formats/model.h"
#include "interpret/experiments/grid_pool.h"
#include "interpret/metrics/grid_pointing.h"
#include "interpret/metrics/paired_difference.h"
#include "support/cli_failures.h"
#include "support/test_support.h"
#include "train/dataset.h"

using namespace spade;
namespace fs = std::filesystem;
using nlohmann::json;
using test::slurp;
using test::spade_cli;
using Run = test::CliRun;

namespace {

const std::vector<std::string> kColours = {"red", "green", "blue", "yellow"};

// Class c responds to colour c only: channel c = ReLU(w_c . x + b_c) is positive on pure colour c
// (inputs in [0, 1]) and negative on the other three; logit c = 40 * its spatial mean.
Model colour_model() {
  Model m;
  m.arch = "custom";
  OpAttrs conv;
  conv.in_channels = 3;
  conv.out_channels = 4;
  conv.bias = true;
  m.graph.add("detect", OpKind::Conv2d, conv, {"input"});
  m.graph.add("relu", OpKind::ReLU, OpAttrs{}, {"detect"});
  m.graph.add("avgpool", OpKind::AdaptiveAvgPool2d, OpAttrs{}, {"relu"});
  m.graph.add("flatten", OpKind::Flatten, OpAttrs{}, {"avgpool"});
  OpAttrs fc;
  fc.in_channels = 4;
  fc.out_channels = 4;
  fc.bias = true;
  m.graph.add("fc", OpKind::Linear, fc, {"flatten"});
  m.graph.set_output("fc");
  m.graph.input_chw = {3, 32, 32};
  const float w[4][3] = {{2, -2, -2}, {-2, 2, -2}, {-2, -2, 2}, {1, 1, -2}};
  const float b[4] = {-1, -1, -1, -1.2f};
  for (int c = 0; c < 4; ++c) {
    for (int k = 0; k < 3; ++k) (*m.graph.find_param("detect.weight"))[c * 3 + k] = w[c][k];
    (*m.graph.find_param("detect.bias"))[c] = b[c];
    (*m.graph.find_param("fc.weight"))[c * 4 + c] = 40.f;
  }
  // Photos come at any size: resized and cropped as a photo model does, then left in [0, 1].
  m.preprocess.resize = 40;
  m.preprocess.crop = 32;
  m.preprocess.mean = {0, 0, 0};
  m.preprocess.std = {1, 1, 1};
  m.labels = kColours;
  return m;
}

Image solid(int w, int h, int colour, int noise_seed) {
  const uint8_t rgb[4][3] = {{230, 20, 25}, {15, 225, 30}, {20, 25, 235}, {230, 225, 20}};
  Image im;
  im.width = w;
  im.height = h;
  for (int p = 0; p < w * h; ++p)
    for (int c = 0; c < 3; ++c) im.rgb.push_back(static_cast<uint8_t>(rgb[colour][c] + (p * 7 + noise_seed * 13 + c) % 11));
  return im;
}

struct Fixture {
  std::string dir, data, model;
  Model m;
};

// 12 photos (48x40), three per colour, as an ImageFolder.
const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture f;
    f.dir = test::temp_dir();
    f.data = f.dir + "/photos";
    for (int i = 0; i < 12; ++i) {
      fs::create_directories(f.data + "/" + kColours[i % 4]);
      save_png(f.data + "/" + kColours[i % 4] + "/p" + std::to_string(i) + ".png", solid(48, 40, i % 4, i));
    }
    f.m = colour_model();
    f.model = f.dir + "/colours.json";
    save_model(f.m, f.model);
    f.m = load_model(f.model);
    return f;
  }();
  return f;
}

Tensor map_of(int64_t h, int64_t w, const std::vector<float>& v) {
  Tensor t({1, 1, h, w});
  std::copy(v.begin(), v.end(), t.data());
  return t;
}

}  // namespace

TEST_CASE("grid pointing: the share of the positive attribution inside the cell", "[experiments][gridpg]") {
  // 4x4 map, 2x2 grid: cell 0 = rows 0-1, columns 0-1; cell 3 = rows 2-3, columns 2-3.
  const Tensor inside = map_of(4, 4, {1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  interp::GridScore s = interp::grid_pointing(inside, 2, 0);
  CHECK(s.localisation == 1.0);
  CHECK(s.hit);
  s = interp::grid_pointing(inside, 2, 3);
  CHECK(s.localisation == 0.0);
  CHECK(!s.hit);
  // Uniform: 1/4 in each cell. Negative values do not count.
  CHECK(interp::grid_pointing(map_of(4, 4, std::vector<float>(16, 2.f)), 2, 1).localisation == Approx(0.25));
  const Tensor mixed = map_of(4, 4, {-9, -9, 1, 1, -9, -9, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0});
  s = interp::grid_pointing(mixed, 2, 1);
  CHECK(s.localisation == Approx(4.0 / 6.0));
  CHECK(!s.hit);  // the maximum (2) is in cell 2
  CHECK(interp::grid_pointing(mixed, 2, 2).hit);
  CHECK(interp::grid_pointing(mixed, 2, 0).localisation == 0.0);
  // Channels are summed first: +3 and -3 cancel.
  Tensor two({1, 2, 2, 2});
  for (int i = 0; i < 4; ++i) two[i] = 3.f, two[4 + i] = -3.f;
  CHECK(interp::grid_pointing(two, 2, 0).localisation == 0.0);
  // No positive attribution at all scores 0.
  CHECK(interp::grid_pointing(map_of(4, 4, std::vector<float>(16, -1.f)), 2, 0).localisation == 0.0);
  // Odd sides split as integers allow: 5 rows in 2 cells = rows 0-1 and 2-4.
  const std::vector<uint8_t> mask = interp::grid_cell_mask(5, 3, 2, 2);
  std::vector<uint8_t> want(15, 0);
  for (int y = 2; y < 5; ++y) want[y * 3 + 0] = 1;
  CHECK(mask == want);
  CHECK_THROWS_WITH(interp::grid_pointing(inside, 2, 4), Catch::Contains("cell 4"));
  CHECK_THROWS_WITH(interp::grid_pointing(inside, 5, 0), Catch::Contains("does not fit"));
  CHECK_THROWS(interp::grid_pointing(map_of(4, 4, std::vector<float>(16, NAN)), 2, 0));
}

TEST_CASE("paired differences: mean and standard error", "[experiments][gridpg]") {
  const interp::PairedDifference d = interp::paired_difference({3, 5, 7, 9}, {1, 2, 3, 4});
  // differences 2, 3, 4, 5: mean 3.5, sd sqrt(5/3), se sqrt(5/3)/2
  CHECK(d.mean == Approx(3.5));
  CHECK(d.se == Approx(std::sqrt(5.0 / 3.0) / 2.0));
  CHECK(d.significant());
  CHECK(!interp::paired_difference({1, -1, 1, -1}, {0, 0, 0, 0}).significant());
  CHECK(interp::paired_difference({1}, {0}).se == 0.0);
  CHECK(!interp::paired_difference({1}, {0}).significant());
  CHECK_THROWS(interp::paired_difference({1, 2}, {1}));
}

TEST_CASE("grid pool: correct and confident photos of different classes, one per cell", "[experiments][gridpg]") {
  const Fixture& f = fixture();
  const train::PixelDataset photos = train::load_pixel_dataset(f.data, f.m.labels, {}, train::eval_load_options(f.m.preprocess));
  REQUIRE(photos.height == 32);
  interp::GridPoolOptions po;
  po.count = 7;  // 28 cells from 12 photos: photos serve several grids
  po.seed = 5;
  const interp::GridPool pool = interp::grid_pool(f.m, photos, po);
  CHECK(pool.classified == 12);
  CHECK(pool.eligible == 12);
  REQUIRE(pool.grids.size() == 7);
  std::map<int64_t, int> uses;
  for (const interp::GridSample& g : pool.grids) {
    REQUIRE(g.classes.size() == 4);
    CHECK(std::set<int64_t>(g.classes.begin(), g.classes.end()).size() == 4);
    CHECK(g.image.width == 32);
    CHECK(g.image.height == 32);
    for (int c = 0; c < 4; ++c) {
      INFO("cell " << c << ": " << g.names[c]);
      CHECK(photos.labels[g.indices[c]] == g.classes[c]);
      CHECK(photos.names[g.indices[c]] == g.names[c]);
      CHECK(g.confidence[c] > 0.99);
      ++uses[g.indices[c]];
      // The cell holds the photo, resized to 16x16.
      const Image cell = resize_image(photos.image(g.indices[c]), 16, 16);
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 16; ++x)
          for (int ch = 0; ch < 3; ++ch)
            REQUIRE(g.image.rgb[((size_t(c / 2) * 16 + y) * 32 + size_t(c % 2) * 16 + x) * 3 + ch] ==
                    cell.rgb[(size_t(y) * 16 + x) * 3 + ch]);
    }
    CHECK(test::max_abs_error(g.x, preprocess_image(g.image, normalisation_of(f.m.preprocess))) == 0.0);
  }
  CHECK(uses.size() == 12);  // every photo used before any is used a third time
  for (const auto& [photo, n] : uses) CHECK(n >= 2);

  // The same seed gives the same grids; another seed other grids.
  const interp::GridPool again = interp::grid_pool(f.m, photos, po);
  for (size_t g = 0; g < 7; ++g) CHECK(again.grids[g].names == pool.grids[g].names);
  po.seed = 6;
  const interp::GridPool other = interp::grid_pool(f.m, photos, po);
  bool differs = false;
  for (size_t g = 0; g < 7; ++g) differs |= other.grids[g].names != pool.grids[g].names;
  CHECK(differs);

  // A photo the model gets wrong is not used: relabel two.
  train::PixelDataset wrong = photos;
  for (int i : {0, 1}) wrong.labels[i] = (wrong.labels[i] + 1) % 4;
  const interp::GridPool w = interp::grid_pool(f.m, wrong, po);
  CHECK(w.eligible == 10);
  for (const interp::GridSample& g : w.grids)
    for (int64_t i : g.indices) CHECK(i > 1);
  // Too few confident classes.
  po.min_confidence = 1.0;
  CHECK_THROWS_WITH(interp::grid_pool(f.m, photos, po), Catch::Contains("fewer than 4 classes"));
}

TEST_CASE("eval gridpg: gradient maps of a model that reads one cell score 100", "[experiments][gridpg][cli]") {
  const Fixture& f = fixture();
  const std::string dir = test::temp_dir();
  const std::string cmd = "eval gridpg --model " + f.model + " --data " + f.data +
                          " --grids 3 --augs 8 --methods saliency,input_x_gradient,integrated_gradients"
                          " --variants dense,fast --sparsity 0.5 --figures 1 --threads 1 --quiet";
  const Run r = spade_cli(cmd + " --out " + dir + "/a");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json res = json::parse(slurp(dir + "/a/results.json"));
  CHECK(res.at("grids") == 3);
  REQUIRE(res.at("per_grid").size() == 3);
  // (Guided backprop is not among them: its map is the filter's weights, whose channel sum is
  // negative here, and the score counts positive attribution only.)
  for (const char* method : {"saliency", "input_x_gradient", "integrated_gradients"}) {
    INFO(method);
    CHECK(res.at("mean").at(method).at("dense").at("localisation").get<double>() == Approx(100.0));
    CHECK(res.at("mean").at(method).at("dense").at("pointing_game").get<double>() == Approx(100.0));
    for (const json& g : res.at("per_grid"))
      for (const json& v : g.at("metrics").at(method).at("dense").at("localisation")) CHECK(v.get<double>() == Approx(1.0));
  }
  const std::string table = slurp(dir + "/a/table.md");
  INFO(table);
  CHECK(table.find("| saliency | 100.00 |") != std::string::npos);
  CHECK(table.find("FastSPADE - Dense (SE)") != std::string::npos);
  CHECK(fs::exists(dir + "/a/figures/grid_0.png"));
  CHECK(!fs::exists(dir + "/a/figures/grid_1.png"));
  CHECK(!fs::exists(dir + "/a/partial.json"));

  SECTION("a stopped run resumes to the same results") {
    const Run first = spade_cli(cmd + " --out " + dir + "/b --stop-after 1");
    REQUIRE(first.status == 0);
    CHECK(!fs::exists(dir + "/b/results.json"));
    const Run rest = spade_cli(cmd + " --out " + dir + "/b --resume");
    INFO(rest.err);
    REQUIRE(rest.status == 0);
    const json got = json::parse(slurp(dir + "/b/results.json"));
    CHECK(got.at("per_grid") == res.at("per_grid"));
    CHECK(slurp(dir + "/b/table.md") == table);
  }
}

TEST_CASE("tune --objective gridpg: the search scored by the localisation on grids", "[experiments][gridpg][cli]") {
  const Fixture& f = fixture();
  const std::string out = test::temp_dir() + "/tuned";
  const Run r = spade_cli("tune --objective gridpg --model " + f.model + " --data " + f.data + " --split 1:0" +
                          " --samples 2 --augs 8 --methods saliency --grid 0,0.9 --out " + out + " --threads 1 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const json report = json::parse(slurp(out + "/tune.json"));
  CHECK(report.at("objective") == "gridpg");
  CHECK(report.at("samples") == 2);
  const json& m = report.at("methods").at("saliency");
  // Dense saliency of this model puts everything in the right cell.
  CHECK(m.at("dense_auc").get<double>() == Approx(100.0));
  CHECK(m.at("targets") == json::parse(slurp(out + "/saliency.json")));
  CHECK(m.at("tuned_auc").get<double>() >= m.at("dense_auc").get<double>());
  const Run bad = spade_cli("tune --objective insertion --cells 3 --model " + f.model + " --data " + f.data + " --out " +
                            out + "_bad --threads 1 --quiet");
  CHECK(bad.status == 1);
  CHECK(bad.err.find("--cells") != std::string::npos);
  CHECK(!fs::exists(out + "_bad"));
}

TEST_CASE("eval gridpg fails with one line and leaves nothing behind", "[experiments][gridpg][cli]") {
  const Fixture& f = fixture();
  const std::string out = test::temp_dir() + "/out";
  const std::string base = "eval gridpg --model " + f.model + " --data " + f.data + " --threads 1 --quiet --methods saliency";
  const std::vector<test::CliFailure> cases = {
      {base, "--out"},
      {base + " --out " + out + " --grids 0", "--grids"},
      {base + " --out " + out + " --cells 0", "--cells"},
      {base + " --out " + out + " --min-confidence 2", "--min-confidence"},
      {base + " --out " + out + " --min-confidence 1", "fewer than 4 classes"},
      {base + " --out " + out + " --cells 3", "grid"},
      {base + " --out " + out + " --variants dense,bogus", "bogus"},
      {"eval gridpg --model " + f.model + " --data " + f.dir + "/missing --out " + out, "missing"},
  };
  test::check_cli_failures(cases, out);
}
