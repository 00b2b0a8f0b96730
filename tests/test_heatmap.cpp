// Heat maps, overlays and labelled panels (formats/heatmap.h). Expected colours come from the
// colour-map definitions written out again here in a different form (MATLAB's segment-by-segment
// jet, bwr as an interpolation between its three key colours), and the panel layout is
// recomputed from the rules in the header.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"
#include "formats/heatmap.h"
#include "formats/image.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;

namespace {

using RGB = std::array<uint8_t, 3>;

uint8_t byte_of(double unit) { return static_cast<uint8_t>(std::floor(255.0 * unit + 0.5)); }

// MATLAB jet, one linear segment at a time (breakpoints at 1/8, 3/8, 5/8, 7/8).
double jet_segment(double v, double centre) {  // a trapezoid of half-width 3/8 plus ramps of 1/4
  const double d = std::fabs(v - centre);
  if (d <= 1.0 / 8) return 1.0;
  if (d >= 3.0 / 8) return 0.0;
  return (3.0 / 8 - d) * 4;
}
RGB expected_jet(double v) {
  return {byte_of(jet_segment(v, 0.75)), byte_of(jet_segment(v, 0.5)), byte_of(jet_segment(v, 0.25))};
}

// bwr: linear interpolation between blue (0,0,1), white (1,1,1) and red (1,0,0) on t = (v + 1) / 2.
RGB expected_bwr(double v) {
  const double t = (v + 1) / 2;
  const double blue[3] = {0, 0, 1}, white[3] = {1, 1, 1}, red[3] = {1, 0, 0};
  const double* a = t < 0.5 ? blue : white;
  const double* b = t < 0.5 ? white : red;
  const double u = t < 0.5 ? t / 0.5 : (t - 0.5) / 0.5;
  RGB c;
  for (int i = 0; i < 3; ++i) c[i] = byte_of(a[i] + u * (b[i] - a[i]));
  return c;
}

RGB pixel(const Image& im, int x, int y) {
  const size_t o = (size_t(y) * im.width + x) * 3;
  return {im.rgb[o], im.rgb[o + 1], im.rgb[o + 2]};
}

Image solid(int w, int h, RGB c) {
  Image im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.rgb.insert(im.rgb.end(), c.begin(), c.end());
  return im;
}

Image patterned(int w, int h, int seed) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t((i * 37 + seed * 101) % 251);
  return im;
}

}  // namespace

TEST_CASE("jet_colour and diverging_colour at known points", "[heatmap]") {
  // Hand values first: the ends and the middle of both maps.
  CHECK(jet_colour(0.0) == RGB{0, 0, 128});
  CHECK(jet_colour(0.25) == RGB{0, 128, 255});
  CHECK(jet_colour(0.5) == RGB{128, 255, 128});
  CHECK(jet_colour(0.75) == RGB{255, 128, 0});
  CHECK(jet_colour(1.0) == RGB{128, 0, 0});
  CHECK(diverging_colour(-1.0) == RGB{0, 0, 255});
  CHECK(diverging_colour(0.0) == RGB{255, 255, 255});
  CHECK(diverging_colour(1.0) == RGB{255, 0, 0});
  CHECK(diverging_colour(0.5) == RGB{255, 128, 128});
  CHECK(diverging_colour(-0.5) == RGB{128, 128, 255});
  // Then a fine sweep against the segment-wise definitions (1/512 steps are exact in binary).
  for (int i = 0; i <= 512; ++i) {
    const double v = i / 512.0;
    INFO("v = " << v);
    CHECK(jet_colour(v) == expected_jet(v));
    CHECK(diverging_colour(2 * v - 1) == expected_bwr(2 * v - 1));
  }
  // Out of range clamps; NaN is an error.
  CHECK(jet_colour(-3.0) == jet_colour(0.0));
  CHECK(jet_colour(7.0) == jet_colour(1.0));
  CHECK(diverging_colour(-2.0) == diverging_colour(-1.0));
  CHECK(error_of([] { jet_colour(std::nan("")); }).find("NaN") != std::string::npos);
}

TEST_CASE("heatmap scales signed maps symmetrically and absolute maps from 0", "[heatmap]") {
  // Without clipping (percentile 100) the scale is max |map|.
  const Tensor signed_map = Tensor::from_vector({2, 3}, {-2.f, 0.f, 1.f, 2.f, -1.f, 0.5f});
  const Image s = heatmap(signed_map, MapScale::Signed, 100);
  REQUIRE(s.width == 3);
  REQUIRE(s.height == 2);
  CHECK(pixel(s, 0, 0) == RGB{0, 0, 255});
  CHECK(pixel(s, 1, 0) == RGB{255, 255, 255});
  CHECK(pixel(s, 2, 0) == expected_bwr(0.5));
  CHECK(pixel(s, 0, 1) == RGB{255, 0, 0});
  CHECK(pixel(s, 1, 1) == expected_bwr(-0.5));
  CHECK(pixel(s, 2, 1) == expected_bwr(0.25));

  // The same values on the absolute scale: magnitudes / 2 through jet.
  const Image a = heatmap(signed_map, MapScale::Absolute, 100);
  const float mags[6] = {1.f, 0.f, 0.5f, 1.f, 0.5f, 0.25f};
  for (int i = 0; i < 6; ++i) CHECK(pixel(a, i % 3, i / 3) == expected_jet(mags[i]));

  // A one-sided map: 0 stays white on the signed scale (not the colour of the minimum).
  const Tensor positive = Tensor::from_vector({1, 1, 1, 4}, {1.f, 2.f, 3.f, 4.f});
  const Image p = heatmap(positive, MapScale::Signed, 100);
  REQUIRE(p.width == 4);
  REQUIRE(p.height == 1);
  CHECK(pixel(p, 0, 0) == expected_bwr(0.25));
  CHECK(pixel(p, 3, 0) == RGB{255, 0, 0});
}

TEST_CASE("heatmap of an all-zero map is the colour of 0 everywhere", "[heatmap]") {
  const Tensor zero = Tensor::zeros({5, 7});
  const Image s = heatmap(zero, MapScale::Signed);
  const Image a = heatmap(zero, MapScale::Absolute);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 7; ++x) {
      CHECK(pixel(s, x, y) == RGB{255, 255, 255});
      CHECK(pixel(a, x, y) == RGB{0, 0, 128});
    }
}

TEST_CASE("heatmap clips at the given percentile of |map|", "[heatmap]") {
  // 100 pixels 0..99: numpy.percentile(range(100), 50) = 49.5.
  std::vector<float> ramp(100);
  for (int i = 0; i < 100; ++i) ramp[i] = float(i);
  // Shuffle so the percentile cannot rely on the input being sorted.
  std::reverse(ramp.begin(), ramp.begin() + 37);
  const Tensor map = Tensor::from_vector({10, 10}, ramp);
  const Image im = heatmap(map, MapScale::Absolute, 50);
  for (int i = 0; i < 100; ++i) {
    INFO("pixel " << i << " value " << ramp[i]);
    CHECK(pixel(im, i % 10, i / 10) == expected_jet(std::min(1.0, ramp[i] / 49.5)));
  }
  // 99.5th percentile of 0..99 = 98.505: only the top value saturates.
  const Image d = heatmap(map, MapScale::Absolute);
  const auto where = [&](float v) { return int(std::find(ramp.begin(), ramp.end(), v) - ramp.begin()); };
  CHECK(pixel(d, where(98) % 10, where(98) / 10) == expected_jet(98 / 98.505));
  CHECK(pixel(d, where(99) % 10, where(99) / 10) == RGB{128, 0, 0});

  // Mostly zeros: the percentile is 0, so the maximum is used and the spike is fully coloured.
  Tensor sparse = Tensor::zeros({20, 20});
  sparse[57] = -3.f;
  const Image sp = heatmap(sparse, MapScale::Signed);
  CHECK(pixel(sp, 57 % 20, 57 / 20) == RGB{0, 0, 255});
  CHECK(pixel(sp, 0, 0) == RGB{255, 255, 255});
}

TEST_CASE("heatmap rejects non-finite values, bad shapes and bad percentiles", "[heatmap]") {
  Tensor m = Tensor::zeros({3, 3});
  m[4] = std::numeric_limits<float>::quiet_NaN();
  CHECK(error_of([&] { heatmap(m, MapScale::Signed); }).find("non-finite") != std::string::npos);
  m[4] = std::numeric_limits<float>::infinity();
  CHECK(error_of([&] { heatmap(m, MapScale::Absolute); }).find("(1, 1)") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({3, 4, 4}), MapScale::Signed); }).find("[3, 4, 4]") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({4}), MapScale::Signed); }).find("heatmap") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({0, 4}), MapScale::Signed); }).find("out of range") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor(), MapScale::Signed); }).find("heatmap") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({2, 2}), MapScale::Signed, 0); }).find("percentile") != std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({2, 2}), MapScale::Signed, 100.5); }).find("percentile") !=
        std::string::npos);
  CHECK(error_of([] { heatmap(Tensor::zeros({2, 2}), MapScale::Signed, std::nan("")); }).find("percentile") !=
        std::string::npos);
}

TEST_CASE("overlay blends half heat map, half image, rounded", "[heatmap]") {
  Image image, heat;
  image.width = heat.width = 2;
  image.height = heat.height = 2;
  image.rgb = {10, 20, 30, 0, 0, 0, 255, 255, 255, 100, 101, 102};
  heat.rgb = {21, 20, 31, 255, 1, 0, 255, 0, 128, 0, 102, 255};
  // By hand: (10+21)/2 = 15.5 -> 16, (20+20)/2 = 20, (30+31)/2 = 30.5 -> 31, 127.5 -> 128,
  // 0.5 -> 1, 0, 255, 127.5 -> 128, 191.5 -> 192, 50, 101.5 -> 102, 178.5 -> 179.
  const std::vector<uint8_t> expect = {16, 20, 31, 128, 1, 0, 255, 128, 192, 50, 102, 179};
  CHECK(overlay(image, heat).rgb == expect);
  // alpha 1: the heat map; alpha 0: the image; alpha 0.25: 0.25 * 21 + 0.75 * 10 = 12.75 -> 13.
  CHECK(overlay(image, heat, 1.f).rgb == heat.rgb);
  CHECK(overlay(image, heat, 0.f).rgb == image.rgb);
  CHECK(int(overlay(image, heat, 0.25f).rgb[0]) == 13);

  CHECK(error_of([&] { overlay(image, solid(3, 2, {0, 0, 0})); }).find("3x2") != std::string::npos);
  CHECK(error_of([&] { overlay(image, heat, 1.5f); }).find("alpha") != std::string::npos);
  CHECK(error_of([&] { overlay(Image(), heat); }).find("invalid image") != std::string::npos);
}

TEST_CASE("panel places upscaled cells on the documented grid", "[heatmap]") {
  // 2 rows x 3 columns of 32x32 cells -> factor 4, 128x128 cells, text scale 1.
  const int gap = 3, w = 32, h = 32, f = 4, t = 1;
  std::vector<std::vector<Image>> rows(2);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) rows[r].push_back(patterned(w, h, r * 3 + c));
  const std::vector<std::string> row_labels = {"saliency", "integrated_gradients"};
  const std::vector<std::string> column_labels = {"image", "dense", "spade 50%"};
  const Image p = panel(rows, row_labels, column_labels, gap);

  const int left = (6 * 20 - 1) * t + gap;  // "integrated_gradients" is the longest, 20 characters
  const int top = 7 * t + gap;
  const int cw = w * f, ch = h * f;
  REQUIRE(p.width == gap + left + 3 * (cw + gap));
  REQUIRE(p.height == gap + top + 2 * (ch + gap));
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) {
      const int x0 = gap + left + c * (cw + gap), y0 = gap + top + r * (ch + gap);
      int64_t wrong = 0;
      for (int y = 0; y < ch; ++y)
        for (int x = 0; x < cw; ++x) wrong += pixel(p, x0 + x, y0 + y) != pixel(rows[r][c], x / f, y / f);
      INFO("cell " << r << ", " << c);
      CHECK(wrong == 0);
      // The gap right of each cell is background.
      CHECK(pixel(p, x0 + cw, y0) == RGB{255, 255, 255});
    }
  // Labels leave ink in their strips: the column-label strip and the row-label column.
  int64_t ink_top = 0, ink_left = 0;
  for (int y = gap; y < gap + 7 * t; ++y)
    for (int x = gap + left; x < p.width; ++x) ink_top += pixel(p, x, y) == RGB{0, 0, 0};
  for (int y = gap + top; y < p.height; ++y)
    for (int x = gap; x < gap + left - gap; ++x) ink_left += pixel(p, x, y) == RGB{0, 0, 0};
  CHECK(ink_top > 50);
  CHECK(ink_left > 100);

  // Label positions: "-" is ink only on glyph row 3, columns 0..4. Column label centred over the
  // 128-pixel cell, row label at x = gap and centred on the row.
  const Image one = panel({{patterned(w, h, 9)}}, {"-"}, {"-"}, gap);
  const int left1 = 5 + gap, top1 = 7 + gap;
  const int col_x = gap + left1 + (cw - 5) / 2, col_y = gap + 3;
  const int row_x = gap, row_y = gap + top1 + (ch - 7) / 2 + 3;
  int64_t misplaced = 0;
  for (int y = 0; y < one.height; ++y)
    for (int x = 0; x < gap + left1 + cw; ++x) {
      if (x >= gap + left1 && y >= gap + top1) continue;  // the cell itself
      const bool ink = (y == col_y && x >= col_x && x < col_x + 5) || (y == row_y && x >= row_x && x < row_x + 5);
      misplaced += (pixel(one, x, y) == RGB{0, 0, 0}) != ink;
    }
  CHECK(misplaced == 0);
}

TEST_CASE("panel without labels, with blank cells and large cells", "[heatmap]") {
  // 224x224 cells: factor 1, no label strips at all.
  const Image a = patterned(224, 224, 1);
  const Image p = panel({{a, Image()}, {Image(), a}}, {}, {}, 2);
  REQUIRE(p.width == 2 + 2 * (224 + 2));
  REQUIRE(p.height == 2 + 2 * (224 + 2));
  CHECK(pixel(p, 2, 2) == pixel(a, 0, 0));
  CHECK(pixel(p, 2 + 226 + 223, 2 + 226 + 223) == pixel(a, 223, 223));
  CHECK(pixel(p, 2 + 226 + 10, 2 + 10) == RGB{255, 255, 255});  // the blank cell

  // 50-pixel-high cells: factor 128 / 50 = 2.
  const Image b = patterned(30, 50, 2);
  const Image q = panel({{b}}, {}, {}, 0);
  REQUIRE(q.width == 60);
  REQUIRE(q.height == 100);
  CHECK(pixel(q, 59, 99) == pixel(b, 29, 49));

  CHECK(error_of([&] { panel({{a, b}}, {}, {}, 2); }).find("224x224") != std::string::npos);
  CHECK(error_of([&] { panel({{a}, {a, a}}, {}, {}, 2); }).find("row 1") != std::string::npos);
  CHECK(error_of([&] { panel({{a}}, {"x", "y"}, {}, 2); }).find("row labels") != std::string::npos);
  CHECK(error_of([&] { panel({{a}}, {}, {"x", "y"}, 2); }).find("column labels") != std::string::npos);
  CHECK(error_of([&] { panel({{Image()}}, {}, {}, 2); }).find("blank") != std::string::npos);
  CHECK(error_of([&] { panel({}, {}, {}, 2); }).find("no cells") != std::string::npos);
  CHECK(error_of([&] { panel({{a}}, {}, {}, -1); }).find("gap") != std::string::npos);
  CHECK(error_of([&] { panel({{a}}, {std::string(6000, 'x')}, {}, 2); }).find("size limit") != std::string::npos);
}

TEST_CASE("draw_text renders the 5x7 glyphs at their scale", "[heatmap]") {
  // "-" is the middle row (row 3) of the cell, all 5 columns; "1." starts with a column of ink at x = 2.
  Image im = solid(20, 20, {255, 255, 255});
  draw_text(im, 4, 5, "-", 2, {0, 0, 0});
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 20; ++x) {
      const bool ink = x >= 4 && x < 4 + 5 * 2 && y >= 5 + 3 * 2 && y < 5 + 4 * 2;
      INFO(x << ", " << y);
      CHECK((pixel(im, x, y) == RGB{0, 0, 0}) == ink);
    }
  CHECK(text_width("", 3) == 0);
  CHECK(text_width("abc", 1) == 17);
  CHECK(text_width("abc", 2) == 34);
  // Upper and lower case draw the same; unknown bytes draw like '?'; off-image pixels are skipped.
  Image upper = solid(40, 10, {255, 255, 255}), lower = upper, q1 = upper, q2 = upper;
  draw_text(upper, 1, 1, "SPADE", 1, {0, 0, 0});
  draw_text(lower, 1, 1, "spade", 1, {0, 0, 0});
  CHECK(upper.rgb == lower.rgb);
  draw_text(q1, 1, 1, "\x01", 1, {0, 0, 0});
  draw_text(q2, 1, 1, "?", 1, {0, 0, 0});
  CHECK(q1.rgb == q2.rgb);
  draw_text(q1, -3, -3, "long text running off the edge", 4, {0, 0, 0});
}

TEST_CASE("heat map and panel survive a PNG round trip", "[heatmap]") {
  const Tensor map = test::random_tensor({9, 13}, 7);
  const Image heat = heatmap(map, MapScale::Signed);
  const Image p = panel({{patterned(13, 9, 0), heat, overlay(patterned(13, 9, 0), heat)}}, {"m"}, {"a", "b", "c"}, 4);
  const std::string dir = test::temp_dir();
  save_png(dir + "/heat.png", heat);
  save_png(dir + "/panel.png", p);
  const Image h2 = load_image(dir + "/heat.png");
  const Image p2 = load_image(dir + "/panel.png");
  CHECK(h2.width == 13);
  CHECK(h2.height == 9);
  CHECK(test::differing_bytes(h2, heat) == 0);
  CHECK(p2.width == p.width);
  CHECK(p2.height == p.height);
  CHECK(test::differing_bytes(p2, p) == 0);
}
