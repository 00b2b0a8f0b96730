#include "formats/image.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "engine/error.h"
#include "engine/memory_estimate.h"
#include "formats/file_io.h"
#include "formats/jpeg_check.h"
#include "formats/png_check.h"

namespace spade {

namespace {

std::string dims_str(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

void check_image(const Image& im, const char* what) {
  if (im.width <= 0 || im.height <= 0 ||
      im.rgb.size() != size_t(im.width) * size_t(im.height) * 3)
    throw Error(std::string(what) + ": invalid image (" + dims_str(im.width, im.height) + " with " +
                std::to_string(im.rgb.size()) + " bytes)");
}

void check_output_size(int w, int h, const char* what) {
  if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide ||
      int64_t(w) * h > kMaxImagePixels)
    throw Error(std::string(what) + ": output size " + dims_str(w, h) + " out of range (1.." +
                std::to_string(kMaxImageSide) + " per side)");
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// An uncompressed BMP must hold its pixels: stb reads missing bytes as zeros, so a 60-byte file
// claiming 190 Mpixel (found by fuzzing) would make it allocate and fill 570 MB.
void check_bmp_size(const uint8_t* data, size_t size, int w, int h, const std::string& name) {
  if (size < 30) return;  // stb refuses these itself
  const uint32_t offset = le32(data + 10), dib = le32(data + 14);
  uint32_t bpp = 0, compression = 0;
  if (dib == 12) {
    bpp = uint32_t(data[24]) | uint32_t(data[25]) << 8;
  } else if (dib >= 40 && size >= 34) {
    bpp = uint32_t(data[28]) | uint32_t(data[29]) << 8;
    compression = le32(data + 30);
  } else {
    return;
  }
  // BI_RGB, BI_BITFIELDS and BI_ALPHABITFIELDS store every pixel; the RLE kinds may be smaller.
  if (compression != 0 && compression != 3 && compression != 6) return;
  const uint64_t row = (uint64_t(bpp) * uint64_t(w) + 31) / 32 * 4;
  const uint64_t needed = uint64_t(offset) + row * uint64_t(h);
  if (needed > size)
    throw Error(name + ": truncated BMP (its header declares " + dims_str(w, h) + " at " + std::to_string(bpp) +
                " bits per pixel, " + std::to_string(needed) + " bytes, but the file has " + std::to_string(size) + ")");
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) throw Error(name + ": empty file, not an image");
  if (size > size_t(INT_MAX)) throw Error(name + ": file too large to be decoded as an image");
  // Only the containers people use for photos and datasets reach stb: its other loaders (PNM, PSD,
  // PIC, HDR, TGA) see little use and less scrutiny, and fuzzing found a 19-byte 16-bit PGM that
  // makes Debian's stb read past the end of its buffer.
  const bool known = is_png(data, size) || is_jpeg(data, size) ||
                     (size >= 2 && data[0] == 'B' && data[1] == 'M') || (size >= 4 && std::memcmp(data, "GIF8", 4) == 0);
  if (!known) throw Error(name + ": not a PNG, JPEG, BMP or GIF image");
  if (is_jpeg(data, size)) check_jpeg_huffman_tables(data, size, name);  // before stb reads any of them
  const int len = static_cast<int>(size);
  int w = 0, h = 0, comp = 0;
  // Header first: a file claiming huge dimensions must be refused before stb allocates for it.
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    throw Error(name + ": cannot decode image (" + stbi_failure_reason() + ")");
  // A negative BMP height is a top-down BMP (rows stored first to last), which PIL and stb's loader
  // decode; stb's header query reports the height as stored.
  const bool bmp = data[0] == 'B' && data[1] == 'M';
  if (bmp && h < 0 && h != INT_MIN) h = -h;
  if (w <= 0 || h <= 0) throw Error(name + ": image has invalid dimensions " + dims_str(w, h));
  if (w > kMaxImageSide || h > kMaxImageSide || int64_t(w) * h > kMaxImagePixels)
    throw Error(name + ": image is " + dims_str(w, h) + ", larger than the limit of " +
                std::to_string(kMaxImageSide) + " pixels per side and " +
                std::to_string(kMaxImagePixels) + " pixels in all");
  if (is_png(data, size)) check_png_stream(data, size, name);
  if (is_jpeg(data, size)) check_jpeg_size(size, w, h, name);
  if (bmp) check_bmp_size(data, size, w, h, name);
  if (data[0] == 'G' && int64_t(w) * h > kMaxGifPixels)
    throw Error(name + ": GIF is " + dims_str(w, h) + ", larger than the limit of " + std::to_string(kMaxGifPixels) +
                " pixels for GIFs");
  // stb holds the decoded components (up to 4 bytes a pixel) beside its RGB output, and we copy that.
  check_host_memory(10.0 * double(w) * double(h), name + ": decoding a " + dims_str(w, h) + " image");
  int dw = 0, dh = 0, dc = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, len, &dw, &dh, &dc, 3), stbi_image_free);
  if (!pixels) throw Error(name + ": cannot decode image (" + stbi_failure_reason() + ")");
  if (dw != w || dh != h)
    throw Error(name + ": decoded size " + dims_str(dw, dh) + " differs from header " + dims_str(w, h));
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.assign(pixels.get(), pixels.get() + size_t(w) * size_t(h) * 3);
  return im;
}

Image load_image(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path);
}

// ---- PIL-exact bilinear resampling -------------------------------------------------------------
// Pillow resamples separably with a triangle filter widened by the downscale factor (so that it
// antialiases), converts the normalised weights to 22-bit fixed point and rounds to uint8 after
// each pass. Every floating-point expression below is evaluated in the same order as Pillow's so
// that the fixed-point weights, and therefore the output bytes, are identical.
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Taps {
  std::vector<int> first;     // first input index of each output sample
  std::vector<int> count;     // number of input samples it reads
  std::vector<size_t> start;  // offset of its weights in `weight`
  std::vector<int32_t> weight;
};

double triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

int32_t to_fixed(double k) {
  const double one = double(1 << kPrecisionBits);
  return k < 0 ? static_cast<int32_t>(-0.5 + k * one) : static_cast<int32_t>(0.5 + k * one);
}

Taps bilinear_taps(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  const double inv_filterscale = 1.0 / filterscale;
  Taps t;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.start.resize(out_size);
  std::vector<double> k;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::max(hi - lo, 0);
    k.assign(n, 0.0);
    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      k[x] = triangle((x + lo - center + 0.5) * inv_filterscale);
      sum += k[x];
    }
    t.first[xx] = lo;
    t.count[xx] = n;
    t.start[xx] = t.weight.size();
    for (int x = 0; x < n; ++x) t.weight.push_back(to_fixed(sum != 0.0 ? k[x] / sum : k[x]));
  }
  return t;
}

uint8_t clip8(int64_t acc) {
  const int64_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

// Filters along x (step = 3 bytes between neighbours) or y (step = a row of bytes); `src` and
// `dst` share the other dimension.
Image resample_width(const Image& src, int out_w) {
  const Taps t = bilinear_taps(src.width, out_w);
  Image dst;
  dst.width = out_w;
  dst.height = src.height;
  dst.rgb.resize(size_t(out_w) * src.height * 3);
  for (int y = 0; y < src.height; ++y) {
    const uint8_t* row = src.rgb.data() + size_t(y) * src.width * 3;
    uint8_t* out = dst.rgb.data() + size_t(y) * out_w * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* w = t.weight.data() + t.start[xx];
      const uint8_t* p = row + size_t(t.first[xx]) * 3;
      int64_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
      for (int i = 0; i < t.count[xx]; ++i, p += 3)
        for (int c = 0; c < 3; ++c) acc[c] += int64_t(p[c]) * w[i];
      for (int c = 0; c < 3; ++c) out[xx * 3 + c] = clip8(acc[c]);
    }
  }
  return dst;
}

Image resample_height(const Image& src, int out_h) {
  const Taps t = bilinear_taps(src.height, out_h);
  const size_t row_bytes = size_t(src.width) * 3;
  Image dst;
  dst.width = src.width;
  dst.height = out_h;
  dst.rgb.resize(row_bytes * out_h);
  std::vector<int64_t> acc(row_bytes);
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(acc.begin(), acc.end(), int64_t(1) << (kPrecisionBits - 1));
    const int32_t* w = t.weight.data() + t.start[yy];
    for (int i = 0; i < t.count[yy]; ++i) {
      const uint8_t* row = src.rgb.data() + size_t(t.first[yy] + i) * row_bytes;
      for (size_t b = 0; b < row_bytes; ++b) acc[b] += int64_t(row[b]) * w[i];
    }
    uint8_t* out = dst.rgb.data() + size_t(yy) * row_bytes;
    for (size_t b = 0; b < row_bytes; ++b) out[b] = clip8(acc[b]);
  }
  return dst;
}

// Python's round(n / 2.0) for a non-negative integer n: halves go to the even neighbour.
int half_round_even(int n) {
  int h = n / 2;
  if (n % 2 == 1 && h % 2 == 1) ++h;
  return h;
}

}  // namespace

Image resize_image(const Image& im, int out_w, int out_h) {
  check_image(im, "resize_image");
  check_output_size(out_w, out_h, "resize_image");
  Image out = out_w != im.width ? resample_width(im, out_w) : im;
  if (out_h != im.height) out = resample_height(out, out_h);
  return out;
}

namespace {

// The size torchvision's Resize(size) gives a width x height image (see resize_shorter_side).
std::pair<int, int> shorter_side_dims(int width, int height, int size, const std::string& what) {
  if (size <= 0 || size > kMaxImageSide) throw Error(what + ": resize size " + std::to_string(size) + " out of range");
  const bool wide = width > height;
  const int64_t shorter = wide ? height : width;
  const int64_t longer = wide ? width : height;
  if (shorter == size) return {width, height};
  // torchvision: int(size * long / short), a true (double) division truncated towards zero.
  const double longer_out = double(int64_t(size) * longer) / double(shorter);
  if (longer_out > kMaxImageSide)
    throw Error(what + ": resizing " + dims_str(width, height) + " to shorter side " + std::to_string(size) +
                " exceeds the size limit of " + std::to_string(kMaxImageSide));
  const int new_long = static_cast<int>(longer_out);
  return wide ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

}  // namespace

Image resize_shorter_side(const Image& im, int size) {
  check_image(im, "resize_shorter_side");
  const auto [w, h] = shorter_side_dims(im.width, im.height, size, "resize_shorter_side");
  if (w == im.width && h == im.height) return im;
  return resize_image(im, w, h);
}

Image center_crop(const Image& im, int out_w, int out_h) {
  check_image(im, "center_crop");
  check_output_size(out_w, out_h, "center_crop");
  // torchvision pads a too-small dimension with zeros (left/top gets the smaller half) and crops
  // the other dimension as usual; a negative offset expresses that padding.
  const int x0 = out_w > im.width ? -((out_w - im.width) / 2) : half_round_even(im.width - out_w);
  const int y0 = out_h > im.height ? -((out_h - im.height) / 2) : half_round_even(im.height - out_h);
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.rgb.assign(size_t(out_w) * out_h * 3, 0);
  const int xs = std::max(0, -x0), xe = std::min(out_w, im.width - x0);
  for (int y = 0; y < out_h; ++y) {
    const int sy = y + y0;
    if (sy < 0 || sy >= im.height || xs >= xe) continue;
    const uint8_t* src = im.rgb.data() + (size_t(sy) * im.width + (xs + x0)) * 3;
    std::copy(src, src + size_t(xe - xs) * 3, out.rgb.data() + (size_t(y) * out_w + xs) * 3);
  }
  return out;
}

Tensor preprocess_image(const Image& im, const Preprocess& p, const std::string& name) {
  check_image(im, name.c_str());
  for (float s : p.std)
    if (!(s != 0.f) || !std::isfinite(s)) throw Error(name + ": preprocessing's std must be finite and non-zero");
  // What the steps below allocate, before any of them: the resize's two passes (width, then height),
  // the crop and the float tensor.
  double need = 0;
  int w = im.width, h = im.height;
  if (p.resize > 0) {
    const auto [rw, rh] = shorter_side_dims(w, h, p.resize, name);
    if (rw != w || rh != h) need += 3.0 * rw * (double(h) + rh);
    w = rw, h = rh;
  }
  if (p.crop > 0) {
    w = h = p.crop;
    need += 3.0 * w * h;
  }
  need += 12.0 * w * h;
  check_host_memory(need, name + ": preprocessing a " + dims_str(im.width, im.height) + " image" +
                              (p.resize > 0 ? " (resize " + std::to_string(p.resize) + ")" : std::string()));
  Image work = p.resize > 0 ? resize_shorter_side(im, p.resize) : im;
  if (p.crop > 0) work = center_crop(work, p.crop, p.crop);
  const int64_t hw = int64_t(work.width) * work.height;
  Tensor t = Tensor::empty({1, 3, work.height, work.width});
  float* dst = t.data();
  // Same float32 operations as ToTensor (div 255) followed by Normalize (sub mean, div std).
  for (int c = 0; c < 3; ++c)
    for (int64_t i = 0; i < hw; ++i)
      dst[c * hw + i] = (float(work.rgb[i * 3 + c]) / 255.f - p.mean[c]) / p.std[c];
  return t;
}

Image tensor_to_image(const Tensor& t, const std::array<float, 3>& mean, const std::array<float, 3>& std) {
  const Shape& s = t.shape();
  const bool ok = (s.size() == 3 && s[0] == 3) || (s.size() == 4 && s[0] == 1 && s[1] == 3);
  if (!t.defined() || !ok)
    throw Error("tensor_to_image: expected a (3, H, W) or (1, 3, H, W) tensor, got " + shape_str(s));
  const int64_t h = s[s.size() - 2], w = s[s.size() - 1];
  check_output_size(static_cast<int>(std::min<int64_t>(w, INT_MAX)),
                    static_cast<int>(std::min<int64_t>(h, INT_MAX)), "tensor_to_image");
  Image im;
  im.width = static_cast<int>(w);
  im.height = static_cast<int>(h);
  im.rgb.resize(size_t(w * h * 3));
  const float* src = t.data();
  for (int c = 0; c < 3; ++c)
    for (int64_t i = 0; i < w * h; ++i) {
      const float v = (src[c * w * h + i] * std[c] + mean[c]) * 255.f;
      im.rgb[i * 3 + c] = !(v >= 0.f) ? 0 : v >= 255.f ? 255 : static_cast<uint8_t>(std::lround(v));
    }
  return im;
}

void save_png(const std::string& path, const Image& im) {
  check_image(im, path.c_str());
  std::vector<uint8_t> png;
  auto append = [](void* ctx, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(ctx);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    out->insert(out->end(), p, p + size);
  };
  if (!stbi_write_png_to_func(append, &png, im.width, im.height, 3, im.rgb.data(), im.width * 3))
    throw Error(path + ": PNG encoding failed");
  write_file_atomic(path, png.data(), png.size());
}

}  // namespace spade
