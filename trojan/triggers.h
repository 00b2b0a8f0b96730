#pragma once
// The Trojan triggers of the backdoor experiment: small emoji-like icons drawn by our own code
// from analytic shapes (polygons, discs, ellipses and their unions and differences), anti-aliased
// by supersampling. The SPADE paper's evaluation triggers are "star", "heart", "smiley" and
// "fish"; "moon", "diamond", "flower" and "bolt" are a second, different set for tuning, so that
// no choice is tuned on the triggers it is evaluated on.
#include <functional>
#include <string>
#include <vector>

namespace spade::trojan {

// A size x size icon in straight (not premultiplied) colour.
struct Icon {
  int size = 0;
  std::vector<float> rgb;    // size * size * 3, in [0, 1], row-major interleaved
  std::vector<float> alpha;  // size * size, coverage in [0, 1]; 0 = transparent background
};

// Samples per pixel along each axis: 8 x 8 = 64 coverage levels, plenty for icons of 8-64 px.
constexpr int kSamplesPerAxis = 8;

// The eight built-in names, evaluation set first.
const std::vector<std::string>& trigger_names();
bool is_trigger_name(const std::string& name);

// Renders trigger `name` at size x size pixels (size >= 4). Throws spade::Error for an unknown
// name or a size out of range.
Icon draw_trigger(const std::string& name, int size);

// The supersampler behind draw_trigger, exposed so that its coverage can be checked against
// analytic areas: the fraction of each pixel's kSamplesPerAxis^2 stratified samples for which
// inside(u, v) holds, where (u, v) in [0, 1]^2 are icon coordinates (u right, v down). Returns
// size * size values, row-major.
std::vector<float> supersample_coverage(const std::function<bool(double, double)>& inside, int size);

// The smiley's face disc (icon coordinates), for the coverage test: its alpha sums to about
// pi * r^2 * size^2, since the eyes and the mouth are painted over the disc, not cut out.
constexpr double kSmileyCentre = 0.5;
constexpr double kSmileyRadius = 0.47;

}  // namespace spade::trojan
