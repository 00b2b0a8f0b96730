#include "interpret/spade/augment.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "engine/error.h"
#include "interpret/sample_rng.h"

namespace spade::interp {
namespace {

// Python's int(round(x)) for the crop sides: round half to even (nearbyint in the default mode).
// Returns -1 for values that cannot be a side (negative, NaN, or far beyond any image size).
int round_side(double x) {
  const double r = std::nearbyint(x);
  return r >= 0.0 && r <= double(kMaxImageSide) * 4 ? static_cast<int>(r) : -1;
}

struct CropBox {
  int top, left, height, width;
};

// torchvision RandomResizedCrop.get_params: ten tries of a random area fraction and log-uniform
// aspect ratio, then the centre crop of the closest allowed aspect ratio.
SPADE_NO_FP_CONTRACT CropBox draw_crop(const AugmentConfig& c, int W, int H, SampleRng& rng) {
  const double area = double(H) * double(W);
  const double log_rmin = std::log(c.ratio_min), log_rmax = std::log(c.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(c.scale_min, c.scale_max);
    const double aspect = std::exp(rng.uniform(log_rmin, log_rmax));
    const int w = round_side(std::sqrt(target_area * aspect));
    const int h = round_side(std::sqrt(target_area / aspect));
    if (0 < w && w <= W && 0 < h && h <= H) {
      const int top = rng.randint_inclusive(H - h);
      const int left = rng.randint_inclusive(W - w);
      return {top, left, h, w};
    }
  }
  const double in_ratio = double(W) / double(H);
  int w = W, h = H;
  if (in_ratio < c.ratio_min) {
    h = round_side(w / c.ratio_min);
  } else if (in_ratio > c.ratio_max) {
    w = round_side(h * c.ratio_max);
  }
  // The clamps never act for sane ratios; they keep an extreme ratio range (torchvision would
  // produce a 0-pixel crop there) from yielding an empty box.
  h = std::clamp(h, 1, H);
  w = std::clamp(w, 1, W);
  return {(H - h) / 2, (W - w) / 2, h, w};
}

void check_config(const AugmentConfig& c, const char* what) {
  const auto fail = [&](const std::string& msg) { throw Error(std::string(what) + ": " + msg); };
  if (c.size <= 0 || c.size > kMaxImageSide)
    fail("output size must be in [1, " + std::to_string(kMaxImageSide) + "], got " + std::to_string(c.size));
  if (!(c.scale_min >= 0.0 && c.scale_min <= c.scale_max && std::isfinite(c.scale_max)))
    fail("scale range must satisfy 0 <= scale_min <= scale_max (finite)");
  if (!(c.ratio_min > 0.0 && c.ratio_min <= c.ratio_max && std::isfinite(c.ratio_max)))
    fail("ratio range must satisfy 0 < ratio_min <= ratio_max (finite)");
  if (!(c.flip_p >= 0.0 && c.flip_p <= 1.0)) fail("flip probability must be in [0, 1]");
  if (!(c.brightness >= 0.0 && std::isfinite(c.brightness))) fail("brightness must be finite and >= 0");
  if (!(c.hue >= 0.0 && c.hue <= 0.5)) fail("hue must be in [0, 0.5]");
}

void check_source(const Image& src, const char* what) {
  if (src.width <= 0 || src.height <= 0 || src.rgb.size() != size_t(src.width) * size_t(src.height) * 3)
    throw Error(std::string(what) + ": empty or inconsistent source image (" + std::to_string(src.width) + "x" +
                std::to_string(src.height) + " with " + std::to_string(src.rgb.size()) + " bytes)");
}

// ---- Pixel operations (PIL's 8-bit code paths) ------------------------------------------------

Image crop(const Image& src, int top, int left, int height, int width) {
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    const uint8_t* row = src.rgb.data() + (size_t(top + y) * src.width + left) * 3;
    std::copy(row, row + size_t(width) * 3, out.rgb.data() + size_t(y) * width * 3);
  }
  return out;
}

void flip_horizontal(Image& im) {
  for (int y = 0; y < im.height; ++y) {
    uint8_t* row = im.rgb.data() + size_t(y) * im.width * 3;
    for (int a = 0, b = im.width - 1; a < b; ++a, --b)
      for (int ch = 0; ch < 3; ++ch) std::swap(row[a * 3 + ch], row[b * 3 + ch]);
  }
}

// ImageEnhance.Brightness(img).enhance(f) is Image.blend(black, img, f), i.e. libImaging's
// ImagingBlend with in1 = 0 and alpha passed as a C float: 0 and 1 are copies, [0, 1] truncates
// alpha * v, anything else truncates with clipping to [0, 255].
void adjust_brightness(std::vector<uint8_t>& rgb, double factor) {
  const float alpha = static_cast<float>(factor);
  if (alpha == 1.0f) return;
  if (alpha == 0.0f) {
    std::fill(rgb.begin(), rgb.end(), uint8_t(0));
    return;
  }
  uint8_t lut[256];
  const bool interpolate = alpha >= 0.0f && alpha <= 1.0f;
  for (int v = 0; v < 256; ++v) {
    const float temp = alpha * static_cast<float>(v);  // (int)in1 + alpha * (in2 - in1) with in1 = 0
    if (interpolate)
      lut[v] = static_cast<uint8_t>(temp);
    else
      lut[v] = temp <= 0.0f ? 0 : temp >= 255.0f ? 255 : static_cast<uint8_t>(temp);
  }
  for (uint8_t& b : rgb) b = lut[b];
}

inline uint8_t clip8(int v) { return v <= 0 ? 0 : v >= 255 ? 255 : static_cast<uint8_t>(v); }

// libImaging/Convert.c rgb2hsv_row, type for type: float quotients, double sums (its 2.0 and 6.0
// literals are doubles), truncation to int.
SPADE_NO_FP_CONTRACT void rgb_to_hsv(const uint8_t* in, uint8_t* out) {
  const uint8_t r = in[0], g = in[1], b = in[2];
  const uint8_t maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
  out[2] = maxc;
  if (minc == maxc) {
    out[0] = out[1] = 0;
    return;
  }
  const float cr = static_cast<float>(maxc - minc);
  const float s = cr / static_cast<float>(maxc);
  const float rc = static_cast<float>(maxc - r) / cr;
  const float gc = static_cast<float>(maxc - g) / cr;
  const float bc = static_cast<float>(maxc - b) / cr;
  float h;
  if (r == maxc)
    h = bc - gc;
  else if (g == maxc)
    h = static_cast<float>(2.0 + rc - bc);
  else
    h = static_cast<float>(4.0 + gc - rc);
  h = static_cast<float>(std::fmod(h / 6.0 + 1.0, 1.0));
  out[0] = clip8(static_cast<int>(h * 255.0));
  out[1] = clip8(static_cast<int>(s * 255.0));
}

// libImaging/Convert.c hsv2rgb, type for type: note fs * f is a float product while
// fs * (1.0 - f) is a double one, and round() rounds halves away from zero.
SPADE_NO_FP_CONTRACT void hsv_to_rgb(const uint8_t* in, uint8_t* out) {
  const uint8_t h = in[0], s = in[1], v = in[2];
  if (s == 0) {
    out[0] = out[1] = out[2] = v;
    return;
  }
  const double h6 = static_cast<float>(h) * 6.0 / 255.0;
  const int i = static_cast<int>(std::floor(h6));  // 0..6; 6 (h = 255) behaves as 0
  const float f = static_cast<float>(h6 - static_cast<float>(i));
  const float fs = static_cast<float>(static_cast<float>(s) / 255.0);
  const double fv = static_cast<float>(v);
  const float fsf = fs * f;
  const double fs_1mf = fs * (1.0 - f);  // kept apart from the subtraction below: no FMA
  const uint8_t p = clip8(static_cast<int>(std::round(fv * (1.0 - fs))));
  const uint8_t q = clip8(static_cast<int>(std::round(fv * (1.0 - fsf))));
  const uint8_t t = clip8(static_cast<int>(std::round(fv * (1.0 - fs_1mf))));
  switch (i % 6) {
    case 0: out[0] = v, out[1] = t, out[2] = p; break;
    case 1: out[0] = q, out[1] = v, out[2] = p; break;
    case 2: out[0] = p, out[1] = v, out[2] = t; break;
    case 3: out[0] = p, out[1] = q, out[2] = v; break;
    case 4: out[0] = t, out[1] = p, out[2] = v; break;
    default: out[0] = v, out[1] = p, out[2] = q; break;
  }
}

// What np.uint8(hue_factor * 255) gives on x86-64: the double is truncated toward zero to an int
// and the low byte kept, so negative shifts wrap (np.uint8(-25.5) == 231).
uint8_t hue_shift_byte(double hue_factor) {
  const double x = hue_factor * 255.0;
  return static_cast<uint8_t>(static_cast<uint32_t>(static_cast<int32_t>(x)) & 0xffu);
}

// torchvision F_pil.adjust_hue: RGB -> HSV (8-bit), H += shift with uint8 wrap-around, HSV -> RGB.
void adjust_hue(std::vector<uint8_t>& rgb, double hue_factor) {
  const uint8_t shift = hue_shift_byte(hue_factor);
  for (size_t i = 0; i + 2 < rgb.size(); i += 3) {
    uint8_t hsv[3];
    rgb_to_hsv(&rgb[i], hsv);
    hsv[0] = static_cast<uint8_t>(hsv[0] + shift);
    hsv_to_rgb(hsv, &rgb[i]);
  }
}

}  // namespace

SPADE_NO_FP_CONTRACT AugmentParams draw_augment(const AugmentConfig& c, int width, int height, uint64_t seed,
                                                 int64_t index) {
  check_config(c, "draw_augment");
  if (width <= 0 || height <= 0)
    throw Error("draw_augment: source size must be positive, got " + std::to_string(width) + "x" +
                std::to_string(height));
  SampleRng rng(seed, index);
  AugmentParams p;
  const CropBox box = draw_crop(c, width, height, rng);
  p.top = box.top;
  p.left = box.left;
  p.height = box.height;
  p.width = box.width;
  p.flip = rng.next_unit() < c.flip_p;
  // ColorJitter: a random order of its transforms (only brightness and hue are active, so the
  // order is one fair bit), then a factor for each; a zero range disables the transform.
  p.hue_first = rng.next_unit() < 0.5;
  const double b = rng.uniform(std::max(0.0, 1.0 - c.brightness), 1.0 + c.brightness);
  const double h = rng.uniform(-c.hue, c.hue);
  p.brightness = c.brightness > 0.0 ? b : 1.0;
  p.hue = c.hue > 0.0 ? h : 0.0;
  p.apply_hue = c.hue > 0.0;
  return p;
}

Image apply_augment(const Image& src, const AugmentParams& p, int size) {
  check_source(src, "apply_augment");
  if (size <= 0 || size > kMaxImageSide)
    throw Error("apply_augment: output size must be in [1, " + std::to_string(kMaxImageSide) + "], got " +
                std::to_string(size));
  if (p.height <= 0 || p.width <= 0 || p.top < 0 || p.left < 0 || p.height > src.height - p.top ||
      p.width > src.width - p.left)
    throw Error("apply_augment: crop box (top " + std::to_string(p.top) + ", left " + std::to_string(p.left) +
                ", " + std::to_string(p.width) + "x" + std::to_string(p.height) + ") is not inside the " +
                std::to_string(src.width) + "x" + std::to_string(src.height) + " image");
  if (!(p.brightness >= 0.0 && std::isfinite(p.brightness)))
    throw Error("apply_augment: brightness factor must be finite and >= 0");
  if (!(p.hue >= -0.5 && p.hue <= 0.5)) throw Error("apply_augment: hue factor must be in [-0.5, 0.5]");

  Image out = resize_image(crop(src, p.top, p.left, p.height, p.width), size, size);
  if (p.flip) flip_horizontal(out);
  if (p.hue_first && p.apply_hue) adjust_hue(out.rgb, p.hue);
  adjust_brightness(out.rgb, p.brightness);
  if (!p.hue_first && p.apply_hue) adjust_hue(out.rgb, p.hue);
  return out;
}

Tensor augment_batch(const Image& src, const AugmentConfig& c, uint64_t seed, int64_t first, int64_t count) {
  check_config(c, "augment_batch");
  check_source(src, "augment_batch");
  if (first < 0 || count < 0)
    throw Error("augment_batch: first and count must be >= 0, got " + std::to_string(first) + " and " +
                std::to_string(count));
  for (float s : c.std)
    if (!(s != 0.f) || !std::isfinite(s)) throw Error("augment_batch: std must be finite and non-zero");

  const int64_t hw = int64_t(c.size) * c.size;
  Tensor out = Tensor::empty({count, 3, c.size, c.size});
  float* dst = out.data();
  std::exception_ptr failure;
  // Each sample depends only on (seed, first + n), so the split over threads cannot change results.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t n = 0; n < count; ++n) {
    try {
      const AugmentParams p = draw_augment(c, src.width, src.height, seed, first + n);
      const Image im = apply_augment(src, p, c.size);
      float* sample = dst + n * 3 * hw;
      // ToTensor (float32 divide by 255) then Normalize (subtract mean, divide by std).
      for (int ch = 0; ch < 3; ++ch)
        for (int64_t i = 0; i < hw; ++i)
          sample[ch * hw + i] = (float(im.rgb[i * 3 + ch]) / 255.f - c.mean[ch]) / c.std[ch];
    } catch (...) {
#pragma omp critical(spade_augment_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace spade::interp
