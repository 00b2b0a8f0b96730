// The SPADE augmentations on the GPU (kernels/cuda/augment.cu) against the CPU path
// (interp::apply_augment and interp::augment_batch): the kernels reproduce PIL's integer
// resampler and 8-bit colour code, so every output float must have the CPU's exact bits.
#include <catch2/catch.hpp>

#include "support/cuda_test_support.h"
#include "support/test_support.h"

#include <array>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "formats/image.h"
#include "interpret/spade/augment.h"
#include "interpret/spade/augment_cuda.h"
#include "kernels/cuda/augment.h"
#include "kernels/cuda/cuda_check.h"

using namespace spade;

namespace {

using Floats = std::array<float, 3>;
const Floats kImagenetMean{0.485f, 0.456f, 0.406f}, kImagenetStd{0.229f, 0.224f, 0.225f};
const Floats kCifarMean{0.4914f, 0.4822f, 0.4465f}, kCifarStd{0.247f, 0.243f, 0.261f};

// Noise with some smooth structure, so that resampling sees both edges and gradients and the
// hue code sees grey pixels (equal channels) as well as saturated ones.
Image random_image(int w, int h, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255), kind(0, 3);
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[(size_t(y) * w + x) * 3];
      switch (kind(rng)) {
        case 0: p[0] = p[1] = p[2] = uint8_t(byte(rng)); break;
        case 1: p[0] = uint8_t(x * 255 / w), p[1] = uint8_t(y * 255 / h), p[2] = uint8_t(byte(rng)); break;
        default: p[0] = uint8_t(byte(rng)), p[1] = uint8_t(byte(rng)), p[2] = uint8_t(byte(rng)); break;
      }
    }
  return im;
}

// The CPU result of one parameter set: apply_augment, then ToTensor and Normalize in
// interp::augment_batch's float order.
void cpu_sample(const Image& src, const interp::AugmentParams& p, int size, const Floats& mean, const Floats& std,
                float* out) {
  const Image im = interp::apply_augment(src, p, size);
  const int64_t hw = int64_t(size) * size;
  for (int ch = 0; ch < 3; ++ch)
    for (int64_t i = 0; i < hw; ++i) out[ch * hw + i] = (float(im.rgb[i * 3 + ch]) / 255.f - mean[ch]) / std[ch];
}

DeviceBuffer upload(const Image& im) {
  CudaContext& ctx = cuda_context();
  DeviceBuffer buffer = ctx.allocate(im.rgb.size());
  SPADE_CUDA_CHECK(cudaMemcpyAsync(buffer.data(), im.rgb.data(), im.rgb.size(), cudaMemcpyHostToDevice, ctx.stream()),
                   "uploading a test image");
  ctx.synchronize();
  return buffer;
}

// Runs the GPU augmentations into a NaN-poisoned output and returns it.
std::vector<float> gpu_batch(const Image& src, const std::vector<cuda::AugmentSample>& samples, int size,
                             const Floats& mean, const Floats& std) {
  const DeviceBuffer image = upload(src);
  const size_t n = samples.size() * 3 * size_t(size) * size_t(size);
  const DeviceBuffer out = test::poisoned_gpu(n);
  cuda::augment_batch(cuda_context(), image.data_as<uint8_t>(), src.width, src.height, samples.data(),
                      int64_t(samples.size()), size, mean.data(), std.data(), out.data_as<float>());
  return test::from_gpu(out, n);
}

// "" when every float has the same bits; otherwise how many differ and where the first one is.
std::string bit_differences(const std::vector<float>& gpu, const float* cpu, size_t n, int size) {
  if (gpu.size() != n) return "sizes differ: " + std::to_string(gpu.size()) + " vs " + std::to_string(n);
  size_t count = 0, first = 0;
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0 && count++ == 0) first = i;
  if (count == 0) return "";
  const size_t hw = size_t(size) * size;
  return std::to_string(count) + " of " + std::to_string(n) + " floats differ; first at sample " +
         std::to_string(first / (3 * hw)) + ", channel " + std::to_string(first / hw % 3) + ", y " +
         std::to_string(first % hw / size) + ", x " + std::to_string(first % size) + ": gpu " +
         std::to_string(gpu[first]) + ", cpu " + std::to_string(cpu[first]);
}

std::string check_against_cpu(const Image& src, const std::vector<interp::AugmentParams>& params, int size,
                              const Floats& mean, const Floats& std) {
  std::vector<cuda::AugmentSample> samples;
  for (const auto& p : params) samples.push_back(interp::augment_sample(p));
  const std::vector<float> gpu = gpu_batch(src, samples, size, mean, std);
  const size_t per_sample = 3 * size_t(size) * size_t(size);
  std::vector<float> cpu(params.size() * per_sample);
  for (size_t n = 0; n < params.size(); ++n) cpu_sample(src, params[n], size, mean, std, cpu.data() + n * per_sample);
  return bit_differences(gpu, cpu.data(), cpu.size(), size);
}

// Draws samples [first, first + count) of `seed` and compares the GPU with interp::augment_batch.
std::string check_drawn(const Image& src, const interp::AugmentConfig& c, uint64_t seed, int64_t first,
                        int64_t count) {
  std::vector<cuda::AugmentSample> samples;
  for (int64_t i = 0; i < count; ++i)
    samples.push_back(interp::augment_sample(interp::draw_augment(c, src.width, src.height, seed, first + i)));
  const std::vector<float> gpu = gpu_batch(src, samples, c.size, c.mean, c.std);
  const Tensor cpu = interp::augment_batch(src, c, seed, first, count);
  return bit_differences(gpu, cpu.data(), size_t(cpu.numel()), c.size);
}

struct Source {
  int width, height;
};
const Source kSources[] = {{32, 32}, {37, 53}, {224, 300}, {500, 375}};

}  // namespace

TEST_CASE("GPU: augment_batch matches interp::augment_batch bit for bit on drawn parameters", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  interp::AugmentConfig tiny;  // small, very oblong crops: upsampling in one or both directions
  tiny.scale_min = 0.005;
  tiny.scale_max = 0.05;
  tiny.ratio_min = 0.2;
  tiny.ratio_max = 5.0;
  interp::AugmentConfig strong;
  strong.brightness = 0.95;
  strong.hue = 0.5;
  strong.mean = kCifarMean;
  strong.std = kCifarStd;
  interp::AugmentConfig no_colour;  // no hue round trip, brightness factor 1
  no_colour.brightness = 0.0;
  no_colour.hue = 0.0;
  const interp::AugmentConfig configs[] = {interp::AugmentConfig{}, tiny, strong, no_colour};
  for (const Source& s : kSources)
    for (int size : {32, 224})
      for (int k = 0; k < 4; ++k)
        for (uint64_t seed : {1ull, 2024ull}) {
          interp::AugmentConfig c = configs[k];
          c.size = size;
          const Image src = random_image(s.width, s.height, seed * 1000 + uint64_t(s.width));
          INFO(s.width << "x" << s.height << " -> " << size << ", config " << k << ", seed " << seed);
          CHECK(check_drawn(src, c, seed, int64_t(seed) * 3, 12) == "");
        }
}

TEST_CASE("GPU: augment_batch matches apply_augment on edge-case parameters", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  const double brightness[] = {0.0, 0.5, 1.0, 1.5, 2.7};
  const double hue[] = {-0.5, -0.1, 0.0, 0.3, 0.5};
  for (const Source& s : kSources)
    for (int size : {32, 224}) {
      const Image src = random_image(s.width, s.height, 77 + uint64_t(s.height));
      const int W = s.width, H = s.height;
      struct Box {
        int top, left, height, width;
      };
      std::vector<Box> boxes = {{0, 0, H, W},                      // the whole image
                                {H / 3, W / 2, H - H / 3, 1},       // one pixel wide
                                {H - 1, 0, 1, W},                   // one pixel tall
                                {H / 2, W / 3, 1, 1},               // one pixel
                                {H / 4, W / 4, H / 2, W / 2},       // interior
                                {1, W - 3, H - 1, 3}};              // at the right edge
      if (W >= size && H >= size) boxes.push_back({H - size, W - size, size, size});  // neither pass resamples
      if (W >= size) boxes.push_back({0, 0, H, size});                                // no horizontal pass
      if (H >= size) boxes.push_back({H - size, 0, size, W});                         // no vertical pass
      std::vector<interp::AugmentParams> params;
      for (size_t b = 0; b < boxes.size(); ++b)
        for (int v = 0; v < 8; ++v) {
          interp::AugmentParams p;
          p.top = boxes[b].top;
          p.left = boxes[b].left;
          p.height = boxes[b].height;
          p.width = boxes[b].width;
          p.flip = (v & 1) != 0;
          p.hue_first = (v & 2) != 0;
          p.apply_hue = v != 4 && v != 7;
          p.brightness = brightness[(size_t(v) + b) % 5];
          p.hue = hue[(size_t(v) + 2 * b) % 5];
          params.push_back(p);
        }
      INFO(W << "x" << H << " -> " << size);
      CHECK(check_against_cpu(src, params, size, kImagenetMean, kImagenetStd) == "");
    }
}

TEST_CASE("GPU: augment_batch splits large batches into launches without changing results", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  SECTION("more samples than one launch's grid.y") {
    interp::AugmentConfig c;
    c.size = 1;
    const Image src = random_image(37, 53, 5);
    CHECK(check_drawn(src, c, 11, 0, 70000) == "");
  }
  SECTION("more horizontally resampled rows than one launch's scratch") {
    // Full-height crops of a tall image: 576 KB of scratch each (except widths equal to the
    // output size, which skip the horizontal pass), so 560 of them need two 256 MiB chunks.
    const Image src = random_image(40, 6000, 6);
    std::vector<interp::AugmentParams> params;
    for (int n = 0; n < 560; ++n) {
      interp::AugmentParams p;
      p.height = 6000;
      p.width = 28 + n % 13;
      p.left = n % (40 - p.width + 1);
      p.flip = n % 3 == 0;
      p.hue_first = n % 2 == 0;
      p.brightness = 0.6 + 0.001 * n;
      p.hue = -0.4 + 0.0014 * n;
      params.push_back(p);
    }
    CHECK(check_against_cpu(src, params, 32, kCifarMean, kCifarStd) == "");
  }
}

TEST_CASE("GPU: augment_batch makes 1024 224x224 crops of a 500x375 image in a few milliseconds", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  interp::AugmentConfig c;
  const Image src = random_image(500, 375, 8);
  std::vector<cuda::AugmentSample> samples;
  for (int64_t i = 0; i < 1024; ++i) samples.push_back(interp::augment_sample(interp::draw_augment(c, 500, 375, 3, i)));
  CudaContext& ctx = cuda_context();
  const DeviceBuffer image = upload(src);
  const size_t n = samples.size() * 3 * 224 * 224;
  const DeviceBuffer out = test::poisoned_gpu(n);
  const auto run = [&] {
    cuda::augment_batch(ctx, image.data_as<uint8_t>(), 500, 375, samples.data(), 1024, 224, c.mean.data(),
                        c.std.data(), out.data_as<float>());
  };
  run();  // warm-up: the allocator's first blocks, module loading
  ctx.synchronize();
  constexpr int kRuns = 5;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < kRuns; ++r) run();
  ctx.synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / kRuns;
  WARN("cuda::augment_batch, 1024 x 224x224 from 500x375: " << ms << " ms per batch");
  const Tensor cpu = interp::augment_batch(src, c, 3, 0, 1024);
  CHECK(bit_differences(test::from_gpu(out, n), cpu.data(), n, 224) == "");
}

TEST_CASE("GPU: augment_batch rejects parameters the CPU path rejects", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  const Image src = random_image(20, 10, 9);
  const DeviceBuffer image = upload(src);
  const DeviceBuffer out = test::poisoned_gpu(3 * 8 * 8);
  const auto run = [&](cuda::AugmentSample s, int size = 8, float std0 = 0.229f) {
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {std0, 0.224f, 0.225f};
    return test::error_of([&] {
      cuda::augment_batch(cuda_context(), image.data_as<uint8_t>(), 20, 10, &s, 1, size, mean, std,
                          out.data_as<float>());
    });
  };
  cuda::AugmentSample ok;
  ok.height = 10;
  ok.width = 20;
  CHECK(run(ok) == "<no spade::Error thrown>");
  cuda::AugmentSample bad = ok;
  bad.left = 1;
  CHECK_THAT(run(bad), Catch::Contains("crop box") && Catch::Contains("not inside the 20x10 image"));
  bad = ok;
  bad.height = 0;
  CHECK_THAT(run(bad), Catch::Contains("crop box"));
  bad = ok;
  bad.brightness = -0.5;
  CHECK_THAT(run(bad), Catch::Contains("brightness"));
  bad = ok;
  bad.hue = 0.7;
  CHECK_THAT(run(bad), Catch::Contains("hue"));
  CHECK_THAT(run(ok, 0), Catch::Contains("output size"));
  CHECK_THAT(run(ok, 8, 0.f), Catch::Contains("std"));
  // An empty batch writes nothing.
  const DeviceBuffer untouched = test::poisoned_gpu(3 * 8 * 8);
  const float mean[3] = {0.f, 0.f, 0.f}, std[3] = {1.f, 1.f, 1.f};
  cuda::augment_batch(cuda_context(), image.data_as<uint8_t>(), 20, 10, nullptr, 0, 8, mean, std,
                      untouched.data_as<float>());
  for (float v : test::from_gpu(untouched, 3 * 8 * 8)) CHECK(std::isnan(v));
}
