// The SPADE augmentations on the GPU, byte for byte the CPU path (interpret/spade/augment.cpp
// and the PIL resampler in formats/image.cpp):
//   1. build_taps: Pillow's bilinear tap tables, one per distinct crop side that needs
//      resampling, in the same double arithmetic as bilinear_taps (sides equal to the output
//      size are not resampled, as resize_image skips them);
//   2. resample_rows: the horizontal pass of every crop into an 8-bit scratch image, as Pillow
//      rounds after each pass;
//   3. finish: the vertical pass, the flip, the colour jitter and ToTensor/Normalize.
// Every floating-point operation that must round as on the CPU is an explicit _rn intrinsic, so
// neither FMA contraction nor the build's flags can change a result.
#include "kernels/cuda/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "formats/image.h"
#include "kernels/cuda/cuda_check.h"

namespace spade::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocksX = 4096;
constexpr int kPrecisionBits = 22;  // Pillow's fixed point, as in formats/image.cpp
// Samples go through the kernels in chunks whose horizontally resampled crops fit in this much
// scratch memory (a chunk always takes at least one sample), and at most gridDim.y samples.
constexpr size_t kScratchBudget = size_t(256) << 20;
constexpr int64_t kMaxChunkSamples = 65535;

// One sample as the kernels see it.
struct DeviceSample {
  int top, left, height, width;
  int flip;
  float alpha;      // brightness factor, as the C float ImagingBlend receives it
  int hue_mode;     // 0: no hue, 1: hue before brightness, 2: hue after
  int hue_shift;    // the byte added to H (np.uint8(hue * 255))
  int x_table;      // tap table of the width, -1 when width == size (no horizontal pass)
  int y_table;      // tap table of the height, -1 when height == size (no vertical pass)
  int64_t scratch;  // byte offset of its horizontally resampled rows in the chunk's scratch
};

struct TapTable {
  int length;         // input side
  int max_taps;       // weights per output coordinate (stride; the count is at most this)
  int64_t weights;    // offset of the table's weights; coordinate o starts at weights + o * max_taps
};

// Pillow reads at most floor(2 * support + 1) inputs per output (the window is
// [center - support, center + support] widened by half a sample at each end and truncated);
// one more absorbs any rounding in the window's ends.
int max_taps(int length, int size) {
  const double support = std::max(double(length) / size, 1.0);
  return static_cast<int>(2.0 * support) + 3;
}

// ---- Tap tables (formats/image.cpp bilinear_taps, operation for operation) -----------------------

__device__ double triangle_weight(int x, double center, double inv_filterscale) {
  double t = __dmul_rn(__dadd_rn(__dsub_rn(double(x), center), 0.5), inv_filterscale);
  if (t < 0.0) t = -t;
  return t < 1.0 ? __dsub_rn(1.0, t) : 0.0;
}

__device__ int32_t to_fixed(double k) {
  const double one = double(1 << kPrecisionBits);
  return k < 0 ? static_cast<int32_t>(__dadd_rn(-0.5, __dmul_rn(k, one)))
               : static_cast<int32_t>(__dadd_rn(0.5, __dmul_rn(k, one)));
}

__global__ void build_taps(const TapTable* tables, int num_tables, int size, int* first, int* count,
                           int32_t* weights) {
  const int64_t total = int64_t(num_tables) * size;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const TapTable t = tables[i / size];
    const int xx = static_cast<int>(i % size);
    const double scale = __ddiv_rn(double(t.length), double(size));
    const double support = scale < 1.0 ? 1.0 : scale;  // filterscale, and support = 1.0 * filterscale
    const double inv_filterscale = __ddiv_rn(1.0, support);
    const double center = __dmul_rn(__dadd_rn(double(xx), 0.5), scale);
    const int lo = max(static_cast<int>(__dadd_rn(__dsub_rn(center, support), 0.5)), 0);
    const int hi = min(static_cast<int>(__dadd_rn(__dadd_rn(center, support), 0.5)), t.length);
    const int n = max(hi - lo, 0);
    double sum = 0.0;
    for (int x = 0; x < n; ++x) sum = __dadd_rn(sum, triangle_weight(x + lo, center, inv_filterscale));
    int32_t* w = weights + t.weights + int64_t(xx) * t.max_taps;
    for (int x = 0; x < n; ++x) {
      const double k = triangle_weight(x + lo, center, inv_filterscale);
      w[x] = to_fixed(sum != 0.0 ? __ddiv_rn(k, sum) : k);
    }
    first[i] = lo;
    count[i] = n;
  }
}

// ---- Resampling ------------------------------------------------------------------------------------

// The weights are >= 0 and sum to at most 2^22 plus half a unit per tap, so 255 times their sum
// plus the rounding term stays below 2^31: int32 accumulates exactly what the CPU's int64 does.
__device__ uint8_t fixed_to_byte(int32_t acc) {
  return static_cast<uint8_t>(min(max(acc >> kPrecisionBits, 0), 255));
}

struct Taps {
  const int* first;
  const int* count;
  const int32_t* weights;
  const TapTable* tables;
  int size;
};

// Pillow's horizontal pass: crop row y, output column xx, into interleaved RGB scratch rows of
// `size` pixels. gridDim.y runs over the chunk's samples.
__global__ void resample_rows(const uint8_t* src, int src_width, const DeviceSample* samples, Taps taps,
                              uint8_t* scratch) {
  const DeviceSample s = samples[blockIdx.y];
  if (s.x_table < 0) return;
  const int size = taps.size;
  const TapTable table = taps.tables[s.x_table];
  const int64_t total = int64_t(s.height) * size;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(i / size), xx = static_cast<int>(i % size);
    const int64_t tap = int64_t(s.x_table) * size + xx;
    const int lo = taps.first[tap], n = taps.count[tap];
    const int32_t* w = taps.weights + table.weights + int64_t(xx) * table.max_taps;
    const uint8_t* p = src + ((int64_t(s.top) + y) * src_width + s.left + lo) * 3;
    int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
    for (int k = 0; k < n; ++k, p += 3)
      for (int c = 0; c < 3; ++c) acc[c] += int32_t(p[c]) * w[k];
    uint8_t* out = scratch + s.scratch + i * 3;
    for (int c = 0; c < 3; ++c) out[c] = fixed_to_byte(acc[c]);
  }
}

// ---- Colour (interpret/spade/augment.cpp, type for type) -----------------------------------------

// Image.blend(black, img, alpha): this formula also gives the CPU's shortcuts for alpha 0 and 1.
__device__ void adjust_brightness(uint8_t* rgb, float alpha) {
  const bool interpolate = alpha >= 0.0f && alpha <= 1.0f;
  for (int c = 0; c < 3; ++c) {
    const float temp = __fmul_rn(alpha, float(rgb[c]));
    rgb[c] = interpolate ? static_cast<uint8_t>(__float2int_rz(temp))
             : temp <= 0.0f ? 0 : temp >= 255.0f ? 255 : static_cast<uint8_t>(__float2int_rz(temp));
  }
}

__device__ uint8_t clip8(int v) { return static_cast<uint8_t>(min(max(v, 0), 255)); }

__device__ void rgb_to_hsv(const uint8_t* in, uint8_t* out) {
  const int r = in[0], g = in[1], b = in[2];
  const int maxc = max(r, max(g, b)), minc = min(r, min(g, b));
  out[2] = static_cast<uint8_t>(maxc);
  if (minc == maxc) {
    out[0] = out[1] = 0;
    return;
  }
  const float cr = float(maxc - minc);
  const float s = __fdiv_rn(cr, float(maxc));
  const float rc = __fdiv_rn(float(maxc - r), cr);
  const float gc = __fdiv_rn(float(maxc - g), cr);
  const float bc = __fdiv_rn(float(maxc - b), cr);
  float h;
  if (r == maxc)
    h = __fsub_rn(bc, gc);
  else if (g == maxc)
    h = __double2float_rn(__dsub_rn(__dadd_rn(2.0, double(rc)), double(bc)));
  else
    h = __double2float_rn(__dsub_rn(__dadd_rn(4.0, double(gc)), double(rc)));
  h = __double2float_rn(fmod(__dadd_rn(__ddiv_rn(double(h), 6.0), 1.0), 1.0));  // fmod is exact
  out[0] = clip8(__double2int_rz(__dmul_rn(double(h), 255.0)));
  out[1] = clip8(__double2int_rz(__dmul_rn(double(s), 255.0)));
}

__device__ uint8_t round_to_byte(double x) { return clip8(static_cast<int>(round(x))); }  // halves away from 0

__device__ void hsv_to_rgb(const uint8_t* in, uint8_t* out) {
  const uint8_t h = in[0], s = in[1], v = in[2];
  if (s == 0) {
    out[0] = out[1] = out[2] = v;
    return;
  }
  const double h6 = __ddiv_rn(__dmul_rn(double(h), 6.0), 255.0);
  const int i = static_cast<int>(floor(h6));
  const float f = __double2float_rn(__dsub_rn(h6, double(i)));
  const float fs = __double2float_rn(__ddiv_rn(double(s), 255.0));
  const double fv = double(v);
  const float fsf = __fmul_rn(fs, f);
  const double fs_1mf = __dmul_rn(double(fs), __dsub_rn(1.0, double(f)));
  const uint8_t p = round_to_byte(__dmul_rn(fv, __dsub_rn(1.0, double(fs))));
  const uint8_t q = round_to_byte(__dmul_rn(fv, __dsub_rn(1.0, double(fsf))));
  const uint8_t t = round_to_byte(__dmul_rn(fv, __dsub_rn(1.0, fs_1mf)));
  switch (i % 6) {
    case 0: out[0] = v, out[1] = t, out[2] = p; break;
    case 1: out[0] = q, out[1] = v, out[2] = p; break;
    case 2: out[0] = p, out[1] = v, out[2] = t; break;
    case 3: out[0] = p, out[1] = q, out[2] = v; break;
    case 4: out[0] = t, out[1] = p, out[2] = v; break;
    default: out[0] = v, out[1] = p, out[2] = q; break;
  }
}

__device__ void adjust_hue(uint8_t* rgb, int shift) {
  uint8_t hsv[3];
  rgb_to_hsv(rgb, hsv);
  hsv[0] = static_cast<uint8_t>(hsv[0] + shift);
  hsv_to_rgb(hsv, rgb);
}

// Pillow's vertical pass (or the rows as they are when the height is already `size`), then the
// flip, the colour jitter and the normalisation LUT (norm[c * 256 + v], built on the host with
// the CPU's float expression). out: the chunk's (samples, 3, size, size) floats.
__global__ void finish(const uint8_t* src, int src_width, const DeviceSample* samples, Taps taps,
                       const uint8_t* scratch, const float* norm, float* out) {
  const DeviceSample s = samples[blockIdx.y];
  const int size = taps.size;
  // The horizontally resampled crop: scratch rows, or the source crop itself when its width is
  // already `size`.
  const uint8_t* rows = s.x_table >= 0 ? scratch + s.scratch : src + (int64_t(s.top) * src_width + s.left) * 3;
  const int64_t row_bytes = s.x_table >= 0 ? int64_t(size) * 3 : int64_t(src_width) * 3;
  const int64_t plane = int64_t(size) * size;
  float* sample_out = out + int64_t(blockIdx.y) * 3 * plane;
  const TapTable y_table = s.y_table >= 0 ? taps.tables[s.y_table] : TapTable{};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < plane; i += int64_t(gridDim.x) * blockDim.x) {
    const int yy = static_cast<int>(i / size), xx = static_cast<int>(i % size);
    const int64_t col = int64_t(s.flip ? size - 1 - xx : xx) * 3;
    uint8_t rgb[3];
    if (s.y_table < 0) {
      for (int c = 0; c < 3; ++c) rgb[c] = rows[int64_t(yy) * row_bytes + col + c];
    } else {
      const int64_t tap = int64_t(s.y_table) * size + yy;
      const int lo = taps.first[tap], n = taps.count[tap];
      const int32_t* w = taps.weights + y_table.weights + int64_t(yy) * y_table.max_taps;
      const uint8_t* p = rows + int64_t(lo) * row_bytes + col;
      int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
      for (int k = 0; k < n; ++k, p += row_bytes)
        for (int c = 0; c < 3; ++c) acc[c] += int32_t(p[c]) * w[k];
      for (int c = 0; c < 3; ++c) rgb[c] = fixed_to_byte(acc[c]);
    }
    if (s.hue_mode == 1) adjust_hue(rgb, s.hue_shift);
    adjust_brightness(rgb, s.alpha);
    if (s.hue_mode == 2) adjust_hue(rgb, s.hue_shift);
    for (int c = 0; c < 3; ++c) sample_out[c * plane + i] = norm[c * 256 + rgb[c]];
  }
}

// ---- Host side -------------------------------------------------------------------------------------

// What np.uint8(hue_factor * 255) gives on x86-64 (interpret/spade/augment.cpp hue_shift_byte):
// truncation toward zero, then the low byte, so negative shifts wrap.
int hue_shift_byte(double hue_factor) {
  const double x = hue_factor * 255.0;
  return static_cast<int>(static_cast<uint32_t>(static_cast<int32_t>(x)) & 0xffu);
}

void check_arguments(int width, int height, const AugmentSample* samples, int64_t count, int size,
                     const float std[3]) {
  const auto fail = [](const std::string& msg) { throw Error("cuda::augment_batch: " + msg); };
  if (width <= 0 || height <= 0)
    fail("empty source image (" + std::to_string(width) + "x" + std::to_string(height) + ")");
  // apply_augment's limit, and resize_image's on the pixel count.
  if (size <= 0 || size > kMaxImageSide || int64_t(size) * size > kMaxImagePixels)
    fail("output size must be in [1, " + std::to_string(kMaxImageSide) + "] with at most " +
         std::to_string(kMaxImagePixels) + " pixels, got " + std::to_string(size));
  if (count < 0) fail("count must be >= 0, got " + std::to_string(count));
  for (int c = 0; c < 3; ++c)
    if (!(std[c] != 0.f) || !std::isfinite(std[c])) fail("std must be finite and non-zero");
  for (int64_t n = 0; n < count; ++n) {
    const AugmentSample& p = samples[n];
    if (p.height <= 0 || p.width <= 0 || p.top < 0 || p.left < 0 || p.height > height - p.top ||
        p.width > width - p.left)
      fail("sample " + std::to_string(n) + ": crop box (top " + std::to_string(p.top) + ", left " +
           std::to_string(p.left) + ", " + std::to_string(p.width) + "x" + std::to_string(p.height) +
           ") is not inside the " + std::to_string(width) + "x" + std::to_string(height) + " image");
    if (!(p.brightness >= 0.0 && std::isfinite(p.brightness)))
      fail("sample " + std::to_string(n) + ": brightness factor must be finite and >= 0");
    if (!(p.hue >= -0.5 && p.hue <= 0.5))
      fail("sample " + std::to_string(n) + ": hue factor must be in [-0.5, 0.5]");
  }
}

// The small tables a batch needs, gathered into one host buffer so that one copy uploads them.
class Upload {
 public:
  template <typename T>
  size_t add(const T* data, size_t n) {
    const size_t offset = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(offset + n * sizeof(T));
    if (n > 0) std::memcpy(bytes_.data() + offset, data, n * sizeof(T));
    return offset;
  }
  DeviceBuffer to_device(const CudaContext& ctx) const {
    DeviceBuffer buffer = ctx.allocate(bytes_.size());
    // From pageable memory the copy has left bytes_ by the time it returns.
    SPADE_CUDA_CHECK(cudaMemcpyAsync(buffer.data(), bytes_.data(), bytes_.size(), cudaMemcpyHostToDevice,
                                     ctx.stream()),
                     "uploading " + format_bytes(bytes_.size()) + " of augmentation parameters");
    return buffer;
  }

 private:
  std::vector<unsigned char> bytes_;
};

int blocks_for(int64_t work) {
  return static_cast<int>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, kMaxBlocksX));
}

}  // namespace

void augment_batch(CudaContext& ctx, const uint8_t* src, int width, int height, const AugmentSample* samples,
                   int64_t count, int size, const float mean[3], const float std[3], float* out) {
  check_arguments(width, height, samples, count, size, std);
  if (count == 0) return;

  // One tap table per distinct crop side that differs from `size` (both passes resample to
  // `size`, so a width and a height of the same length share a table).
  std::vector<int> table_of_length(size_t(std::max(width, height)) + 1, -1);
  std::vector<TapTable> tables;
  int64_t num_weights = 0;
  const auto table_for = [&](int length) {
    if (length == size) return -1;
    int& index = table_of_length[size_t(length)];
    if (index < 0) {
      index = static_cast<int>(tables.size());
      const int taps = max_taps(length, size);
      tables.push_back({length, taps, num_weights});
      num_weights += int64_t(taps) * size;
    }
    return index;
  };

  std::vector<DeviceSample> host_samples(static_cast<size_t>(count));
  struct Chunk {
    int64_t begin, end;
  };
  std::vector<Chunk> chunks;
  size_t chunk_scratch = 0, max_scratch = 0;
  for (int64_t n = 0; n < count; ++n) {
    const AugmentSample& p = samples[n];
    DeviceSample& d = host_samples[size_t(n)];
    d.top = p.top;
    d.left = p.left;
    d.height = p.height;
    d.width = p.width;
    d.flip = p.flip != 0;
    d.alpha = static_cast<float>(p.brightness);
    d.hue_mode = p.apply_hue ? (p.hue_first ? 1 : 2) : 0;
    d.hue_shift = hue_shift_byte(p.hue);
    d.x_table = table_for(p.width);
    d.y_table = table_for(p.height);
    const size_t bytes = d.x_table >= 0 ? size_t(p.height) * size_t(size) * 3 : 0;
    const bool full = !chunks.empty() && (n - chunks.back().begin >= kMaxChunkSamples ||
                                          (chunk_scratch > 0 && chunk_scratch + bytes > kScratchBudget));
    if (chunks.empty() || full) {
      chunks.push_back({n, n});
      chunk_scratch = 0;
    }
    d.scratch = static_cast<int64_t>(chunk_scratch);
    chunk_scratch += bytes;
    chunks.back().end = n + 1;
    max_scratch = std::max(max_scratch, chunk_scratch);
  }

  std::vector<float> norm(3 * 256);
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) norm[size_t(c) * 256 + size_t(v)] = (float(v) / 255.f - mean[c]) / std[c];

  Upload upload;
  const size_t samples_at = upload.add(host_samples.data(), host_samples.size());
  const size_t tables_at = upload.add(tables.data(), tables.size());
  const size_t norm_at = upload.add(norm.data(), norm.size());
  const DeviceBuffer params = upload.to_device(ctx);
  const auto* params_bytes = params.data_as<const unsigned char>();
  const auto* dev_samples = reinterpret_cast<const DeviceSample*>(params_bytes + samples_at);
  const auto* dev_tables = reinterpret_cast<const TapTable*>(params_bytes + tables_at);
  const auto* dev_norm = reinterpret_cast<const float*>(params_bytes + norm_at);

  const int64_t coords = int64_t(tables.size()) * size;
  const DeviceBuffer firsts = ctx.allocate(size_t(coords) * sizeof(int));
  const DeviceBuffer counts = ctx.allocate(size_t(coords) * sizeof(int));
  const DeviceBuffer weights = ctx.allocate(size_t(num_weights) * sizeof(int32_t));
  const Taps taps{firsts.data_as<const int>(), counts.data_as<const int>(), weights.data_as<const int32_t>(),
                  dev_tables, size};
  if (!tables.empty()) {
    build_taps<<<blocks_for(coords), kThreads, 0, ctx.stream()>>>(
        dev_tables, static_cast<int>(tables.size()), size, firsts.data_as<int>(), counts.data_as<int>(),
        weights.data_as<int32_t>());
    SPADE_CUDA_CHECK_LAUNCH("building the resampling taps of the augmentations");
  }

  const DeviceBuffer scratch = ctx.allocate(max_scratch);
  const int64_t plane = int64_t(size) * size;
  for (const Chunk& chunk : chunks) {
    const unsigned chunk_samples = static_cast<unsigned>(chunk.end - chunk.begin);
    const DeviceSample* chunk_params = dev_samples + chunk.begin;
    int64_t rows_work = 0;
    for (int64_t n = chunk.begin; n < chunk.end; ++n)
      if (host_samples[size_t(n)].x_table >= 0)
        rows_work = std::max(rows_work, int64_t(host_samples[size_t(n)].height) * size);
    if (rows_work > 0) {
      resample_rows<<<dim3(blocks_for(rows_work), chunk_samples), kThreads, 0, ctx.stream()>>>(
          src, width, chunk_params, taps, scratch.data_as<uint8_t>());
      SPADE_CUDA_CHECK_LAUNCH("resampling the augmentation crops horizontally");
    }
    finish<<<dim3(blocks_for(plane), chunk_samples), kThreads, 0, ctx.stream()>>>(
        src, width, chunk_params, taps, scratch.data_as<const uint8_t>(), dev_norm, out + chunk.begin * 3 * plane);
    SPADE_CUDA_CHECK_LAUNCH("resampling, flipping and colour-jittering the augmentation crops");
  }
}

}  // namespace spade::cuda
