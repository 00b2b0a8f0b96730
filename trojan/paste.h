#pragma once
// Placing a Trojan trigger: per-sample random position, size and colour jitter (drawn with the
// counter-based SampleRng, so sample i of a seed is the same in any order or thread), and the
// paste itself, which also returns the exact set of pixels the trigger touched.
#include <cstdint>
#include <vector>

#include "formats/image.h"
#include "trojan/triggers.h"

namespace spade::trojan {

struct PasteParams {
  int x = 0, y = 0;        // top-left corner in the image
  int size = 0;            // icon side in pixels
  float brightness = 1.f;  // multiplicative factors of the colour jitter
  float saturation = 1.f;
  float hue = 0.f;         // hue shift in turns, [-0.5, 0.5]
};

// The ranges draw_paste_params draws from.
constexpr double kDefaultSideFraction = 0.25;
constexpr double kBrightnessMin = 0.7, kBrightnessMax = 1.3;
constexpr double kSaturationMin = 0.7, kSaturationMax = 1.3;
constexpr double kHueShiftMax = 0.05;

// The parameters of sample `index` of `seed` for a width x height image:
// size = max(4, round(min(width, height) * side_fraction)), position uniform among those that keep
// the icon fully inside, brightness and saturation uniform in [0.7, 1.3), hue shift uniform in
// [-0.05, 0.05). Throws spade::Error when the image is smaller than the icon or side_fraction is
// not in (0, 1].
PasteParams draw_paste_params(uint64_t seed, int64_t index, int width, int height,
                              double side_fraction = kDefaultSideFraction);

// Colour jitter of the icon's colours (alpha unchanged), each step clamped to [0, 1]: brightness
// scales the colour, saturation blends with its grey (ITU-R 601 luma) as torchvision's
// adjust_saturation does, hue rotates the HSV hue by p.hue turns. Factors 1, 1, 0 are the
// identity. Throws spade::Error for a negative factor or a hue shift outside [-0.5, 0.5].
Icon jitter_icon(const Icon& icon, const PasteParams& p);

// Pastes the (already jittered) icon into the image at (p.x, p.y); icon.size must equal p.size:
//   out = (1 - a) * image + a * (opacity * icon + (1 - opacity) * image),   a = alpha,
// in 0-255 units, rounded to nearest and clamped. With the default opacity an opaque trigger
// pixel is 0.8 trigger + 0.2 image. Returns the exact pixel mask, height * width bytes: 1 where
// alpha > 0 (every pixel the trigger touched), else 0. Throws spade::Error if the icon does not
// fit, the buffers have the wrong sizes, or opacity is not in [0, 1].
std::vector<uint8_t> paste_icon(Image& image, const Icon& icon, const PasteParams& p, float opacity = 0.8f);

}  // namespace spade::trojan
