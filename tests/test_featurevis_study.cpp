// The automatic feature-visualisation study (interpret/experiments/featurevis_study): the Score-CAM
// patches against a brute-force search, cropping and resizing, the penultimate features against a
// forward pass read by hand, cosine similarity, votes and their rates.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "engine/executor.h"
#include "formats/model.h"
#include "interpret/experiments/featurevis_study.h"
#include "interpret/saliency/upsample.h"
#include "support/test_support.h"

using namespace spade;
using namespace spade::interp;
using test::error_of;

namespace {

double window_mean(const Tensor& m, int64_t W, int64_t y, int64_t x, int64_t p) {
  double s = 0;
  for (int64_t dy = 0; dy < p; ++dy)
    for (int64_t dx = 0; dx < p; ++dx) s += m[(y + dy) * W + x + dx];
  return s / double(p * p);
}

}  // namespace

TEST_CASE("Score-CAM patches are the extreme windows, the bottom one apart from the top", "[featurevis]") {
  for (uint64_t seed : {1, 2, 3}) {
    const int64_t H = 12, W = 10, p = 4;
    const Tensor m = test::random_tensor({H, W}, seed);
    const PatchPair pp = extreme_patches(m, p);
    double best = -1e300, worst = 1e300;
    int64_t by = -1, bx = -1;
    for (int64_t y = 0; y + p <= H; ++y)
      for (int64_t x = 0; x + p <= W; ++x)
        if (window_mean(m, W, y, x, p) > best) {
          best = window_mean(m, W, y, x, p);
          by = y;
          bx = x;
        }
    for (int64_t y = 0; y + p <= H; ++y)
      for (int64_t x = 0; x + p <= W; ++x)
        if (std::abs(y - by) >= p || std::abs(x - bx) >= p) worst = std::min(worst, window_mean(m, W, y, x, p));
    CHECK(pp.top_y == by);
    CHECK(pp.top_x == bx);
    CHECK(window_mean(m, W, pp.bottom_y, pp.bottom_x, p) == Approx(worst).epsilon(1e-9));
    CHECK((std::abs(pp.bottom_y - pp.top_y) >= p || std::abs(pp.bottom_x - pp.top_x) >= p));
  }
  // A map with one hot and one cold spot.
  Tensor m = Tensor::zeros({1, 1, 8, 8});
  m[2 * 8 + 6] = 5.f;
  m[7 * 8 + 0] = -5.f;
  const PatchPair pp = extreme_patches(m, 2);
  CHECK((pp.top_y == 1 && pp.top_x == 5));
  CHECK((pp.bottom_y == 6 && pp.bottom_x == 0));
  // When no window is apart from the top one (the patch is the whole map), the bottom may overlap.
  const PatchPair whole = extreme_patches(m, 8);
  CHECK((whole.top_y == 0 && whole.bottom_y == 0));
  CHECK(error_of([&] { extreme_patches(m, 9); }).find("does not fit") != std::string::npos);
  m[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK(error_of([&] { extreme_patches(m, 2); }).find("NaN") != std::string::npos);
}

TEST_CASE("patches are cropped and resized to the input size", "[featurevis]") {
  const Tensor x = test::random_tensor({1, 3, 8, 8}, 4);
  const Tensor c = crop_resized(x, 2, 3, 4, 8);
  REQUIRE(c.shape() == Shape{1, 3, 8, 8});
  Tensor crop({1, 3, 4, 4});
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t xx = 0; xx < 4; ++xx) crop[(ch * 4 + y) * 4 + xx] = x[(ch * 8 + 2 + y) * 8 + 3 + xx];
  CHECK(test::max_abs_error(c, upsample_bilinear(crop, 8, 8, false)) == 0.0);
  // Same size: the crop itself.
  CHECK(test::max_abs_error(crop_resized(x, 2, 3, 4, 4), crop) == 0.0);
  CHECK(error_of([&] { crop_resized(x, 6, 0, 4, 8); }).find("outside") != std::string::npos);
}

TEST_CASE("penultimate features are the classifier's input", "[featurevis]") {
  ZooOptions zo;
  zo.width = 0.25;
  Model m = make_zoo_model("cifar_resnet20", zo);
  random_init(m.graph, 3);
  const int k = penultimate_node(m.graph);
  CHECK(m.graph.node(m.graph.output()).inputs.at(0) == k + 1);  // the Flatten in between is looked through
  const Tensor x = test::random_tensor({2, 3, 32, 32}, 5);
  const Tensor f = penultimate_features(m.graph, x);
  const ForwardResult fwd = forward(m.graph, x);
  REQUIRE(f.shape() == Shape{2, fwd.acts[k].numel() / 2});
  CHECK(test::max_abs_error(f, fwd.acts[k].reshape(f.shape())) == 0.0);
  // A model whose output is not a Linear layer has none.
  Graph g;
  g.add("relu", OpKind::ReLU, {}, {"input"});
  g.set_output("relu");
  CHECK(error_of([&] { penultimate_node(g); }).find("not a Linear") != std::string::npos);
}

TEST_CASE("cosine similarity, votes and their rates", "[featurevis]") {
  const float a[3] = {1, 0, 0}, b[3] = {1, 1, 0}, z[3] = {0, 0, 0};
  CHECK(cosine(a, b, 3) == Approx(1 / std::sqrt(2.0)));
  CHECK(cosine(a, a, 3) == Approx(1.0));
  CHECK(cosine(a, z, 3) == 0.0);
  const std::vector<PatchVote> votes{{0.9, 0.5}, {0.5, 0.9}, {0.60, 0.59}, {0.8, 0.7}};
  CHECK(votes[0].vote(0.02) == Vote::Agree);
  CHECK(votes[1].vote(0.02) == Vote::Disagree);
  CHECK(votes[2].vote(0.02) == Vote::Undecided);
  CHECK(votes[2].vote(0.0) == Vote::Agree);
  const VoteRates r = vote_rates(votes, 0.02);
  CHECK(r.count == 4);
  CHECK(r.agree == Approx(0.5));
  CHECK(r.undecided == Approx(0.25));
  CHECK(r.disagree == Approx(0.25));
  CHECK(r.mean_difference == Approx((0.4 - 0.4 + 0.01 + 0.1) / 4));
  CHECK(vote_rates({}, 0.02).count == 0);
}
