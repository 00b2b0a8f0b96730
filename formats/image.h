#pragma once
// 8-bit RGB images: decoding (via stb_image, with size limits checked before any pixel buffer is
// allocated), the preprocessing torchvision applies to PIL images (Resize, CenterCrop, ToTensor,
// Normalize) reproduced bit-exactly, the inverse mapping for overlays, and PNG output.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace spade {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // interleaved RGB8, row-major, width * height * 3 bytes
};

// Images larger than this are refused before decoding so that a hostile header cannot make us
// allocate gigabytes.
constexpr int kMaxImageSide = 32768;
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;  // 268M
// GIFs are held to 16.7M pixels: stb keeps four full-screen buffers (13 bytes a pixel) whatever
// the frames hold, so a 14-byte GIF declaring 254M pixels made it allocate 2.4 GB.
constexpr int64_t kMaxGifPixels = int64_t(1) << 24;

// PNG, JPEG, BMP or GIF; grey and alpha images are converted to RGB (alpha
// is dropped, as PIL's convert("RGB") does). `name` is used in error messages.
Image decode_image(const uint8_t* data, size_t size, const std::string& name);
Image load_image(const std::string& path);

// PIL Image.resize((out_w, out_h), BILINEAR), bit-exact with Pillow's fixed-point resampler.
Image resize_image(const Image& im, int out_w, int out_h);
// torchvision Resize(size) with an int: the shorter side becomes `size`, the longer
// int(size * long / short); unchanged if the shorter side already equals size.
Image resize_shorter_side(const Image& im, int size);
// torchvision CenterCrop((out_h, out_w)), including its zero padding when the crop is larger.
Image center_crop(const Image& im, int out_w, int out_h);

struct Preprocess {
  int resize = 0;  // 0 = skip
  int crop = 0;    // 0 = skip
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};
// resize -> center crop -> pixels / 255 -> (x - mean) / std, as a (1, 3, H, W) float32 tensor. What
// it would allocate is checked against the host memory limit first (engine/memory_estimate.h);
// `name` (the image's file) starts error messages.
Tensor preprocess_image(const Image& im, const Preprocess& p, const std::string& name = "preprocess_image");
// The normalisation of `p` alone, for images already brought to the model's input size (photos
// loaded with its resize and crop, images drawn at that size): resizing them again would zoom in
// and move every pixel away from where a mask drawn on them says it is.
inline Preprocess normalisation_of(const Preprocess& p) {
  Preprocess n = p;
  n.resize = n.crop = 0;
  return n;
}
// Undoes the normalisation of a (3, H, W) or (1, 3, H, W) tensor, rounding and clamping to
// [0, 255] (NaN becomes 0).
Image tensor_to_image(const Tensor& t, const std::array<float, 3>& mean, const std::array<float, 3>& std);

// Encodes PNG in memory and writes it with write_file_atomic.
void save_png(const std::string& path, const Image& im);

}  // namespace spade
