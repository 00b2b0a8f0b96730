// The evaluation metrics against hand-computed values and independent brute-force versions: ROC
// AUC with ties (against a pairwise count), the pointing game, insertion/deletion in both variants
// with hand-made "models" whose curves have closed forms, and RISE's blur against a direct
// convolution written here.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "engine/error.h"
#include "engine/graph.h"
#include "interpret/metrics/insertion_deletion.h"
#include "interpret/metrics/pointing_game.h"
#include "interpret/metrics/roc_auc.h"
#include "interpret/saliency/network.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
using namespace spade::interp;

namespace {

// The AUC by definition: over all (positive, negative) pairs, 1 when the positive scores higher,
// 1/2 on a tie. Counted in half-units, so exact.
double pairwise_auc(const std::vector<float>& scores, const std::vector<uint8_t>& positive) {
  int64_t n_pos = 0, n_neg = 0, twice = 0;
  for (uint8_t p : positive) (p ? n_pos : n_neg)++;
  if (n_pos == 0 || n_neg == 0) return 0.5;
  for (size_t i = 0; i < scores.size(); ++i)
    for (size_t j = 0; j < scores.size(); ++j)
      if (positive[i] && !positive[j]) twice += scores[i] > scores[j] ? 2 : scores[i] == scores[j] ? 1 : 0;
  return double(twice) / (2.0 * double(n_pos) * double(n_neg));
}

bool same_bits(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, size_t(n) * sizeof(float)) == 0; }

bool all_zero(const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (a[i] != 0.f) return false;
  return true;
}

// Pixel order by descending score, equal scores by ascending index, found by scanning the distinct
// values from the top (no sort involved).
std::vector<int64_t> expected_order(const std::vector<float>& map) {
  std::vector<float> levels = map;
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  std::vector<int64_t> order;
  for (auto v = levels.rbegin(); v != levels.rend(); ++v)
    for (int64_t p = 0; p < int64_t(map.size()); ++p)
      if (map[p] == *v) order.push_back(p);
  return order;
}

// A linear "model" on 10x10 images: with s_p the map value of pixel p (a permutation of 1..100),
// weight(c, p) = s_p / (3 * 5050 * x(c, p)), so every pixel of x that is present adds s_p / 5050
// and the unmodified image scores 1.
struct LinearModel {
  Tensor x;                 // (1, 3, 10, 10), no zeros
  std::vector<float> map;   // s_p
  double operator()(const float* image) const {
    double p = 0;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t q = 0; q < 100; ++q)
        p += double(map[q]) / (3.0 * 5050.0 * double(x[c * 100 + q])) * double(image[c * 100 + q]);
    return p;
  }
};

LinearModel linear_model() {
  LinearModel m;
  m.x = test::random_tensor({1, 3, 10, 10}, 11, 0.5f, 2.f);
  for (int64_t p = 0; p < 100; ++p) m.map.push_back(float((p * 37) % 100 + 1));  // 37 is prime to 100
  return m;
}

ProbabilityFn per_image(const std::function<double(const float*)>& f) {
  return [f](const Tensor& images) {
    const int64_t n = images.dim(0), size = images.numel() / n;
    std::vector<double> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(f(images.data() + i * size));
    return p;
  };
}

}  // namespace

TEST_CASE("roc_auc on hand-computed cases", "[metrics]") {
  // scores {1, 2, 2, 3}, positives at 2 (index 1) and 3: average ranks 1, 2.5, 2.5, 4, so the
  // positives' rank sum is 6.5 and U = 6.5 - 2 * 3 / 2 = 3.5 of 2 * 2 pairs: 0.875. Pairwise:
  // 2 vs 1 wins, 2 vs 2 ties (1/2), 3 vs 1 and 3 vs 2 win: 3.5 / 4.
  CHECK(roc_auc({1, 2, 2, 3}, {0, 1, 0, 1}) == Approx(0.875).epsilon(1e-15));
  // {1, 1, 1, 2}, positives at index 0 (1) and 3 (2): the 1 ties both negatives (1/2 + 1/2), the
  // 2 beats both: 3 / 4.
  CHECK(roc_auc({1, 1, 1, 2}, {1, 0, 0, 1}) == Approx(0.75).epsilon(1e-15));
  // Any non-zero label is positive.
  CHECK(roc_auc({1, 1, 1, 2}, {255, 0, 0, 7}) == Approx(0.75).epsilon(1e-15));
  CHECK(roc_auc({5, 5, 5, 5}, {1, 0, 1, 0}) == 0.5);  // all tied
  CHECK(roc_auc({1, 2, 3}, {0, 0, 0}) == 0.5);        // no positives
  CHECK(roc_auc({1, 2, 3}, {1, 1, 1}) == 0.5);        // no negatives
  CHECK(roc_auc({}, {}) == 0.5);
  CHECK(roc_auc({0.1f, 0.2f, 0.8f, 0.9f}, {0, 0, 1, 1}) == 1.0);  // perfect
  CHECK(roc_auc({0.1f, 0.2f, 0.8f, 0.9f}, {1, 1, 0, 0}) == 0.0);  // reversed
  CHECK(roc_auc({-INFINITY, 0.f, INFINITY}, {0, 1, 1}) == 1.0);    // infinities still rank
  CHECK(error_of([] { roc_auc({1, 2}, {1}); }).find("2 scores but 1 labels") != std::string::npos);
  CHECK(error_of([] { roc_auc({1, NAN}, {1, 0}); }).find("NaN") != std::string::npos);
}

TEST_CASE("roc_auc equals the pairwise count on random data with many ties", "[metrics]") {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 60; ++trial) {
    const int n = 1 + int(rng() % 400);
    const int levels = trial % 3 == 0 ? 2 : trial % 3 == 1 ? 7 : 1000000;  // heavy ties .. almost none
    const double p_positive = 0.05 + 0.9 * double(rng() % 1000) / 1000.0;
    std::vector<float> s(n);
    std::vector<uint8_t> pos(n);
    for (int i = 0; i < n; ++i) {
      s[i] = float(int64_t(rng() % levels) - levels / 2) * 0.25f;
      pos[i] = double(rng() % 1000) / 1000.0 < p_positive;
    }
    INFO("trial " << trial << " n " << n);
    CHECK(roc_auc(s, pos) == Approx(pairwise_auc(s, pos)).epsilon(1e-14));
  }
}

TEST_CASE("trojan_auc ranks the channel sum, signed and absolute", "[metrics]") {
  // Per-pixel channel values (2x2 image), their sums and sums of |.|:
  //   pixel 0: ( 1,  2, -1) sum  2   (the trigger)
  //   pixel 1: (-1, -1, -1) sum -3
  //   pixel 2: ( 4, -5,  2) sum  1
  //   pixel 3: ( 3,  2, -5) sum  0   (sum of |.| 10)
  // Signed: 2 beats -3, 1, 0 -> 1. Absolute: |2| beats |1|, |0| but not |-3| -> 2/3. (Channel 0
  // alone would give 1/3 signed; the sum of absolute values 4 vs 3, 11, 10 would give 1/3.)
  const Tensor a = Tensor::from_vector({3, 2, 2}, {1, -1, 4, 3, 2, -1, -5, 2, -1, -1, 2, -5});
  const std::vector<uint8_t> mask{1, 0, 0, 0};
  TrojanAuc r = trojan_auc(a, mask);
  CHECK(r.signed_auc == Approx(1.0).epsilon(1e-15));
  CHECK(r.abs_auc == Approx(2.0 / 3.0).epsilon(1e-15));
  // The same map given as (H, W) and as (1, 3, H, W).
  r = trojan_auc(Tensor::from_vector({2, 2}, {2, -3, 1, 0}), mask);
  CHECK(r.signed_auc == Approx(1.0).epsilon(1e-15));
  CHECK(r.abs_auc == Approx(2.0 / 3.0).epsilon(1e-15));
  r = trojan_auc(a.reshape({1, 3, 2, 2}), mask);
  CHECK(r.abs_auc == Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(trojan_auc(a, {0, 0, 0, 0}).signed_auc == 0.5);

  Tensor bad = a.clone();
  bad[5] = NAN;
  CHECK(error_of([&] { trojan_auc(bad, mask); }).find("NaN") != std::string::npos);
  CHECK(error_of([&] { trojan_auc(a, {1, 0, 0}); }).find("3 pixels but the map is 2x2") != std::string::npos);
  CHECK(error_of([&] { trojan_auc(Tensor::zeros({2, 3, 2, 2}), mask); }).find("(1, C, H, W)") != std::string::npos);
}

TEST_CASE("pointing_game points at the first maximum of the channel-summed map", "[metrics]") {
  // 3x4 map, maximum 9 at row 1, column 2 (raster index 6).
  const Tensor m = Tensor::from_vector({3, 4}, {0, 1, 2, 3, 4, 5, 9, 7, 8, -1, -2, -3});
  std::vector<uint8_t> mask(12, 0);
  mask[6] = 1;
  PointingResult r = pointing_game(m, mask);
  CHECK(r.hit);
  CHECK(r.row == 1);
  CHECK(r.col == 2);
  mask[6] = 0;
  mask[7] = mask[8] = 1;  // the runners-up do not count
  CHECK_FALSE(pointing_game(m, mask).hit);

  // Two maxima (raster 2 and 9): the first is the one pointed at.
  const Tensor tie = Tensor::from_vector({3, 4}, {0, 1, 5, 3, 4, 2, 1, 0, 0, 5, 1, 1});
  std::vector<uint8_t> on_second(12, 0), on_first(12, 0);
  on_second[9] = 1;
  on_first[2] = 1;
  r = pointing_game(tie, on_second);
  CHECK_FALSE(r.hit);
  CHECK(r.row == 0);
  CHECK(r.col == 2);
  CHECK(pointing_game(tie, on_first).hit);

  // The channel sum decides: channel 0 peaks at pixel 0, the sums {1, 2, 2} at pixel 1.
  const Tensor two = Tensor::from_vector({2, 1, 3}, {5, 0, 1, -4, 2, 1});
  r = pointing_game(two, {0, 1, 0});
  CHECK(r.hit);
  CHECK(r.col == 1);
  CHECK(error_of([&] { pointing_game(m, {1, 0}); }).find("2 pixels but the map is 3x4") != std::string::npos);
}

TEST_CASE("trapezoid_area and rise_auc on known curves", "[metrics]") {
  CHECK(trapezoid_area(std::vector<double>(100, 1.0)) == Approx(99.0).epsilon(1e-14));
  std::vector<double> ramp(100);
  for (int i = 0; i < 100; ++i) ramp[i] = i / 99.0;
  CHECK(trapezoid_area(ramp) == Approx(49.5).epsilon(1e-14));  // a triangle of base 99, height 1
  CHECK(trapezoid_area({0, 1, 0}) == Approx(1.0).epsilon(1e-15));
  CHECK(trapezoid_area({3}) == 0.0);
  CHECK(rise_auc(std::vector<double>(9, 0.7)) == Approx(0.7).epsilon(1e-14));
  std::vector<double> unit(11);
  for (int i = 0; i <= 10; ++i) unit[i] = i / 10.0;
  CHECK(rise_auc(unit) == Approx(0.5).epsilon(1e-14));
  CHECK(rise_auc({1, 0}) == Approx(0.5).epsilon(1e-15));
  CHECK(rise_auc({2, 4, 6}) == Approx(4.0).epsilon(1e-15));  // (2 + 4 + 6 - 1 - 3) / 2
  CHECK(error_of([] { rise_auc({1}); }).find("at least 2 points") != std::string::npos);
}

TEST_CASE("saliency_order: descending score, ties in raster order", "[metrics]") {
  CHECK(saliency_order({1, 3, 3, 2, 3}) == std::vector<int64_t>{1, 2, 4, 3, 0});
  CHECK(saliency_order({-1, 0, -1, 0}) == std::vector<int64_t>{1, 3, 0, 2});
  std::vector<float> many(500);
  std::mt19937_64 rng(3);
  for (float& v : many) v = float(rng() % 6);
  CHECK(saliency_order(many) == expected_order(many));
}

TEST_CASE("Spade insertion/deletion uses the top floor(i * HW / 100) pixels, ties in raster order", "[metrics]") {
  // 7x9 = 63 pixels, so k_i = floor(63 i / 100) repeats values; the map has many ties.
  const int64_t H = 7, W = 9, HW = H * W;
  const Tensor x = test::random_tensor({1, 3, H, W}, 21, 0.5f, 1.5f);  // no zeros: kept pixels show
  std::vector<float> map(HW);
  for (int64_t p = 0; p < HW; ++p) map[p] = float((p * 5) % 7);
  const std::vector<int64_t> order = expected_order(map);
  // The attribution's channels sum to the map exactly: (v - 1) + 0.5 + 0.5.
  Tensor attribution = Tensor::empty({3, H, W});
  for (int64_t p = 0; p < HW; ++p) {
    attribution[p] = map[p] - 1.f;
    attribution[HW + p] = attribution[2 * HW + p] = 0.5f;
  }
  // The model checks every image is x on a prefix of the order and 0 elsewhere (a keep image) or
  // the other way round (a remove image), all channels of a pixel together, and scores 0.8 times
  // the fraction of x's pixels present, so the normalised curves are that fraction.
  int64_t malformed = 0;
  auto model = [&](const float* img) {
    std::vector<uint8_t> present(HW);
    for (int64_t p = 0; p < HW; ++p) {
      int kept = 0, zero = 0;
      for (int64_t c = 0; c < 3; ++c) {
        kept += img[c * HW + p] == x[c * HW + p];
        zero += img[c * HW + p] == 0.f;
      }
      if (kept != 3 && zero != 3) ++malformed;
      present[p] = kept == 3;
    }
    int64_t n = 0;
    for (uint8_t v : present) n += v;
    bool prefix = true, suffix = true;  // present pixels = order[0, n) or order[HW - n, HW)
    for (int64_t j = 0; j < HW; ++j) {
      prefix = prefix && present[order[j]] == (j < n);
      suffix = suffix && present[order[j]] == (j >= HW - n);
    }
    if (!prefix && !suffix) ++malformed;
    return 0.8 * double(n) / double(HW);
  };
  const InsertionDeletion r = insertion_deletion(x, attribution, per_image(model));
  CHECK(malformed == 0);
  CHECK(r.reference_probability == Approx(0.8).epsilon(1e-15));
  REQUIRE(r.pixels.size() == 100);
  REQUIRE(r.insertion_curve.size() == 100);
  REQUIRE(r.deletion_curve.size() == 100);
  std::vector<double> keep(100), remove(100);
  for (int64_t i = 0; i < 100; ++i) {
    const int64_t k = (63 * i) / 100;  // floor: 0, 0, 1, 1, 2, 3, 3, ...
    CHECK(r.pixels[i] == k);
    keep[i] = double(k) / 63.0;
    remove[i] = 1.0 - keep[i];
    CHECK(r.insertion_curve[i] == Approx(keep[i]).margin(1e-14));
    CHECK(r.deletion_curve[i] == Approx(remove[i]).margin(1e-14));
  }
  double ins = 0, del = 0;
  for (int64_t i = 0; i < 99; ++i) {
    ins += (keep[i] + keep[i + 1]) / 2;
    del += (remove[i] + remove[i + 1]) / 2;
  }
  CHECK(r.insertion == Approx(ins).epsilon(1e-12));
  CHECK(r.deletion == Approx(del).epsilon(1e-12));
}

TEST_CASE("Spade insertion/deletion of a linear model has the closed-form curves", "[metrics]") {
  const LinearModel m = linear_model();
  const Tensor attribution = Tensor::from_vector({10, 10}, m.map);
  // Keeping the top i pixels keeps the scores 100, 99, ..., 101 - i:
  //   keep_i = (100 i - i (i - 1) / 2) / 5050, remove_i = 1 - keep_i.
  // sum_{i<100} keep_i = (100 * 4950 - C(100, 3)) / 5050 = (495000 - 161700) / 5050 = 66 and
  // keep_99 = (9900 - 4851) / 5050 = 5049 / 5050, so
  //   insertion = 66 - 0 / 2 - 5049 / 10100,  deletion = (100 - 66) - 1 / 2 - (1 / 5050) / 2.
  const InsertionDeletion r = insertion_deletion(m.x, attribution, per_image(m));
  for (int64_t i = 0; i < 100; ++i) {
    const double keep = (100.0 * i - i * (i - 1) / 2.0) / 5050.0;
    CHECK(r.insertion_curve[i] == Approx(keep).margin(1e-6));
    CHECK(r.deletion_curve[i] == Approx(1.0 - keep).margin(1e-6));
  }
  CHECK(r.insertion == Approx(66.0 - 5049.0 / 10100.0).epsilon(1e-6));
  CHECK(r.deletion == Approx(34.0 - 0.5 - 1.0 / 10100.0).epsilon(1e-6));

  // The reversed map keeps the smallest scores first: keep_i = i (i + 1) / 2 / 5050, whose sum is
  // C(101, 3) / 5050 = 166650 / 5050 = 33, and keep_99 = 4950 / 5050.
  Tensor reversed = attribution.clone();
  for (int64_t p = 0; p < 100; ++p) reversed[p] = -reversed[p];
  const InsertionDeletion worse = insertion_deletion(m.x, reversed, per_image(m));
  CHECK(worse.insertion == Approx(33.0 - 4950.0 / 10100.0).epsilon(1e-6));
  CHECK(worse.deletion == Approx(67.0 - 0.5 - 100.0 / 10100.0).epsilon(1e-6));  // remove_99 = 100 / 5050
}

TEST_CASE("Spade insertion/deletion divides by the probability on x and clips to [0, 1]", "[metrics]") {
  const LinearModel m = linear_model();
  const Tensor attribution = Tensor::from_vector({10, 10}, m.map);
  auto keep = [](int64_t i) { return (100.0 * i - i * (i - 1) / 2.0) / 5050.0; };

  SECTION("scaled model: the same normalised curves") {
    const InsertionDeletion r = insertion_deletion(m.x, attribution, per_image([&](const float* im) {
      return 0.25 * m(im);
    }));
    CHECK(r.reference_probability == Approx(0.25).epsilon(1e-6));
    for (int64_t i = 0; i < 100; ++i) CHECK(r.insertion_curve[i] == Approx(keep(i)).margin(1e-6));
  }
  SECTION("below 0 clips to 0") {
    // p = f - 0.5, p(x) = 0.5: confidence 2 f - 1, clipped at 0 while f < 1/2.
    const InsertionDeletion r = insertion_deletion(m.x, attribution, per_image([&](const float* im) {
      return m(im) - 0.5;
    }));
    for (int64_t i = 0; i < 100; ++i) {
      CHECK(r.insertion_curve[i] == Approx(std::max(0.0, 2 * keep(i) - 1)).margin(1e-5));
      CHECK(r.deletion_curve[i] == Approx(std::max(0.0, 1 - 2 * keep(i))).margin(1e-5));
    }
    CHECK(r.insertion_curve[0] == 0.0);
    CHECK(r.deletion_curve[99] == 0.0);
  }
  SECTION("above 1 clips to 1") {
    // p = 1.5 - f, p(x) = 0.5: confidence 3 - 2 f >= 1 everywhere, so both curves are all 1.
    const InsertionDeletion r = insertion_deletion(m.x, attribution, per_image([&](const float* im) {
      return 1.5 - m(im);
    }));
    for (int64_t i = 0; i < 100; ++i) {
      CHECK(r.insertion_curve[i] == 1.0);
      CHECK(r.deletion_curve[i] == 1.0);
    }
    CHECK(r.insertion == 99.0);
    CHECK(r.deletion == 99.0);
  }
  SECTION("a zero probability on x cannot normalise") {
    CHECK(error_of([&] {
            insertion_deletion(m.x, attribution, per_image([&](const float* im) {
                                 return same_bits(im, m.x.data(), m.x.numel()) ? 0.0 : 0.5;
                               }));
          }).find("cannot be normalised") != std::string::npos);
  }
}

TEST_CASE("insertion/deletion curves do not depend on the batch size", "[metrics]") {
  const LinearModel m = linear_model();
  const Tensor attribution = test::random_tensor({3, 10, 10}, 8);
  for (auto variant : {InsertionDeletionVariant::Spade, InsertionDeletionVariant::Rise}) {
    std::vector<InsertionDeletion> runs;
    for (int64_t batch : {1, 7, 1000}) {
      int64_t calls = 0, largest = 0;
      InsertionDeletionParams params;
      params.variant = variant;
      params.batch = batch;
      params.rise_step = 3;  // 34 steps, 35 points
      int64_t last_done = 0, total = 0;
      params.progress = [&](int64_t done, int64_t t) {
        last_done = done;
        total = t;
      };
      runs.push_back(insertion_deletion(m.x, attribution,
                                        [&](const Tensor& images) {
                                          ++calls;
                                          largest = std::max(largest, images.dim(0));
                                          return per_image(m)(images);
                                        },
                                        params));
      const int64_t images = variant == InsertionDeletionVariant::Spade ? 200 : 70;
      INFO("batch " << batch);
      CHECK(largest == std::min(batch, images));
      CHECK(calls == 1 + (images + batch - 1) / batch);  // the reference, then the curve images
      CHECK(last_done == images);
      CHECK(total == images);
    }
    for (size_t i = 1; i < runs.size(); ++i) {
      CHECK(runs[i].insertion_curve == runs[0].insertion_curve);
      CHECK(runs[i].deletion_curve == runs[0].deletion_curve);
      CHECK(runs[i].insertion == runs[0].insertion);
      CHECK(runs[i].deletion == runs[0].deletion);
    }
  }
}

TEST_CASE("insertion only: the same insertion curve and score from half the images", "[metrics]") {
  const LinearModel m = linear_model();
  const Tensor attribution = test::random_tensor({3, 10, 10}, 9);
  for (auto variant : {InsertionDeletionVariant::Spade, InsertionDeletionVariant::Rise}) {
    InsertionDeletionParams params;
    params.variant = variant;
    params.rise_step = 3;
    const InsertionDeletion both = insertion_deletion(m.x, attribution, per_image(m), params);
    params.deletion = false;
    int64_t images = 0;
    const InsertionDeletion one = insertion_deletion(m.x, attribution,
                                                     [&](const Tensor& batch) {
                                                       images += batch.dim(0);
                                                       return per_image(m)(batch);
                                                     },
                                                     params);
    CHECK(images == 1 + static_cast<int64_t>(both.insertion_curve.size()));  // the reference + one curve
    CHECK(one.insertion_curve == both.insertion_curve);
    CHECK(one.insertion == both.insertion);
    CHECK(both.deletion != 0.0);
    CHECK(one.deletion_curve.empty());
    CHECK(one.deletion == 0.0);
  }
}

TEST_CASE("Rise insertion/deletion: blurred start, zero end, raw probabilities, normalised AUC", "[metrics]") {
  // 6x5 = 30 pixels, 4 per step: ceil(30 / 4) = 8 steps, 9 points 0, 4, ..., 28, 30.
  const int64_t C = 3, H = 6, W = 5, HW = H * W;
  const Tensor x = test::random_tensor({1, C, H, W}, 31, 0.5f, 1.5f);
  const Tensor blurred = rise_blur(x, 11, 5.0);
  const Tensor attribution = test::random_tensor({H, W}, 32);
  // The model records every image and scores 0.5 times the fraction of pixels equal to x's.
  std::vector<Tensor> seen;
  auto model = [&](const float* img) {
    int64_t n = 0;
    for (int64_t p = 0; p < HW; ++p) {
      bool same = true;
      for (int64_t c = 0; c < C; ++c) same = same && img[c * HW + p] == x[c * HW + p];
      n += same;
    }
    return 0.5 * double(n) / double(HW);
  };
  for (int64_t p = 0; p < HW; ++p) REQUIRE(blurred[p] != x[p]);  // so blurred pixels never count
  InsertionDeletionParams params;
  params.variant = InsertionDeletionVariant::Rise;
  params.rise_step = 4;
  const InsertionDeletion r = insertion_deletion(
      x, attribution,
      [&](const Tensor& images) {
        for (int64_t i = 0; i < images.dim(0); ++i) seen.push_back(images.slice0(i, i + 1));
        return per_image(model)(images);
      },
      params);
  REQUIRE(r.pixels == std::vector<int64_t>{0, 4, 8, 12, 16, 20, 24, 28, 30});
  std::vector<double> ins(9), del(9);
  for (int64_t i = 0; i < 9; ++i) {
    ins[i] = 0.5 * double(r.pixels[i]) / HW;  // not divided by p(x) = 0.5
    del[i] = 0.5 * double(HW - r.pixels[i]) / HW;
    CHECK(r.insertion_curve[i] == Approx(ins[i]).margin(1e-15));
    CHECK(r.deletion_curve[i] == Approx(del[i]).margin(1e-15));
  }
  double ins_sum = 0, del_sum = 0;
  for (int64_t i = 0; i < 9; ++i) {
    ins_sum += ins[i];
    del_sum += del[i];
  }
  CHECK(r.insertion == Approx((ins_sum - ins[0] / 2 - ins[8] / 2) / 8).epsilon(1e-14));
  CHECK(r.deletion == Approx((del_sum - del[0] / 2 - del[8] / 2) / 8).epsilon(1e-14));
  CHECK(r.reference_probability == 0.5);

  // The endpoints: the blurred x starts insertion and x ends it; x starts deletion and the
  // all-zero image ends it (with the reference call, x is seen three times).
  int zeros = 0, originals = 0, blurs = 0;
  for (const Tensor& im : seen) {
    zeros += all_zero(im.data(), im.numel());
    originals += same_bits(im.data(), x.data(), x.numel());
    blurs += same_bits(im.data(), blurred.data(), x.numel());
  }
  CHECK(seen.size() == 1 + 2 * 9);
  CHECK(zeros == 1);
  CHECK(originals == 3);
  CHECK(blurs == 1);

  // RISE's defaults on a 224x224 image: 224 pixels per step, 225 points.
  const InsertionDeletion full =
      insertion_deletion(Tensor::full({1, 224, 224}, 1.f), test::random_tensor({224, 224}, 33),
                         [](const Tensor& images) { return std::vector<double>(images.dim(0), 0.5); },
                         [] {
                           InsertionDeletionParams p;
                           p.variant = InsertionDeletionVariant::Rise;
                           return p;
                         }());
  CHECK(full.pixels.size() == 225);
  CHECK(full.pixels.back() == 224 * 224);
  CHECK(full.insertion == Approx(0.5).epsilon(1e-14));
}

TEST_CASE("rise_blur_kernel is scipy's gaussian_filter of a centred delta", "[metrics]") {
  for (auto [size, sigma] : std::vector<std::pair<int64_t, double>>{{11, 5.0}, {5, 1.0}, {3, 2.0}, {1, 0.7}}) {
    INFO("size " << size << " sigma " << sigma);
    // scipy: 1-D weights exp(-t^2 / 2 sigma^2) for |t| <= int(4 sigma + 0.5), normalised; the
    // delta line extended 'reflect' (... d c b a | a b c d | d c b a ...) by laying mirrored and
    // plain copies side by side, then correlated.
    const int64_t radius = int64_t(4 * sigma + 0.5), c = size / 2;
    std::vector<double> w(2 * radius + 1);
    double total = 0;
    for (int64_t t = -radius; t <= radius; ++t) {
      w[t + radius] = std::exp(-double(t * t) / (2 * sigma * sigma));
      total += w[t + radius];
    }
    for (double& v : w) v /= total;
    const int64_t copies = 2 * (radius / size + 2) + 1;  // odd: the middle copy is the line itself
    std::vector<double> tiled;
    for (int64_t k = 0; k < copies; ++k)
      for (int64_t j = 0; j < size; ++j) {
        const bool mirrored = (k - copies / 2) % 2 != 0;
        tiled.push_back((mirrored ? size - 1 - j : j) == c ? 1.0 : 0.0);
      }
    const int64_t origin = (copies / 2) * size;
    std::vector<double> line(size, 0.0);
    for (int64_t j = 0; j < size; ++j)
      for (int64_t t = -radius; t <= radius; ++t) line[j] += w[t + radius] * tiled[origin + j + t];
    const std::vector<float> k = rise_blur_kernel(size, sigma);
    REQUIRE(int64_t(k.size()) == size * size);
    double sum = 0;
    for (int64_t i = 0; i < size; ++i)
      for (int64_t j = 0; j < size; ++j) {
        CHECK(k[i * size + j] == Approx(line[i] * line[j]).epsilon(1e-6));
        CHECK(k[i * size + j] == k[j * size + i]);
        CHECK(k[i * size + j] == k[(size - 1 - i) * size + j]);
        sum += k[i * size + j];
      }
    CHECK(sum == Approx(1.0).epsilon(1e-6));  // the reflections keep all the mass in the window
  }
  // By hand for RISE's klen 11, nsig 5 (radius 20): the delta at 5 reappears at -6, 16, -17 and
  // 27 in the extended line, so line[j] = sum of w[m - j] over m in {-17, -6, 5, 16, 27} with
  // |m - j| <= 20; e.g. line[5] = w[0] + 2 w[11] and line[0] = w[5] + w[-6] + w[16] + w[-17].
  auto w = [](int64_t t) {
    double total = 0;
    for (int64_t s = -20; s <= 20; ++s) total += std::exp(-double(s * s) / 50.0);
    return std::exp(-double(t * t) / 50.0) / total;
  };
  const double centre = w(0) + 2 * w(11), edge = w(5) + w(-6) + w(16) + w(-17);
  const std::vector<float> k = rise_blur_kernel(11, 5.0);
  CHECK(k[5 * 11 + 5] == Approx(centre * centre).epsilon(1e-6));
  CHECK(k[0] == Approx(edge * edge).epsilon(1e-6));
  CHECK(k[5 * 11] == Approx(centre * edge).epsilon(1e-6));
  CHECK(error_of([] { rise_blur_kernel(4, 1.0); }).find("not odd") != std::string::npos);
  CHECK(error_of([] { rise_blur_kernel(5, 0.0); }).find("sigma") != std::string::npos);
}

TEST_CASE("rise_blur equals a direct 2-D convolution with zero padding", "[metrics]") {
  for (auto [size, sigma] : std::vector<std::pair<int64_t, double>>{{11, 5.0}, {5, 1.0}}) {
    const int64_t N = 2, C = 3, H = 13, W = 12, r = size / 2;
    const Tensor x = test::random_tensor({N, C, H, W}, 41);
    const std::vector<float> k = rise_blur_kernel(size, sigma);
    Tensor expected = Tensor::zeros({N, C, H, W});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t xo = 0; xo < W; ++xo) {
            double acc = 0;
            for (int64_t i = 0; i < size; ++i)
              for (int64_t j = 0; j < size; ++j) {
                const int64_t yy = y + i - r, xx = xo + j - r;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;  // zero padding
                acc += k[i * size + j] * x[((n * C + c) * H + yy) * W + xx];
              }
            expected[((n * C + c) * H + y) * W + xo] = float(acc);
          }
    CHECK(test::max_abs_error(rise_blur(x, size, sigma), expected) < 1e-6);
    // One image without the batch dimension gives the same planes.
    CHECK(test::max_abs_error(rise_blur(x.slice0(1, 2).reshape({C, H, W}), size, sigma),
                              expected.slice0(1, 2).reshape({C, H, W})) < 1e-6);
  }
  // A constant image keeps its value where the kernel fits inside (mass 1) and loses some at the
  // corners, where zero padding covers part of the kernel.
  const Tensor ones = Tensor::full({1, 20, 20}, 1.f);
  const Tensor b = rise_blur(ones, 11, 5.0);
  CHECK(b[10 * 20 + 10] == Approx(1.0).epsilon(1e-6));
  CHECK(b[0] < 0.5f);
}

TEST_CASE("insertion_deletion rejects bad input", "[metrics]") {
  const Tensor x = test::random_tensor({1, 3, 6, 5}, 51);
  const Tensor a = test::random_tensor({3, 6, 5}, 52);
  const ProbabilityFn half = [](const Tensor& im) { return std::vector<double>(im.dim(0), 0.5); };
  Tensor nan_map = a.clone();
  nan_map[7] = NAN;
  CHECK(error_of([&] { insertion_deletion(x, nan_map, half); }).find("NaN") != std::string::npos);
  Tensor nan_image = x.clone();
  nan_image[3] = NAN;
  CHECK(error_of([&] { insertion_deletion(nan_image, a, half); }).find("NaN") != std::string::npos);
  CHECK(error_of([&] { insertion_deletion(x, Tensor::zeros({5, 6}), half); }).find("5x6 but the image is 6x5") !=
        std::string::npos);
  CHECK(error_of([&] { insertion_deletion(Tensor::zeros({2, 3, 6, 5}), a, half); }).find("one image") !=
        std::string::npos);
  CHECK(error_of([&] {
          insertion_deletion(x, a, [](const Tensor&) { return std::vector<double>{0.5}; });
        }).find("returned 1 values for 16 images") != std::string::npos);
  CHECK(error_of([&] {
          insertion_deletion(x, a, [](const Tensor& im) { return std::vector<double>(im.dim(0), NAN); });
        }).find("NaN") != std::string::npos);
  InsertionDeletionParams p;
  p.batch = 0;
  CHECK(error_of([&] { insertion_deletion(x, a, half, p); }).find("batch") != std::string::npos);
  p.batch = 4;
  p.variant = InsertionDeletionVariant::Rise;
  p.rise_step = 0;
  CHECK(error_of([&] { insertion_deletion(x, a, half, p); }).find("step") != std::string::npos);
}

TEST_CASE("class_probability is the softmax of the network's logits", "[metrics]") {
  // input (2, 2, 2) -> flatten -> linear 8 -> 4 with bias.
  Graph g;
  g.input_chw = {2, 2, 2};
  g.add("flatten", OpKind::Flatten, OpAttrs{}, {"input"});
  OpAttrs fc;
  fc.in_channels = 8;
  fc.out_channels = 4;
  fc.bias = true;
  const int node = g.add("fc", OpKind::Linear, fc, {"flatten"});
  g.set_output("fc");
  const Tensor weight = test::random_tensor({4, 8}, 61, -3.f, 3.f), bias = test::random_tensor({4}, 62);
  g.node(node).params["weight"].copy_from(weight);
  g.node(node).params["bias"].copy_from(bias);
  Network net{g};
  net.batch = 2;  // several passes inside logits
  const Tensor x = test::random_tensor({5, 2, 2, 2}, 63);
  for (int64_t cls = 0; cls < 4; ++cls) {
    const std::vector<double> p = class_probability(net, cls)(x);
    REQUIRE(p.size() == 5);
    for (int64_t n = 0; n < 5; ++n) {
      double z[4], total = 0;
      for (int64_t o = 0; o < 4; ++o) {
        z[o] = bias[o];
        for (int64_t i = 0; i < 8; ++i) z[o] += double(weight[o * 8 + i]) * x[n * 8 + i];
      }
      for (double v : z) total += std::exp(v);
      CHECK(p[n] == Approx(std::exp(z[cls]) / total).margin(1e-5));
    }
  }
  CHECK(error_of([&] { class_probability(net, 4); }).find("class 4 is outside [0, 4)") != std::string::npos);
  CHECK(error_of([&] { class_probability(net, -1); }).find("outside") != std::string::npos);
}
