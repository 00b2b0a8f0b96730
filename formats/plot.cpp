#include "formats/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "engine/error.h"
#include "formats/heatmap.h"

namespace spade {

namespace {

void set_pixel(Image& im, int x, int y, std::array<uint8_t, 3> c) {
  if (x < 0 || y < 0 || x >= im.width || y >= im.height) return;
  uint8_t* p = im.rgb.data() + (size_t(y) * im.width + x) * 3;
  p[0] = c[0];
  p[1] = c[1];
  p[2] = c[2];
}

// A line of thickness 2 by stepping along its longer axis.
void draw_line(Image& im, double x0, double y0, double x1, double y1, std::array<uint8_t, 3> c) {
  const int steps = std::max(1, int(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0)))));
  for (int s = 0; s <= steps; ++s) {
    const double t = double(s) / steps;
    const int x = int(std::lround(x0 + t * (x1 - x0))), y = int(std::lround(y0 + t * (y1 - y0)));
    set_pixel(im, x, y, c);
    set_pixel(im, x, y + 1, c);
  }
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

std::array<uint8_t, 3> series_colour(size_t k) {
  static const std::array<uint8_t, 3> tab10[10] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                                   {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                                   {188, 189, 34},  {23, 190, 207}};
  return tab10[k % 10];
}

Image line_plot(const std::vector<PlotSeries>& series, int width, int height) {
  if (width < 64 || height < 48) throw Error("line_plot: the plot must be at least 64 x 48 pixels");
  Image im;
  im.width = width;
  im.height = height;
  im.rgb.assign(size_t(width) * height * 3, 255);
  double lo = INFINITY, hi = -INFINITY;
  size_t n = 0;
  for (const PlotSeries& s : series) {
    n = std::max(n, s.y.size());
    for (double v : s.y)
      if (std::isfinite(v)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
  }
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) hi = lo + 1;
  // Plot area: room for the y labels on the left.
  const int left = 8 + text_width("-0.000e+00", 1), right = width - 8, top = 8, bottom = height - 8;
  const std::array<uint8_t, 3> frame{0, 0, 0};
  draw_line(im, left, top, right, top, frame);
  draw_line(im, left, bottom, right, bottom, frame);
  for (int y = top; y <= bottom; ++y) {
    set_pixel(im, left, y, frame);
    set_pixel(im, right, y, frame);
  }
  draw_text(im, 4, top, number(hi), 1, frame);
  draw_text(im, 4, bottom - kGlyphHeight, number(lo), 1, frame);
  auto px = [&](size_t i) { return left + (n > 1 ? double(i) / double(n - 1) : 0.0) * (right - left); };
  auto py = [&](double v) { return bottom - (v - lo) / (hi - lo) * (bottom - top); };
  for (const PlotSeries& s : series)
    for (size_t i = 1; i < s.y.size(); ++i)
      if (std::isfinite(s.y[i - 1]) && std::isfinite(s.y[i]))
        draw_line(im, px(i - 1), py(s.y[i - 1]), px(i), py(s.y[i]), s.colour);
  return im;
}

}  // namespace spade
