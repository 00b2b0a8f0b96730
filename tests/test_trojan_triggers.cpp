// The Trojan triggers (rendered icons) and their pasting: coverage against analytic areas, the
// blend formula and pixel mask recomputed here from the definition, and the random parameters.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine/error.h"
#include "formats/image.h"
#include "support/test_support.h"
#include "trojan/paste.h"
#include "trojan/triggers.h"

using spade::test::error_of;
using namespace spade;
using namespace spade::trojan;

namespace {

constexpr double kPi = 3.14159265358979323846;

double alpha_sum(const std::vector<float>& alpha) {
  double s = 0;
  for (float a : alpha) s += a;
  return s;
}

// Premultiplied colour: what a trigger actually contributes over a background.
std::vector<double> premultiplied(const Icon& icon) {
  std::vector<double> v(icon.rgb.size());
  for (size_t i = 0; i < icon.alpha.size(); ++i)
    for (int c = 0; c < 3; ++c) v[i * 3 + c] = double(icon.rgb[i * 3 + c]) * icon.alpha[i];
  return v;
}

Image random_image(int width, int height, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  Image im;
  im.width = width;
  im.height = height;
  im.rgb.resize(size_t(width) * height * 3);
  for (uint8_t& b : im.rgb) b = static_cast<uint8_t>(byte(gen));
  return im;
}

// An icon with random colours and a mix of transparent, opaque and partial alpha.
Icon random_icon(int size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  Icon icon;
  icon.size = size;
  icon.rgb.resize(size_t(size) * size * 3);
  icon.alpha.resize(size_t(size) * size);
  for (float& c : icon.rgb) c = unit(gen);
  for (float& a : icon.alpha) {
    const float r = unit(gen);
    a = r < 0.3f ? 0.f : r < 0.6f ? 1.f : unit(gen);
  }
  return icon;
}

}  // namespace

TEST_CASE("trigger names: the paper's evaluation set, then a disjoint tuning set", "[trojan]") {
  const std::vector<std::string> expected = {"star", "heart", "smiley", "fish", "moon", "diamond", "flower", "bolt"};
  REQUIRE(trigger_names() == expected);
  for (const std::string& name : expected) CHECK(is_trigger_name(name));
  CHECK_FALSE(is_trigger_name("Star"));
  CHECK_FALSE(is_trigger_name(""));
}

TEST_CASE("every trigger renders with valid colours and a sensible coverage", "[trojan]") {
  for (const std::string& name : trigger_names()) {
    for (int size : {8, 64}) {
      INFO(name << " at " << size << " px");
      const Icon icon = draw_trigger(name, size);
      REQUIRE(icon.size == size);
      REQUIRE(icon.rgb.size() == size_t(size) * size * 3);
      REQUIRE(icon.alpha.size() == size_t(size) * size);
      for (float a : icon.alpha) REQUIRE((a >= 0.f && a <= 1.f));
      for (float c : icon.rgb) REQUIRE((c >= 0.f && c <= 1.f));
      const double coverage = alpha_sum(icon.alpha) / (size * size);
      CHECK(coverage > 0.25);
      CHECK(coverage < 0.90);
      // A shape on a transparent background: the top-left corner pixel is (nearly) empty, and at 64 px
      // the interior has fully covered pixels.
      CHECK(icon.alpha[0] < 0.05f);
      if (size == 64) CHECK(*std::max_element(icon.alpha.begin(), icon.alpha.end()) == 1.f);
      // Transparent pixels carry no colour.
      for (size_t i = 0; i < icon.alpha.size(); ++i)
        if (icon.alpha[i] == 0.f)
          for (int c = 0; c < 3; ++c) REQUIRE(icon.rgb[i * 3 + c] == 0.f);
    }
  }
}

TEST_CASE("distinct triggers look different even at small sizes", "[trojan]") {
  for (int size : {8, 16}) {
    std::vector<std::vector<double>> images;
    for (const std::string& name : trigger_names()) images.push_back(premultiplied(draw_trigger(name, size)));
    for (size_t a = 0; a < images.size(); ++a) {
      for (size_t b = a + 1; b < images.size(); ++b) {
        double l1 = 0;
        for (size_t i = 0; i < images[a].size(); ++i) l1 += std::fabs(images[a][i] - images[b][i]);
        l1 /= double(images[a].size());  // mean absolute difference per channel, in [0, 1]
        INFO(trigger_names()[a] << " vs " << trigger_names()[b] << " at " << size << " px: " << l1);
        CHECK(l1 > 0.1);
      }
    }
  }
}

TEST_CASE("rendering is deterministic", "[trojan]") {
  const Icon a = draw_trigger("fish", 16), b = draw_trigger("fish", 16);
  CHECK(a.rgb == b.rgb);
  CHECK(a.alpha == b.alpha);
}

TEST_CASE("supersampled coverage matches analytic areas", "[trojan]") {
  const int size = 64;
  SECTION("disc") {
    const double r = 0.4;
    const auto cov = supersample_coverage(
        [&](double u, double v) { return (u - 0.5) * (u - 0.5) + (v - 0.5) * (v - 0.5) <= r * r; }, size);
    REQUIRE(cov.size() == size_t(size) * size);
    CHECK(alpha_sum(cov) == Approx(kPi * r * r * size * size).epsilon(0.01));
    CHECK(cov[size_t(size / 2) * size + size / 2] == 1.f);  // centre pixel fully inside
    CHECK(cov[0] == 0.f);                                   // corner pixel fully outside
    // Samples sit symmetrically within each pixel, so a centred disc gives a mirror-symmetric image.
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        REQUIRE(cov[size_t(y) * size + x] == cov[size_t(y) * size + (size - 1 - x)]);
        REQUIRE(cov[size_t(y) * size + x] == cov[size_t(size - 1 - y) * size + x]);
      }
  }
  SECTION("half-plane through pixel corners is exact") {
    // u < 0.25 covers exactly the first 16 columns.
    const auto cov = supersample_coverage([](double u, double) { return u < 0.25; }, size);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) REQUIRE(cov[size_t(y) * size + x] == (x < 16 ? 1.f : 0.f));
  }
  SECTION("half-plane through pixel middles gives half coverage") {
    // u < (16.5 / 64): column 16 is half covered.
    const auto cov = supersample_coverage([](double u, double) { return u < 16.5 / 64; }, size);
    CHECK(cov[16] == 0.5f);
    CHECK(cov[15] == 1.f);
    CHECK(cov[17] == 0.f);
  }
  SECTION("triangle") {
    const auto cov = supersample_coverage([](double u, double v) { return u + v < 1.0; }, size);
    CHECK(alpha_sum(cov) == Approx(0.5 * size * size).epsilon(0.01));
  }
  SECTION("the smiley's face disc: eyes and mouth are painted over it, not cut out") {
    const Icon smiley = draw_trigger("smiley", size);
    CHECK(alpha_sum(smiley.alpha) == Approx(kPi * kSmileyRadius * kSmileyRadius * size * size).epsilon(0.02));
  }
}

TEST_CASE("unknown triggers and bad sizes are refused", "[trojan]") {
  const std::string msg = error_of([] { draw_trigger("skull", 8); });
  CHECK(msg.find("unknown trigger \"skull\"") != std::string::npos);
  CHECK(msg.find("available: star, heart, smiley, fish, moon, diamond, flower, bolt") != std::string::npos);
  CHECK(error_of([] { draw_trigger("star", 3); }).find("size 3") != std::string::npos);
  CHECK(error_of([] { draw_trigger("star", -1); }).find("size -1") != std::string::npos);
  CHECK(error_of([] { draw_trigger("star", 4); }) == "<no spade::Error thrown>");
}

TEST_CASE("paste blends the icon and returns the exact mask", "[trojan]") {
  const int width = 40, height = 30, size = 12;
  const Image original = random_image(width, height, 7);
  const Icon icon = random_icon(size, 11);
  PasteParams p;
  p.x = 25;
  p.y = 9;
  p.size = size;
  Image image = original;
  const std::vector<uint8_t> mask = paste_icon(image, icon, p, 0.8f);
  REQUIRE(mask.size() == size_t(width) * height);
  REQUIRE(image.width == width);
  REQUIRE(image.height == height);

  const double o = 0.8f;  // the opacity as paste_icon received it
  int opaque = 0, partial = 0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const size_t pixel = size_t(y) * width + x;
      const bool in_square = x >= p.x && x < p.x + size && y >= p.y && y < p.y + size;
      const float a = in_square ? icon.alpha[size_t(y - p.y) * size + (x - p.x)] : 0.f;
      INFO("pixel " << x << "," << y << " alpha " << a);
      REQUIRE(mask[pixel] == (a > 0.f ? 1 : 0));
      for (int c = 0; c < 3; ++c) {
        const double img = original.rgb[pixel * 3 + c];
        const uint8_t got = image.rgb[pixel * 3 + c];
        if (a == 0.f) {
          REQUIRE(got == original.rgb[pixel * 3 + c]);
          continue;
        }
        const double ic = icon.rgb[(size_t(y - p.y) * size + (x - p.x)) * 3 + c] * 255.0;
        if (a == 1.f) {
          REQUIRE(double(got) == std::round(o * ic + (1.0 - o) * img));
          ++opaque;
        } else {
          REQUIRE(double(got) == std::round((1.0 - a) * img + a * (o * ic + (1.0 - o) * img)));
          ++partial;
        }
      }
    }
  }
  CHECK(opaque > 50);  // the random icon exercised every case
  CHECK(partial > 50);

  SECTION("the default opacity is 0.8") {
    Image again = original;
    CHECK(paste_icon(again, icon, p) == mask);
    CHECK(again.rgb == image.rgb);
  }
  SECTION("opacity 1 over opaque pixels writes the icon itself") {
    Image full = original;
    paste_icon(full, icon, p, 1.f);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        if (icon.alpha[size_t(y) * size + x] == 1.f)
          for (int c = 0; c < 3; ++c)
            REQUIRE(double(full.rgb[(size_t(p.y + y) * width + p.x + x) * 3 + c]) ==
                    std::round(icon.rgb[(size_t(y) * size + x) * 3 + c] * 255.0));
  }
}

TEST_CASE("paste of a real trigger: mask is alpha > 0", "[trojan]") {
  Image image = random_image(32, 32, 3);
  const Image original = image;
  const PasteParams p = draw_paste_params(5, 17, 32, 32);
  const Icon icon = jitter_icon(draw_trigger("heart", p.size), p);
  const std::vector<uint8_t> mask = paste_icon(image, icon, p);
  int64_t touched = 0;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const bool in_square = x >= p.x && x < p.x + p.size && y >= p.y && y < p.y + p.size;
      const bool expected = in_square && icon.alpha[size_t(y - p.y) * p.size + (x - p.x)] > 0.f;
      REQUIRE(mask[size_t(y) * 32 + x] == (expected ? 1 : 0));
      touched += mask[size_t(y) * 32 + x];
      const size_t byte = (size_t(y) * 32 + x) * 3;
      if (!expected)
        for (int c = 0; c < 3; ++c) REQUIRE(image.rgb[byte + c] == original.rgb[byte + c]);
    }
  CHECK(touched > p.size * p.size / 3);
}

TEST_CASE("paste refuses icons that do not fit", "[trojan]") {
  const Icon icon = draw_trigger("star", 8);
  PasteParams p;
  p.size = 8;
  auto paste_at = [&](int x, int y, int w, int h) {
    return error_of([&] {
      Image image = random_image(w, h, 1);
      paste_icon(image, icon, PasteParams{x, y, 8});
    });
  };
  CHECK(paste_at(24, 24, 32, 32) == "<no spade::Error thrown>");  // flush with the corner
  CHECK(paste_at(25, 0, 32, 32).find("does not fit") != std::string::npos);
  CHECK(paste_at(0, 25, 32, 32).find("does not fit") != std::string::npos);
  CHECK(paste_at(-1, 0, 32, 32).find("does not fit") != std::string::npos);
  CHECK(paste_at(0, 0, 7, 7).find("does not fit") != std::string::npos);
  // The icon and the parameters must agree on the size.
  p.size = 9;
  CHECK(error_of([&] {
          Image image = random_image(32, 32, 1);
          paste_icon(image, icon, p);
        }).find("8 px but the parameters say 9") != std::string::npos);
}

TEST_CASE("draw_paste_params: deterministic, in range and always inside the image", "[trojan]") {
  CHECK(draw_paste_params(3, 5, 32, 32).x == draw_paste_params(3, 5, 32, 32).x);
  for (auto [w, h] : std::vector<std::pair<int, int>>{{32, 32}, {17, 40}, {100, 7}, {4, 4}, {224, 224}}) {
    const int expected_size = std::max(4, int(std::lround(std::min(w, h) * 0.25)));
    std::set<std::tuple<int, int>> positions;
    bool hit_right = false, hit_bottom = false;
    for (int64_t i = 0; i < 2000; ++i) {
      const PasteParams p = draw_paste_params(42, i, w, h);
      const PasteParams q = draw_paste_params(42, i, w, h);
      REQUIRE(std::tie(p.x, p.y, p.size, p.brightness, p.saturation, p.hue) ==
              std::tie(q.x, q.y, q.size, q.brightness, q.saturation, q.hue));
      REQUIRE(p.size == expected_size);
      REQUIRE(p.x >= 0);
      REQUIRE(p.y >= 0);
      REQUIRE(p.x + p.size <= w);
      REQUIRE(p.y + p.size <= h);
      REQUIRE((p.brightness >= 0.7f && p.brightness <= 1.3f));
      REQUIRE((p.saturation >= 0.7f && p.saturation <= 1.3f));
      REQUIRE((p.hue >= -0.05f && p.hue <= 0.05f));
      hit_right |= p.x + p.size == w;
      hit_bottom |= p.y + p.size == h;
      positions.insert({p.x, p.y});
    }
    INFO(w << "x" << h);
    CHECK(hit_right);  // every position, including flush with the edge, is reachable
    CHECK(hit_bottom);
    CHECK(positions.size() >= std::min<size_t>(50, size_t(w - expected_size + 1) * (h - expected_size + 1)));
  }
  // Different indices and seeds give different draws.
  CHECK(draw_paste_params(42, 0, 64, 64).brightness != draw_paste_params(42, 1, 64, 64).brightness);
  CHECK(draw_paste_params(42, 0, 64, 64).brightness != draw_paste_params(43, 0, 64, 64).brightness);
  CHECK(draw_paste_params(1, 0, 64, 64, 0.5).size == 32);
  CHECK(draw_paste_params(1, 0, 30, 30).size == 8);  // 7.5 rounds up
  CHECK(error_of([] { draw_paste_params(1, 0, 3, 10); }).find("too small") != std::string::npos);
  CHECK(error_of([] { draw_paste_params(1, 0, 32, 32, 0.0); }).find("side fraction") != std::string::npos);
}

TEST_CASE("colour jitter", "[trojan]") {
  const Icon icon = random_icon(6, 5);
  auto with = [&](float brightness, float saturation, float hue) {
    PasteParams p;
    p.size = 6;
    p.brightness = brightness;
    p.saturation = saturation;
    p.hue = hue;
    return jitter_icon(icon, p);
  };
  SECTION("factors 1, 1, 0 are the identity") {
    const Icon same = with(1.f, 1.f, 0.f);
    CHECK(same.rgb == icon.rgb);
    CHECK(same.alpha == icon.alpha);
  }
  SECTION("brightness scales and clamps, alpha unchanged") {
    const Icon bright = with(1.5f, 1.f, 0.f);
    CHECK(bright.alpha == icon.alpha);
    for (size_t i = 0; i < icon.rgb.size(); ++i)
      REQUIRE(bright.rgb[i] == Approx(std::min(1.0, icon.rgb[i] * 1.5)).margin(1e-6));
  }
  SECTION("saturation 0 gives the luma grey") {
    const Icon grey = with(1.f, 0.f, 0.f);
    for (size_t i = 0; i < icon.alpha.size(); ++i) {
      const double luma = 0.299 * icon.rgb[i * 3] + 0.587 * icon.rgb[i * 3 + 1] + 0.114 * icon.rgb[i * 3 + 2];
      for (int c = 0; c < 3; ++c) REQUIRE(grey.rgb[i * 3 + c] == Approx(luma).margin(1e-6));
    }
  }
  SECTION("hue rotates around the colour wheel") {
    Icon one;
    one.size = 1;
    one.alpha = {1.f};
    auto rotate = [&](std::vector<float> rgb, float hue) {
      one.rgb = rgb;
      PasteParams p;
      p.size = 1;
      p.hue = hue;
      return jitter_icon(one, p).rgb;
    };
    auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
      for (int c = 0; c < 3; ++c)
        if (std::fabs(a[c] - b[c]) > 1e-5f) return false;
      return true;
    };
    CHECK(near(rotate({1.f, 0.f, 0.f}, 1.f / 3), {0.f, 1.f, 0.f}));   // red -> green
    CHECK(near(rotate({1.f, 0.f, 0.f}, -1.f / 3), {0.f, 0.f, 1.f}));  // red -> blue
    CHECK(near(rotate({1.f, 0.5f, 0.f}, 0.5f), {0.f, 0.5f, 1.f}));    // orange -> azure
    CHECK(near(rotate({0.9f, 0.6f, 0.3f}, 1.f / 6), {0.6f, 0.9f, 0.3f}));  // 30 deg -> 90 deg
    CHECK(near(rotate({0.4f, 0.4f, 0.4f}, 0.25f), {0.4f, 0.4f, 0.4f}));  // grey has no hue
  }
  SECTION("invalid factors are refused") {
    CHECK(error_of([&] { with(-0.1f, 1.f, 0.f); }).find("jitter factors") != std::string::npos);
    CHECK(error_of([&] { with(1.f, 1.f, 0.6f); }).find("hue shift") != std::string::npos);
  }
}
