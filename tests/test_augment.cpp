// The SPADE augmentations: apply_augment against torchvision/PIL results written by
// tests/data/make_augment_golden.py (bit-exact), and the properties of our own random draws.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/image.h"
#include "interpret/spade/augment.h"
#include "kernels/cpu/parallel.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
using namespace spade::interp;

namespace {

std::string augment_path(const std::string& file) { return test::data_path("augment/" + file); }

nlohmann::json golden() { return nlohmann::json::parse(read_text_file(augment_path("golden.json"))); }

using test::differing_bytes;

// Bitwise equality of two tensors (NaN-safe, and stricter than ==: -0 differs from 0).
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

auto as_tuple(const AugmentParams& p) {
  return std::make_tuple(p.top, p.left, p.height, p.width, p.flip, p.brightness, p.hue, p.hue_first, p.apply_hue);
}

Image solid(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t(i * 37 % 251);
  return im;
}

}  // namespace

TEST_CASE("apply_augment matches torchvision resized_crop/hflip/adjust_brightness/adjust_hue on PIL", "[augment]") {
  const nlohmann::json g = golden();
  const auto& cases = g["cases"];
  REQUIRE(cases.size() >= 24);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    const Image src = load_image(augment_path(g["sources"][c["src"].get<std::string>()]));
    AugmentParams p;
    p.top = c["top"];
    p.left = c["left"];
    p.height = c["height"];
    p.width = c["width"];
    p.flip = c["flip"];
    p.brightness = c["brightness"];
    p.hue = c["hue"];
    p.hue_first = c["hue_first"];
    const Image got = apply_augment(src, p, c["size"]);
    CHECK(differing_bytes(got, load_image(augment_path(file))) == 0);
  }
}

TEST_CASE("apply_augment with neutral colour parameters is crop + resize + flip", "[augment]") {
  const Image src = load_image(augment_path("wheel.png"));
  AugmentParams p;
  p.top = 3;
  p.left = 5;
  p.height = 40;
  p.width = 50;
  p.apply_hue = false;  // brightness 1 is PIL's copy shortcut; no HSV round trip
  const Image plain = apply_augment(src, p, 16);
  Image cropped;
  cropped.width = 50;
  cropped.height = 40;
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 50 * 3; ++x) cropped.rgb.push_back(src.rgb[(size_t(y + 3) * src.width + 5) * 3 + x]);
  CHECK(differing_bytes(plain, resize_image(cropped, 16, 16)) == 0);

  p.flip = true;
  const Image flipped = apply_augment(src, p, 16);
  int64_t bad = 0;
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int ch = 0; ch < 3; ++ch)
        bad += flipped.rgb[(y * 16 + x) * 3 + ch] != plain.rgb[(y * 16 + 15 - x) * 3 + ch];
  CHECK(bad == 0);
}

TEST_CASE("draw_augment crops follow RandomResizedCrop's bounds", "[augment]") {
  const AugmentConfig c;
  const std::vector<std::pair<int, int>> sizes = {{47, 31}, {64, 48}, {500, 375}, {31, 47}, {224, 224}, {3, 2}, {1, 1}};
  for (auto [W, H] : sizes) {
    INFO(W << "x" << H);
    const double area = double(W) * H;
    double min_frac = 2, max_frac = 0;
    bool top_zero = false, top_max = false, left_inner = false;
    for (int64_t i = 0; i < 2000; ++i) {
      const AugmentParams p = draw_augment(c, W, H, 7, i);
      REQUIRE(p.width >= 1);
      REQUIRE(p.height >= 1);
      REQUIRE(p.left >= 0);
      REQUIRE(p.top >= 0);
      REQUIRE(p.left + p.width <= W);
      REQUIRE(p.top + p.height <= H);
      // w and h are sqrt(target * aspect) and sqrt(target / aspect) rounded, so the bounds hold
      // up to half a pixel on each side (for these ratios the fallback crop is within them too).
      const double w = p.width, h = p.height;
      CHECK((w + 0.5) * (h + 0.5) >= c.scale_min * area);
      CHECK((w - 0.5) * (h - 0.5) <= c.scale_max * area);
      CHECK((w + 0.5) / (h - 0.5 > 0 ? h - 0.5 : 1e-9) >= c.ratio_min);
      CHECK((w - 0.5) / (h + 0.5) <= c.ratio_max);
      min_frac = std::min(min_frac, w * h / area);
      max_frac = std::max(max_frac, w * h / area);
      top_zero |= p.top == 0;
      top_max |= p.top == H - p.height;
      left_inner |= p.left > 0 && p.left < W - p.width;
    }
    if (W >= 64) {  // large enough for the rounding not to dominate
      CHECK(min_frac < 0.22);
      CHECK(max_frac > 0.9);
      CHECK(top_zero);
      CHECK(top_max);
      CHECK(left_inner);
    }
  }
}

TEST_CASE("draw_augment falls back to torchvision's centre crop", "[augment]") {
  AugmentConfig c;
  SECTION("very wide image: h = H, w = round(H * ratio_max)") {
    for (int64_t i = 0; i < 50; ++i) {
      const AugmentParams p = draw_augment(c, 400, 10, 3, i);
      CHECK(std::make_tuple(p.top, p.left, p.height, p.width) == std::make_tuple(0, (400 - 13) / 2, 10, 13));
    }
  }
  SECTION("very tall image: w = W, h = round(W / ratio_min)") {
    for (int64_t i = 0; i < 50; ++i) {
      const AugmentParams p = draw_augment(c, 10, 400, 3, i);
      CHECK(std::make_tuple(p.top, p.left, p.height, p.width) == std::make_tuple((400 - 13) / 2, 0, 13, 10));
    }
  }
  SECTION("Python's round() rounds 12.5 to 12") {
    c.ratio_min = 0.8;
    c.ratio_max = 1.25;
    AugmentParams p = draw_augment(c, 400, 10, 3, 0);
    CHECK(std::make_tuple(p.top, p.left, p.height, p.width) == std::make_tuple(0, (400 - 12) / 2, 10, 12));
    p = draw_augment(c, 10, 400, 3, 0);
    CHECK(std::make_tuple(p.top, p.left, p.height, p.width) == std::make_tuple((400 - 12) / 2, 0, 12, 10));
  }
  SECTION("aspect ratio in range: the whole image") {
    c.scale_min = 1.5;  // every try asks for more area than the image has
    c.scale_max = 2.0;
    for (int64_t i = 0; i < 50; ++i) {
      const AugmentParams p = draw_augment(c, 40, 36, 3, i);
      CHECK(std::make_tuple(p.top, p.left, p.height, p.width) == std::make_tuple(0, 0, 36, 40));
    }
  }
}

TEST_CASE("draw_augment depends only on (seed, index)", "[augment]") {
  const AugmentConfig c;
  std::set<decltype(as_tuple(AugmentParams{}))> seen;
  for (int64_t i = 0; i < 200; ++i) {
    CHECK(as_tuple(draw_augment(c, 64, 48, 11, i)) == as_tuple(draw_augment(c, 64, 48, 11, i)));
    seen.insert(as_tuple(draw_augment(c, 64, 48, 11, i)));
  }
  CHECK(seen.size() == 200);  // the colour factors are continuous: any repeat is a generator bug
  int same_across_seeds = 0;
  for (int64_t i = 0; i < 200; ++i)
    same_across_seeds += as_tuple(draw_augment(c, 64, 48, 11, i)) == as_tuple(draw_augment(c, 64, 48, 12, i));
  CHECK(same_across_seeds == 0);
  // Samples are not shifted copies of each other across seeds either.
  CHECK(as_tuple(draw_augment(c, 64, 48, 11, 1)) != as_tuple(draw_augment(c, 64, 48, 12, 0)));
}

TEST_CASE("draw_augment flip, order and colour factors have the configured distribution", "[augment]") {
  const AugmentConfig c;
  int flips = 0, hue_first = 0;
  double bmin = 9, bmax = -9, hmin = 9, hmax = -9, bsum = 0, hsum = 0;
  const int n = 2000;
  for (int64_t i = 0; i < n; ++i) {
    const AugmentParams p = draw_augment(c, 64, 48, 5, i);
    flips += p.flip;
    hue_first += p.hue_first;
    CHECK(p.apply_hue);
    bmin = std::min(bmin, p.brightness), bmax = std::max(bmax, p.brightness), bsum += p.brightness;
    hmin = std::min(hmin, p.hue), hmax = std::max(hmax, p.hue), hsum += p.hue;
  }
  // Binomial(2000, 0.5): sd 22.4, so +-100 is about 4.5 sd.
  CHECK(std::abs(flips - n / 2) < 100);
  CHECK(std::abs(hue_first - n / 2) < 100);
  CHECK(bmin >= 0.5);
  CHECK(bmax < 1.5);
  CHECK(bmin < 0.51);
  CHECK(bmax > 1.49);
  CHECK(std::abs(bsum / n - 1.0) < 0.03);  // sd of the mean: 0.29 / sqrt(2000) = 0.0065
  CHECK(hmin >= -0.3);
  CHECK(hmax < 0.3);
  CHECK(hmin < -0.29);
  CHECK(hmax > 0.29);
  CHECK(std::abs(hsum / n) < 0.02);

  AugmentConfig off = c;
  off.flip_p = 0;
  off.brightness = 0;
  off.hue = 0;
  for (int64_t i = 0; i < 100; ++i) {
    const AugmentParams p = draw_augment(off, 64, 48, 5, i);
    CHECK_FALSE(p.flip);
    CHECK(p.brightness == 1.0);
    CHECK(p.hue == 0.0);
    CHECK_FALSE(p.apply_hue);  // ColorJitter(hue=0) skips adjust_hue and its lossy round trip
  }
}

TEST_CASE("augment_batch is sliceable, thread-independent and normalises apply_augment's pixels", "[augment]") {
  const Image src = load_image(augment_path("wheel.png"));
  AugmentConfig c;
  c.size = 20;
  c.mean = {0.5f, 0.25f, 0.125f};
  c.std = {0.2f, 0.3f, 0.7f};
  const Tensor all = augment_batch(src, c, 99, 0, 5);
  REQUIRE(all.shape() == Shape{5, 3, 20, 20});
  CHECK(same_bits(augment_batch(src, c, 99, 3, 2), all.slice0(3, 5)));
  CHECK(!same_bits(augment_batch(src, c, 100, 0, 5), all));

  Tensor serial;
  {
    test::ThreadGuard one(1);
    serial = augment_batch(src, c, 99, 0, 5);
  }
  CHECK(same_bits(serial, all));

  const int64_t hw = 20 * 20;
  for (int64_t n = 0; n < 5; ++n) {
    const Image im = apply_augment(src, draw_augment(c, src.width, src.height, 99, n), c.size);
    int64_t bad = 0;
    for (int ch = 0; ch < 3; ++ch)
      for (int64_t i = 0; i < hw; ++i) {
        const float expect = (float(im.rgb[i * 3 + ch]) / 255.f - c.mean[ch]) / c.std[ch];
        bad += all[(n * 3 + ch) * hw + i] != expect;
      }
    CHECK(bad == 0);
  }
  CHECK(augment_batch(src, c, 99, 7, 0).shape() == Shape{0, 3, 20, 20});
}

TEST_CASE("augment functions reject bad arguments with one-line errors", "[augment]") {
  const Image src = solid(16, 12);
  AugmentConfig c;
  AugmentParams p;
  p.height = 4;
  p.width = 4;
  CHECK(error_of([&] { apply_augment(src, p, 0); }).find("size") != std::string::npos);
  CHECK(error_of([&] { apply_augment(Image{}, p, 8); }).find("image") != std::string::npos);
  p.left = 13;
  CHECK(error_of([&] { apply_augment(src, p, 8); }).find("not inside") != std::string::npos);
  p.left = 0;
  p.hue = 0.6;
  CHECK(error_of([&] { apply_augment(src, p, 8); }).find("hue") != std::string::npos);
  p.hue = 0;
  p.brightness = -1;
  CHECK(error_of([&] { apply_augment(src, p, 8); }).find("brightness") != std::string::npos);

  CHECK(error_of([&] { draw_augment(c, 0, 5, 1, 0); }).find("source size") != std::string::npos);
  c.size = -3;
  CHECK(error_of([&] { draw_augment(c, 5, 5, 1, 0); }).find("size") != std::string::npos);
  CHECK(error_of([&] { augment_batch(src, c, 1, 0, 2); }).find("size") != std::string::npos);
  c.size = 8;
  c.ratio_min = 0;
  CHECK(error_of([&] { draw_augment(c, 5, 5, 1, 0); }).find("ratio") != std::string::npos);
  c.ratio_min = 0.75;
  c.std[1] = 0.f;
  CHECK(error_of([&] { augment_batch(src, c, 1, 0, 2); }).find("std") != std::string::npos);
  c.std[1] = 0.2f;
  CHECK(error_of([&] { augment_batch(src, c, 1, -1, 2); }).find(">= 0") != std::string::npos);
  CHECK(error_of([&] { augment_batch(Image{}, c, 1, 0, 2); }).find("image") != std::string::npos);
  for (const std::string& msg : {error_of([&] { apply_augment(src, p, 0); }),
                                error_of([&] { augment_batch(Image{}, c, 1, 0, 2); })})
    CHECK(msg.find('\n') == std::string::npos);
}
