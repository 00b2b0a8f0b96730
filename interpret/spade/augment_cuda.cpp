// The GPU path of augment_batch: the random parameters are drawn on the host by the same code
// (draw_augment), the pixels are made on the device (kernels/cuda/augment.h).
#include <mutex>
#include <vector>

#include "engine/error.h"
#include "interpret/spade/augment.h"
#ifdef SPADE_WITH_CUDA
#include "interpret/spade/augment_cuda.h"
#include "kernels/cuda/cuda_check.h"
#endif

namespace spade::interp {

#ifdef SPADE_WITH_CUDA

namespace {

// The last source image uploaded: a trace augments one image many times, batch by batch. It is
// recognised by its pixels (a copy is kept), never by its address, which a later image may reuse.
struct UploadedSource {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  DeviceBuffer device;
};

const uint8_t* upload_source(CudaContext& ctx, const Image& src) {
  static UploadedSource cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.width != src.width || cache.height != src.height || cache.pixels != src.rgb) {
    cache.device = ctx.allocate(src.rgb.size());
    SPADE_CUDA_CHECK(cudaMemcpyAsync(cache.device.data(), src.rgb.data(), src.rgb.size(), cudaMemcpyHostToDevice,
                                     ctx.stream()),
                     "uploading the image to augment");
    ctx.synchronize();  // the host image may change after we return
    cache.width = src.width;
    cache.height = src.height;
    cache.pixels = src.rgb;
  }
  return static_cast<const uint8_t*>(cache.device.data());
}

}  // namespace

cuda::AugmentSample augment_sample(const AugmentParams& p) {
  cuda::AugmentSample s;
  s.top = p.top;
  s.left = p.left;
  s.height = p.height;
  s.width = p.width;
  s.flip = p.flip;
  s.brightness = p.brightness;
  s.hue = p.hue;
  s.hue_first = p.hue_first;
  s.apply_hue = p.apply_hue;
  return s;
}

Tensor augment_batch_cuda(const Image& src, const AugmentConfig& c, uint64_t seed, int64_t first, int64_t count) {
  if (src.width <= 0 || src.height <= 0) throw Error("cannot augment an empty image");
  CudaContext& ctx = cuda_context();
  std::vector<cuda::AugmentSample> samples(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    samples[static_cast<size_t>(i)] = augment_sample(draw_augment(c, src.width, src.height, seed, first + i));
  }
  Tensor out = Tensor::empty({count, 3, c.size, c.size}, Device::CUDA);
  cuda::augment_batch(ctx, upload_source(ctx, src), src.width, src.height, samples.data(), count, c.size,
                      c.mean.data(), c.std.data(), out.data());
  return out;
}

#else

Tensor augment_batch_cuda(const Image&, const AugmentConfig&, uint64_t, int64_t, int64_t) {
  throw Error("GPU augmentation requested, but this build has no CUDA backend");
}

#endif

}  // namespace spade::interp
