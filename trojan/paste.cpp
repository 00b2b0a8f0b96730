#include "trojan/paste.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"
#include "interpret/sample_rng.h"

namespace spade::trojan {
namespace {

float clamp01(double v) { return float(std::min(1.0, std::max(0.0, v))); }

// Rotates the hue of one colour by `shift` turns through HSV (value and saturation kept).
void shift_hue(float* rgb, double shift) {
  const double r = rgb[0], g = rgb[1], b = rgb[2];
  const double hi = std::max({r, g, b}), lo = std::min({r, g, b});
  const double chroma = hi - lo;
  if (chroma <= 0.0) return;  // grey: no hue to rotate
  double h;                   // in turns
  if (hi == r) {
    h = (g - b) / chroma / 6.0;
  } else if (hi == g) {
    h = ((b - r) / chroma + 2.0) / 6.0;
  } else {
    h = ((r - g) / chroma + 4.0) / 6.0;
  }
  h += shift;
  h -= std::floor(h);
  // Back from (h, chroma, lo): the sector picks which channel rises or falls.
  const double sector = h * 6.0;
  const int k = std::min(5, static_cast<int>(sector));
  const double f = sector - k;
  const double rise = lo + chroma * f, fall = hi - chroma * f;
  double out[3];
  switch (k) {
    case 0: out[0] = hi, out[1] = rise, out[2] = lo; break;
    case 1: out[0] = fall, out[1] = hi, out[2] = lo; break;
    case 2: out[0] = lo, out[1] = hi, out[2] = rise; break;
    case 3: out[0] = lo, out[1] = fall, out[2] = hi; break;
    case 4: out[0] = rise, out[1] = lo, out[2] = hi; break;
    default: out[0] = hi, out[1] = lo, out[2] = fall; break;
  }
  for (int c = 0; c < 3; ++c) rgb[c] = clamp01(out[c]);
}

}  // namespace

PasteParams draw_paste_params(uint64_t seed, int64_t index, int width, int height, double side_fraction) {
  if (!(side_fraction > 0.0 && side_fraction <= 1.0))
    throw Error("paste: side fraction " + std::to_string(side_fraction) + " not in (0, 1]");
  const int side = std::min(width, height);
  PasteParams p;
  p.size = std::max(4, static_cast<int>(std::lround(side * side_fraction)));
  if (p.size > side)
    throw Error("paste: image " + std::to_string(width) + "x" + std::to_string(height) +
                " too small for a " + std::to_string(p.size) + " px trigger");
  // Fixed draw order: x, y, brightness, saturation, hue.
  interp::SampleRng rng(seed, index);
  p.x = rng.randint_inclusive(width - p.size);
  p.y = rng.randint_inclusive(height - p.size);
  p.brightness = float(rng.uniform(kBrightnessMin, kBrightnessMax));
  p.saturation = float(rng.uniform(kSaturationMin, kSaturationMax));
  p.hue = float(rng.uniform(-kHueShiftMax, kHueShiftMax));
  return p;
}

Icon jitter_icon(const Icon& icon, const PasteParams& p) {
  if (!(p.brightness >= 0.f) || !(p.saturation >= 0.f) || !std::isfinite(p.brightness) ||
      !std::isfinite(p.saturation))
    throw Error("paste: jitter factors must be finite and >= 0 (brightness " + std::to_string(p.brightness) +
                ", saturation " + std::to_string(p.saturation) + ")");
  if (!(std::fabs(p.hue) <= 0.5f)) throw Error("paste: hue shift " + std::to_string(p.hue) + " not in [-0.5, 0.5]");
  Icon out = icon;
  for (size_t i = 0; i + 2 < out.rgb.size(); i += 3) {
    float* px = &out.rgb[i];
    for (int c = 0; c < 3; ++c) px[c] = clamp01(double(px[c]) * p.brightness);
    const double grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
    for (int c = 0; c < 3; ++c) px[c] = clamp01(grey + (px[c] - grey) * double(p.saturation));
    if (p.hue != 0.f) shift_hue(px, p.hue);
  }
  return out;
}

std::vector<uint8_t> paste_icon(Image& image, const Icon& icon, const PasteParams& p, float opacity) {
  const int n = icon.size;
  if (n <= 0 || icon.rgb.size() != size_t(n) * n * 3 || icon.alpha.size() != size_t(n) * n)
    throw Error("paste: malformed icon (size " + std::to_string(n) + ")");
  if (n != p.size)
    throw Error("paste: icon is " + std::to_string(n) + " px but the parameters say " + std::to_string(p.size));
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != size_t(image.width) * image.height * 3)
    throw Error("paste: malformed image");
  if (p.x < 0 || p.y < 0 || int64_t(p.x) + n > image.width || int64_t(p.y) + n > image.height)
    throw Error("paste: a " + std::to_string(n) + " px trigger at (" + std::to_string(p.x) + ", " +
                std::to_string(p.y) + ") does not fit a " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " image");
  if (!(opacity >= 0.f && opacity <= 1.f)) throw Error("paste: opacity " + std::to_string(opacity) + " not in [0, 1]");

  std::vector<uint8_t> mask(size_t(image.width) * image.height, 0);
  for (int iy = 0; iy < n; ++iy) {
    for (int ix = 0; ix < n; ++ix) {
      const size_t i = size_t(iy) * n + ix;
      const float a = icon.alpha[i];
      if (!(a > 0.f)) continue;
      const size_t pixel = size_t(p.y + iy) * image.width + (p.x + ix);
      mask[pixel] = 1;
      // (1 - a) * img + a * (o * icon + (1 - o) * img) = (1 - a * o) * img + a * o * icon
      const double w = double(a) * double(opacity);
      for (int c = 0; c < 3; ++c) {
        uint8_t& dst = image.rgb[pixel * 3 + c];
        const double v = (1.0 - w) * double(dst) + w * (double(icon.rgb[i * 3 + c]) * 255.0);
        dst = static_cast<uint8_t>(std::min(255.0, std::max(0.0, std::floor(v + 0.5))));
      }
    }
  }
  return mask;
}

}  // namespace spade::trojan
