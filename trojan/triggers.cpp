#include "trojan/triggers.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "engine/error.h"

namespace spade::trojan {
namespace {

constexpr double kPi = 3.14159265358979323846;
// Large enough for any use as a trigger; refuses sizes whose buffers would be absurd.
constexpr int kMaxIconSize = 4096;

// A region of the icon plane: inside(u, v) with (u, v) in [0, 1]^2, u right and v down.
using Region = std::function<bool(double, double)>;
using Rgb = std::array<float, 3>;

struct Point {
  double u, v;
};

Region disc(double cu, double cv, double r) {
  return [=](double u, double v) { return (u - cu) * (u - cu) + (v - cv) * (v - cv) <= r * r; };
}

Region ellipse(double cu, double cv, double ru, double rv) {
  return [=](double u, double v) {
    const double a = (u - cu) / ru, b = (v - cv) / rv;
    return a * a + b * b <= 1.0;
  };
}

// Even-odd crossing rule; the icons' polygons are simple, so this is plain insideness.
Region polygon(std::vector<Point> pts) {
  return [pts = std::move(pts)](double u, double v) {
    bool in = false;
    for (size_t i = 0, j = pts.size() - 1; i < pts.size(); j = i++) {
      const Point& a = pts[i];
      const Point& b = pts[j];
      if ((a.v > v) != (b.v > v) && u < a.u + (v - a.v) * (b.u - a.u) / (b.v - a.v)) in = !in;
    }
    return in;
  };
}

// A star with `points` tips of radius r_out and notches of radius r_in, the first tip straight up.
Region star(double cu, double cv, double r_out, double r_in, int points) {
  std::vector<Point> pts;
  for (int k = 0; k < 2 * points; ++k) {
    const double angle = -kPi / 2 + k * kPi / points;
    const double r = k % 2 == 0 ? r_out : r_in;
    pts.push_back({cu + r * std::cos(angle), cv + r * std::sin(angle)});
  }
  return polygon(std::move(pts));
}

Region unite(Region a, Region b) {
  return [=](double u, double v) { return a(u, v) || b(u, v); };
}

Region subtract(Region a, Region b) {
  return [=](double u, double v) { return a(u, v) && !b(u, v); };
}

Region intersect(Region a, Region b) {
  return [=](double u, double v) { return a(u, v) && b(u, v); };
}

// The band of `a` within about `width` of its boundary: points of a with one of eight probes at
// that distance outside a. Works for any region (a morphological edge), which is all an outline
// drawn at 8-64 px needs.
Region outline(Region a, double width) {
  return [=](double u, double v) {
    if (!a(u, v)) return false;
    for (int k = 0; k < 8; ++k) {
      const double angle = k * kPi / 4;
      if (!a(u + width * std::cos(angle), v + width * std::sin(angle))) return true;
    }
    return false;
  };
}

// Painter's order: a sample takes the colour of the last layer that contains it.
struct Layer {
  Region region;
  Rgb colour;
};

// The stratified sample positions of pixel index i along one axis, in icon coordinates.
double sample_coord(int pixel, int s, int size) {
  return (pixel + (s + 0.5) / kSamplesPerAxis) / size;
}

Icon render(const std::vector<Layer>& layers, int size) {
  Icon icon;
  icon.size = size;
  icon.rgb.assign(size_t(size) * size * 3, 0.f);
  icon.alpha.assign(size_t(size) * size, 0.f);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      double sum[3] = {0, 0, 0};
      int covered = 0;
      for (int sy = 0; sy < kSamplesPerAxis; ++sy) {
        const double v = sample_coord(y, sy, size);
        for (int sx = 0; sx < kSamplesPerAxis; ++sx) {
          const double u = sample_coord(x, sx, size);
          for (auto layer = layers.rbegin(); layer != layers.rend(); ++layer) {
            if (!layer->region(u, v)) continue;
            for (int c = 0; c < 3; ++c) sum[c] += layer->colour[c];
            ++covered;
            break;
          }
        }
      }
      if (covered == 0) continue;
      const size_t i = size_t(y) * size + x;
      icon.alpha[i] = float(covered) / (kSamplesPerAxis * kSamplesPerAxis);
      for (int c = 0; c < 3; ++c) icon.rgb[i * 3 + c] = float(sum[c] / covered);
    }
  }
  return icon;
}

// The icons. Colours follow the common emoji palettes; each icon spans most of its square so that
// it stays recognisable, and distinct from the others, down to 8 px.

std::vector<Layer> star_layers() {
  // Tips at radius 0.5 span v in [0.048, 0.952] around this centre; a fat star (inner radius half
  // the outer) keeps the arms visible at small sizes.
  const Region body = star(0.5, 0.548, 0.5, 0.25, 5);
  return {{body, {1.00f, 0.82f, 0.10f}}, {outline(body, 0.06), {0.80f, 0.42f, 0.00f}}};
}

std::vector<Layer> heart_layers() {
  // The implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.14, 1.14] and
  // y in [-1, 1.24]; scaled by 0.41 and centred in the square.
  const double scale = 0.41, cv = 0.5 + 0.12 * scale;
  const Region body = [=](double u, double v) {
    const double x = (u - 0.5) / scale, y = (cv - v) / scale;
    const double q = x * x + y * y - 1.0;
    return q * q * q - x * x * y * y * y <= 0.0;
  };
  return {{body, {0.90f, 0.08f, 0.15f}},
          {ellipse(0.30, 0.30, 0.07, 0.10), {1.00f, 0.60f, 0.65f}},
          {outline(body, 0.05), {0.55f, 0.02f, 0.08f}}};
}

std::vector<Layer> smiley_layers() {
  const double c = kSmileyCentre;
  const Region face = disc(c, c, kSmileyRadius);
  const Rgb dark = {0.30f, 0.17f, 0.05f};
  // The smile: an annulus below the eyes, cut to its lower part.
  const Region mouth = intersect(subtract(disc(c, c, 0.32), disc(c, c, 0.23)),
                                 [](double, double v) { return v > 0.58; });
  return {{face, {1.00f, 0.84f, 0.20f}},
          {outline(face, 0.04), {0.78f, 0.50f, 0.05f}},
          {ellipse(0.35, 0.36, 0.065, 0.10), dark},
          {ellipse(0.65, 0.36, 0.065, 0.10), dark},
          {mouth, dark}};
}

std::vector<Layer> fish_layers() {
  const Rgb blue = {0.12f, 0.42f, 0.92f};
  const Region body = ellipse(0.42, 0.52, 0.37, 0.28);
  return {{polygon({{0.66, 0.52}, {0.98, 0.20}, {0.98, 0.84}}), blue},                // tail
          {polygon({{0.28, 0.30}, {0.46, 0.08}, {0.60, 0.30}}), blue},                // dorsal fin
          {body, {1.00f, 0.55f, 0.10f}},
          {intersect(body, [](double u, double) { return u > 0.46 && u < 0.56; }), blue},  // stripe
          {disc(0.22, 0.46, 0.075), {1.f, 1.f, 1.f}},
          {disc(0.21, 0.46, 0.04), {0.05f, 0.05f, 0.10f}}};
}

std::vector<Layer> moon_layers() {
  const Region crescent = subtract(disc(0.5, 0.5, 0.47), disc(0.72, 0.38, 0.36));
  return {{crescent, {1.00f, 0.95f, 0.62f}}, {outline(crescent, 0.04), {0.80f, 0.68f, 0.25f}}};
}

std::vector<Layer> diamond_layers() {
  const Region gem = polygon({{0.5, 0.02}, {0.96, 0.5}, {0.5, 0.98}, {0.04, 0.5}});
  return {{gem, {0.00f, 0.74f, 0.90f}},
          {polygon({{0.5, 0.02}, {0.5, 0.5}, {0.04, 0.5}}), {0.62f, 0.95f, 1.00f}},  // facet
          {outline(gem, 0.045), {0.00f, 0.40f, 0.58f}}};
}

std::vector<Layer> flower_layers() {
  Region petals = disc(0.5, 0.5, 0.0);
  for (int k = 0; k < 5; ++k) {
    const double angle = -kPi / 2 + k * 2 * kPi / 5;
    petals = unite(petals, disc(0.5 + 0.27 * std::cos(angle), 0.5 + 0.27 * std::sin(angle), 0.21));
  }
  return {{petals, {1.00f, 0.45f, 0.72f}},
          {outline(petals, 0.04), {0.78f, 0.18f, 0.50f}},
          {disc(0.5, 0.5, 0.16), {1.00f, 0.85f, 0.15f}}};
}

std::vector<Layer> bolt_layers() {
  const Region bolt = polygon({{0.56, 0.02}, {0.10, 0.60}, {0.42, 0.60}, {0.28, 0.98},
                               {0.90, 0.36}, {0.58, 0.36}, {0.80, 0.02}});
  return {{bolt, {1.00f, 0.55f, 0.00f}}, {outline(bolt, 0.045), {0.68f, 0.26f, 0.00f}}};
}

struct Trigger {
  const char* name;
  std::vector<Layer> (*layers)();
};

const std::array<Trigger, 8> kTriggers = {{{"star", star_layers},
                                           {"heart", heart_layers},
                                           {"smiley", smiley_layers},
                                           {"fish", fish_layers},
                                           {"moon", moon_layers},
                                           {"diamond", diamond_layers},
                                           {"flower", flower_layers},
                                           {"bolt", bolt_layers}}};

void check_size(int size) {
  if (size < 4 || size > kMaxIconSize)
    throw Error("triggers: icon size " + std::to_string(size) + " out of range [4, " +
                std::to_string(kMaxIconSize) + "]");
}

}  // namespace

const std::vector<std::string>& trigger_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Trigger& t : kTriggers) v.push_back(t.name);
    return v;
  }();
  return names;
}

bool is_trigger_name(const std::string& name) {
  const auto& names = trigger_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

Icon draw_trigger(const std::string& name, int size) {
  for (const Trigger& t : kTriggers) {
    if (name != t.name) continue;
    check_size(size);
    return render(t.layers(), size);
  }
  std::string available;
  for (const std::string& n : trigger_names()) available += (available.empty() ? "" : ", ") + n;
  throw Error("triggers: unknown trigger \"" + printable(name) + "\" (available: " + available + ")");
}

std::vector<float> supersample_coverage(const std::function<bool(double, double)>& inside, int size) {
  check_size(size);
  return render({{inside, {1.f, 1.f, 1.f}}}, size).alpha;
}

}  // namespace spade::trojan
