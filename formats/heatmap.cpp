#include "formats/heatmap.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "engine/error.h"

namespace spade {

namespace {

std::string dims_str(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

uint8_t to_byte(double unit) {  // [0, 1] -> 0..255, halves away from zero
  return static_cast<uint8_t>(std::lround(255.0 * std::clamp(unit, 0.0, 1.0)));
}

void check_colour_arg(double v, const char* what) {
  if (std::isnan(v)) throw Error(std::string(what) + ": value is NaN");
}

void check_image(const Image& im, const char* what) {
  if (im.width <= 0 || im.height <= 0 || im.rgb.size() != size_t(im.width) * size_t(im.height) * 3)
    throw Error(std::string(what) + ": invalid image (" + dims_str(im.width, im.height) + " with " +
                std::to_string(im.rgb.size()) + " bytes)");
}

// numpy.percentile(values, p) with the default linear interpolation; reorders `values`.
double percentile(std::vector<float>& values, double p) {
  const double rank = p / 100.0 * double(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const double below = values[lo];
  if (lo + 1 >= values.size()) return below;
  // After nth_element everything past lo is >= values[lo]; the next order statistic is their minimum.
  const double above = *std::min_element(values.begin() + lo + 1, values.end());
  return below + (rank - double(lo)) * (above - below);
}

}  // namespace

std::array<uint8_t, 3> diverging_colour(double v) {
  check_colour_arg(v, "diverging_colour");
  v = std::clamp(v, -1.0, 1.0);
  if (v <= 0) return {to_byte(1 + v), to_byte(1 + v), 255};
  return {255, to_byte(1 - v), to_byte(1 - v)};
}

std::array<uint8_t, 3> jet_colour(double v) {
  check_colour_arg(v, "jet_colour");
  v = std::clamp(v, 0.0, 1.0);
  auto ramp = [v](double k) { return to_byte(1.5 - std::fabs(4 * v - k)); };
  return {ramp(3), ramp(2), ramp(1)};
}

Image heatmap(const Tensor& map, MapScale scale, double clip_percentile) {
  if (!map.defined() || map.device() != Device::CPU)
    throw Error("heatmap: expected a CPU tensor");
  const Shape& s = map.shape();
  bool single_plane = s.size() >= 2;
  for (size_t i = 0; i + 2 < s.size(); ++i) single_plane = single_plane && s[i] == 1;
  if (!single_plane)
    throw Error("heatmap: expected an (H, W) map, got " + shape_str(s));
  const int64_t h = s[s.size() - 2], w = s[s.size() - 1];
  if (h <= 0 || w <= 0 || h > kMaxImageSide || w > kMaxImageSide || h * w > kMaxImagePixels)
    throw Error("heatmap: map size " + dims_str(w, h) + " out of range (1.." + std::to_string(kMaxImageSide) +
                " per side)");
  if (!(clip_percentile > 0 && clip_percentile <= 100))
    throw Error("heatmap: clip percentile " + std::to_string(clip_percentile) + " not in (0, 100]");

  const float* src = map.data();
  const int64_t n = h * w;
  std::vector<float> magnitude(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(src[i]))
      throw Error("heatmap: map has a non-finite value (" + std::to_string(src[i]) + ") at pixel (" +
                  std::to_string(i / w) + ", " + std::to_string(i % w) + ")");
    magnitude[i] = std::fabs(src[i]);
  }
  const float max_magnitude = *std::max_element(magnitude.begin(), magnitude.end());
  double denom = percentile(magnitude, clip_percentile);
  if (!(denom > 0)) denom = max_magnitude;  // mostly-zero map: keep its few non-zero pixels visible

  Image im;
  im.width = static_cast<int>(w);
  im.height = static_cast<int>(h);
  im.rgb.resize(size_t(n) * 3);
  for (int64_t i = 0; i < n; ++i) {
    // An all-zero map has denom 0; every pixel then takes the colour of 0.
    const double v = denom > 0 ? double(src[i]) / denom : 0.0;
    const std::array<uint8_t, 3> c = scale == MapScale::Signed ? diverging_colour(v) : jet_colour(std::fabs(v));
    std::copy(c.begin(), c.end(), im.rgb.begin() + i * 3);
  }
  return im;
}

Image overlay(const Image& image, const Image& heat, float alpha) {
  check_image(image, "overlay (image)");
  check_image(heat, "overlay (heat map)");
  if (image.width != heat.width || image.height != heat.height)
    throw Error("overlay: image is " + dims_str(image.width, image.height) + " but heat map is " +
                dims_str(heat.width, heat.height));
  if (!(alpha >= 0.f && alpha <= 1.f)) throw Error("overlay: alpha " + std::to_string(alpha) + " not in [0, 1]");
  Image out = image;
  const double a = alpha;
  for (size_t i = 0; i < out.rgb.size(); ++i) {
    const double v = a * heat.rgb[i] + (1.0 - a) * image.rgb[i];
    out.rgb[i] = static_cast<uint8_t>(std::clamp<long>(std::lround(v), 0, 255));
  }
  return out;
}

// ---- 5x7 font --------------------------------------------------------------------------------
namespace {

struct Glyph {
  char ch;
  const char* rows;  // 7 rows of 5 pixels, '#' = ink, rows separated by one space
};

// Drawn for this project: classic dot-matrix capitals and digits.
constexpr Glyph kFont[] = {
    {'A', ".###. #...# #...# ##### #...# #...# #...#"}, {'B', "####. #...# #...# ####. #...# #...# ####."},
    {'C', ".###. #...# #.... #.... #.... #...# .###."}, {'D', "####. #...# #...# #...# #...# #...# ####."},
    {'E', "##### #.... #.... ####. #.... #.... #####"}, {'F', "##### #.... #.... ####. #.... #.... #...."},
    {'G', ".###. #...# #.... #.### #...# #...# .####"}, {'H', "#...# #...# #...# ##### #...# #...# #...#"},
    {'I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."}, {'J', "..### ...#. ...#. ...#. ...#. #..#. .##.."},
    {'K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"}, {'L', "#.... #.... #.... #.... #.... #.... #####"},
    {'M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"}, {'N', "#...# #...# ##..# #.#.# #..## #...# #...#"},
    {'O', ".###. #...# #...# #...# #...# #...# .###."}, {'P', "####. #...# #...# ####. #.... #.... #...."},
    {'Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"}, {'R', "####. #...# #...# ####. #.#.. #..#. #...#"},
    {'S', ".#### #.... #.... .###. ....# ....# ####."}, {'T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."},
    {'U', "#...# #...# #...# #...# #...# #...# .###."}, {'V', "#...# #...# #...# #...# #...# .#.#. ..#.."},
    {'W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."}, {'X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"},
    {'Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."}, {'Z', "##### ....# ...#. ..#.. .#... #.... #####"},
    {'0', ".###. #...# #..## #.#.# ##..# #...# .###."}, {'1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."},
    {'2', ".###. #...# ....# ...#. ..#.. .#... #####"}, {'3', "####. ....# ....# .###. ....# ....# ####."},
    {'4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."}, {'5', "##### #.... ####. ....# ....# #...# .###."},
    {'6', "..##. .#... #.... ####. #...# #...# .###."}, {'7', "##### ....# ...#. ..#.. .#... .#... .#..."},
    {'8', ".###. #...# #...# .###. #...# #...# .###."}, {'9', ".###. #...# #...# .#### ....# ...#. .##.."},
    {' ', "..... ..... ..... ..... ..... ..... ....."}, {'_', "..... ..... ..... ..... ..... ..... #####"},
    {'.', "..... ..... ..... ..... ..... .##.. .##.."}, {'-', "..... ..... ..... ##### ..... ..... ....."},
    {':', "..... .##.. .##.. ..... .##.. .##.. ....."}, {'/', "....# ....# ...#. ..#.. .#... #.... #...."},
    {'%', "##..# ##..# ...#. ..#.. .#... #..## #..##"}, {'?', ".###. #...# ....# ...#. ..#.. ..... ..#.."},
    {'(', "...#. ..#.. .#... .#... .#... ..#.. ...#."}, {')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."},
    {'+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."}, {'=', "..... ..... ##### ..... ##### ..... ....."},
    {',', "..... ..... ..... ..... .##.. ..#.. .#..."},
};

const char* glyph_rows(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  const char* unknown = nullptr;
  for (const Glyph& g : kFont) {
    if (g.ch == c) return g.rows;
    if (g.ch == '?') unknown = g.rows;
  }
  return unknown;
}

void fill_rect(Image& im, int x, int y, int w, int h, const std::array<uint8_t, 3>& colour) {
  const int x0 = std::max(x, 0), x1 = std::min(x + w, im.width);
  const int y0 = std::max(y, 0), y1 = std::min(y + h, im.height);
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = x0; xx < x1; ++xx)
      std::copy(colour.begin(), colour.end(), im.rgb.begin() + (size_t(yy) * im.width + xx) * 3);
}

}  // namespace

int text_scale(int cell_height) { return std::max(1, cell_height / 128); }

int text_width(const std::string& text, int t) {
  if (text.empty()) return 0;
  const int64_t width = (int64_t(kGlyphAdvance) * int64_t(text.size()) - 1) * t;
  return static_cast<int>(std::min<int64_t>(width, INT_MAX));  // absurdly long text saturates
}

void draw_text(Image& im, int x, int y, const std::string& text, int t, std::array<uint8_t, 3> colour) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char* rows = glyph_rows(text[i]);
    const int64_t gx64 = x + int64_t(i) * kGlyphAdvance * t;
    if (gx64 >= im.width) break;  // the rest is off the image (and would overflow int)
    const int gx = static_cast<int>(gx64);
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int c = 0; c < kGlyphWidth; ++c)
        if (rows[r * (kGlyphWidth + 1) + c] == '#') fill_rect(im, gx + c * t, y + r * t, t, t, colour);
  }
}

// ---- panel -----------------------------------------------------------------------------------
Image panel(const std::vector<std::vector<Image>>& rows, const std::vector<std::string>& row_labels,
            const std::vector<std::string>& column_labels, int gap) {
  if (rows.empty() || rows[0].empty()) throw Error("panel: no cells");
  const size_t ncols = rows[0].size();
  int w = 0, h = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != ncols)
      throw Error("panel: row " + std::to_string(r) + " has " + std::to_string(rows[r].size()) +
                  " cells, row 0 has " + std::to_string(ncols));
    for (size_t c = 0; c < ncols; ++c) {
      const Image& cell = rows[r][c];
      if (cell.width == 0 && cell.height == 0 && cell.rgb.empty()) continue;  // blank cell
      const std::string where = "panel cell (" + std::to_string(r) + ", " + std::to_string(c) + ")";
      check_image(cell, where.c_str());
      if (w == 0) {
        w = cell.width;
        h = cell.height;
      } else if (cell.width != w || cell.height != h) {
        throw Error(where + " is " + dims_str(cell.width, cell.height) + ", other cells are " + dims_str(w, h));
      }
    }
  }
  if (w == 0) throw Error("panel: every cell is blank");
  if (!row_labels.empty() && row_labels.size() != rows.size())
    throw Error("panel: " + std::to_string(row_labels.size()) + " row labels for " + std::to_string(rows.size()) +
                " rows");
  if (!column_labels.empty() && column_labels.size() != ncols)
    throw Error("panel: " + std::to_string(column_labels.size()) + " column labels for " + std::to_string(ncols) +
                " columns");
  if (gap < 0 || gap > 1024) throw Error("panel: gap " + std::to_string(gap) + " not in 0..1024");

  const int f = std::max(1, 128 / h);
  const int64_t cw = int64_t(w) * f, ch = int64_t(h) * f;
  const int t = text_scale(static_cast<int>(std::min<int64_t>(ch, kMaxImageSide)));
  int64_t left = 0;
  for (const std::string& label : row_labels) left = std::max<int64_t>(left, text_width(label, t) + gap);
  const int64_t top = column_labels.empty() ? 0 : int64_t(kGlyphHeight) * t + gap;
  const int64_t pw = gap + left + int64_t(ncols) * (cw + gap);
  const int64_t ph = gap + top + int64_t(rows.size()) * (ch + gap);
  if (pw > kMaxImageSide || ph > kMaxImageSide || pw * ph > kMaxImagePixels)
    throw Error("panel: " + dims_str(pw, ph) + " exceeds the image size limit of " + std::to_string(kMaxImageSide) +
                " per side");

  Image out;
  out.width = static_cast<int>(pw);
  out.height = static_cast<int>(ph);
  out.rgb.assign(size_t(pw) * size_t(ph) * 3, 255);
  const std::array<uint8_t, 3> ink{0, 0, 0};
  for (size_t c = 0; c < column_labels.size(); ++c) {
    // Keep only the characters that fit: a cut glyph reads worse than a shortened word.
    const size_t fit = static_cast<size_t>((cw + t) / (kGlyphAdvance * t));
    const std::string label = column_labels[c].substr(0, fit);
    const int64_t x = gap + left + int64_t(c) * (cw + gap) + (cw - text_width(label, t)) / 2;
    draw_text(out, static_cast<int>(x), gap, label, t, ink);
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t y = gap + top + int64_t(r) * (ch + gap);
    if (!row_labels.empty())
      draw_text(out, gap, static_cast<int>(y + (ch - kGlyphHeight * t) / 2), row_labels[r], t, ink);
    for (size_t c = 0; c < ncols; ++c) {
      const Image& cell = rows[r][c];
      if (cell.rgb.empty()) continue;
      const int64_t x = gap + left + int64_t(c) * (cw + gap);
      for (int64_t yy = 0; yy < ch; ++yy) {
        uint8_t* dst = out.rgb.data() + (size_t(y + yy) * size_t(pw) + size_t(x)) * 3;
        const uint8_t* src_row = cell.rgb.data() + size_t(yy / f) * size_t(w) * 3;
        for (int64_t xx = 0; xx < cw; ++xx, dst += 3) std::copy_n(src_row + (xx / f) * 3, 3, dst);
      }
    }
  }
  return out;
}

}  // namespace spade
