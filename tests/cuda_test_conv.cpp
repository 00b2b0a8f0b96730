// GPU matrix products and convolutions (kernels/cuda/gemm.h, conv.h) against the CPU kernels.
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/gemm.h"
#include "support/cuda_test_support.h"
#include "support/test_support.h"

using namespace spade;
using kernels::ConvGeom;
using test::from_gpu;
using test::poisoned_gpu;
using test::random_floats;
using test::relative_l2;
using test::to_gpu;

namespace {

float* dev(const DeviceBuffer& b) { return b.data_as<float>(); }

ConvGeom geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t stride = 1,
              int64_t pad = 0, int64_t dil = 1, int64_t groups = 1) {
  ConvGeom g;
  g.N = N, g.C = C, g.H = H, g.W = W, g.K = K, g.R = R, g.S = S;
  g.stride_h = g.stride_w = stride;
  g.set_padding(pad, pad);
  g.dil_h = g.dil_w = dil;
  g.groups = groups;
  return g;
}

ConvGeom padded(ConvGeom g, int64_t top, int64_t left, int64_t bottom, int64_t right) {
  g.pad_top = top, g.pad_left = left, g.pad_bottom = bottom, g.pad_right = right;
  return g;
}

std::string describe(const ConvGeom& g) {
  std::ostringstream os;
  os << "N=" << g.N << " C=" << g.C << " " << g.H << "x" << g.W << " K=" << g.K << " kernel " << g.R << "x" << g.S
     << " stride " << g.stride_h << "," << g.stride_w << " pad " << g.pad_top << "," << g.pad_left << ","
     << g.pad_bottom << "," << g.pad_right << " dil " << g.dil_h
     << "," << g.dil_w << " groups " << g.groups;
  return os.str();
}

size_t input_size(const ConvGeom& g) { return static_cast<size_t>(g.N * g.C * g.H * g.W); }
size_t output_size(const ConvGeom& g) { return static_cast<size_t>(g.N * g.K * g.out_h() * g.out_w()); }
size_t weight_size(const ConvGeom& g) { return static_cast<size_t>(g.K * g.col_rows()); }

// Forward, input gradient and parameter gradients of one geometry, each from NaN-poisoned outputs.
void check_conv(const ConvGeom& g, bool with_bias, uint64_t seed) {
  INFO(describe(g) << (with_bias ? ", with bias" : ", no bias"));
  const size_t xs = input_size(g), ys = output_size(g), ws = weight_size(g), K = static_cast<size_t>(g.K);
  const std::vector<float> x = random_floats(xs, seed), w = random_floats(ws, seed + 1);
  const std::vector<float> b = random_floats(K, seed + 2), gy = random_floats(ys, seed + 3);
  std::vector<float> y(ys), gx(xs), gw(ws), gb(K);
  kernels::conv2d_forward(g, x.data(), w.data(), with_bias ? b.data() : nullptr, y.data());
  kernels::conv2d_backward_input(g, gy.data(), w.data(), gx.data());
  kernels::conv2d_backward_params(g, x.data(), gy.data(), gw.data(), with_bias ? gb.data() : nullptr);

  CudaContext& ctx = cuda_context();
  const DeviceBuffer dx = to_gpu(x), dw = to_gpu(w), db = to_gpu(b), dgy = to_gpu(gy);
  const DeviceBuffer dy = poisoned_gpu(ys), dgx = poisoned_gpu(xs), dgw = poisoned_gpu(ws), dgb = poisoned_gpu(K);
  cuda::conv2d_forward(ctx, g, dev(dx), dev(dw), with_bias ? dev(db) : nullptr, dev(dy));
  cuda::conv2d_backward_input(ctx, g, dev(dgy), dev(dw), dev(dgx));
  cuda::conv2d_backward_params(ctx, g, dev(dx), dev(dgy), dev(dgw), with_bias ? dev(dgb) : nullptr);
  CHECK(relative_l2(from_gpu(dy, ys), y) < 1e-5);
  CHECK(relative_l2(from_gpu(dgx, xs), gx) < 1e-5);
  CHECK(relative_l2(from_gpu(dgw, ws), gw) < 1e-5);
  if (with_bias) {
    // The GPU sums the bias gradient in double throughout; the CPU adds each image's plane in
    // float first, ~1e-5 off for planes of 2^18 pixels. So a double-precision sum is the tight
    // reference and the CPU only a loose one.
    const std::vector<float> got = from_gpu(dgb, K);
    const int64_t ohw = g.out_h() * g.out_w();
    std::vector<float> exact(K);
    for (size_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < g.N; ++n)
        for (int64_t i = 0; i < ohw; ++i) acc += gy[static_cast<size_t>((n * g.K + static_cast<int64_t>(k)) * ohw + i)];
      exact[k] = static_cast<float>(acc);
    }
    CHECK(relative_l2(got, exact) < 1e-6);
    CHECK(relative_l2(got, gb) < 1e-4);
  }
}

// Restores exact float32 products even when a check fails.
struct Tf32Scope {
  Tf32Scope() { cuda::set_allow_tf32(true); }
  ~Tf32Scope() { cuda::set_allow_tf32(false); }
};

}  // namespace

TEST_CASE("GPU: convolutions match the CPU over a sweep of geometries", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  ConvGeom asym = geom(2, 4, 10, 12, 6, 1, 3);  // 1x3 kernel, stride 1x2, padding 0x1
  asym.stride_w = 2;
  asym.pad_left = asym.pad_right = 1;
  const std::vector<ConvGeom> cases = {
      geom(2, 5, 7, 9, 6, 1, 1),                // 1x1: the images are the GEMM operands
      geom(3, 8, 9, 7, 5, 1, 1, 2),             // 1x1 stride 2 (ResNet downsampling)
      geom(1, 3, 11, 13, 7, 3, 3, 1, 1),        // 3x3 pad 1
      geom(4, 6, 15, 10, 9, 3, 3, 2, 1),        // 3x3 stride 2 pad 1
      geom(2, 3, 33, 31, 8, 7, 7, 2, 3),        // the ResNet stem
      geom(3, 4, 17, 19, 5, 3, 3, 1, 2, 2),     // dilation 2
      geom(5, 6, 9, 11, 10, 3, 3, 1, 1, 1, 2),  // groups 2, batched over images
      geom(2, 8, 13, 9, 12, 3, 3, 2, 1, 1, 4),  // groups 4, batched over groups
      geom(3, 8, 5, 7, 8, 1, 1, 1, 0, 1, 4),    // grouped 1x1
      geom(5, 4, 6, 5, 6, 1, 1, 1, 0, 1, 2),    // grouped 1x1, batched over images
      geom(3, 6, 21, 18, 9, 3, 3, 2, 3, 3, 3),  // groups, stride and dilation together
      geom(2, 33, 8, 8, 65, 3, 3, 1, 1),        // channel counts off the warp and tile sizes
      geom(1, 3, 5, 4, 4, 3, 3, 1, 2),          // padding wider than the kernel reach
      geom(2, 2, 4, 5, 3, 5, 5, 3, 2),          // kernel larger than the image
      asym,
      geom(2, 12, 14, 13, 12, 3, 3, 1, 1, 1, 12),  // depthwise
      geom(3, 7, 15, 16, 7, 3, 3, 2, 1, 1, 7),     // depthwise stride 2
      geom(2, 6, 11, 10, 12, 3, 3, 1, 1, 1, 6),    // depthwise, channel multiplier 2
      geom(1, 5, 17, 15, 10, 5, 5, 2, 4, 2, 5),    // depthwise 5x5, multiplier 2, stride 2, dilation 2
      geom(4, 3, 9, 9, 9, 3, 3, 1, 0, 1, 3),       // depthwise without padding, multiplier 3
      padded(geom(2, 3, 16, 16, 8, 3, 3, 2), 0, 0, 1, 1),         // TensorFlow "SAME", stride 2
      padded(geom(2, 6, 15, 14, 6, 3, 3, 2, 0, 1, 6), 1, 0, 1, 1),  // depthwise, odd/even "SAME"
      padded(geom(3, 4, 9, 11, 5, 5, 3, 1), 2, 0, 1, 2),          // every side different
      padded(geom(2, 8, 10, 9, 8, 3, 3, 1, 0, 2, 8), 0, 3, 2, 1),   // depthwise, dilation 2
  };
  uint64_t seed = 100;
  for (const ConvGeom& g : cases)
    for (bool with_bias : {false, true}) check_conv(g, with_bias, seed += 10);
}

TEST_CASE("GPU: a ResNet-sized 3x3 convolution matches the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  check_conv(geom(8, 64, 56, 56, 64, 3, 3, 1, 1), true, 7);
}

TEST_CASE("GPU: convolutions whose columns span several workspace chunks match the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  // 105 MB of columns per image: chunks of 2, 2 and 1 images against a 256 MiB workspace.
  check_conv(geom(5, 64, 127, 129, 4, 5, 5, 1, 2), true, 11);
}

TEST_CASE("GPU: convolution results are bit-identical run to run", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  for (const ConvGeom& g : {geom(5, 32, 28, 28, 48, 3, 3, 1, 1), geom(4, 24, 19, 19, 48, 3, 3, 2, 1, 1, 24)}) {
    INFO(describe(g));
    const DeviceBuffer dx = to_gpu(random_floats(input_size(g), 1)), dw = to_gpu(random_floats(weight_size(g), 2));
    const DeviceBuffer dgy = to_gpu(random_floats(output_size(g), 3));
    auto run = [&] {
      const DeviceBuffer dgx = poisoned_gpu(input_size(g)), dgw = poisoned_gpu(weight_size(g));
      const DeviceBuffer dgb = poisoned_gpu(static_cast<size_t>(g.K));
      cuda::conv2d_backward_input(ctx, g, dev(dgy), dev(dw), dev(dgx));
      cuda::conv2d_backward_params(ctx, g, dev(dx), dev(dgy), dev(dgw), dev(dgb));
      std::vector<float> all = from_gpu(dgx, input_size(g));
      for (float v : from_gpu(dgw, weight_size(g))) all.push_back(v);
      for (float v : from_gpu(dgb, static_cast<size_t>(g.K))) all.push_back(v);
      return all;
    };
    const std::vector<float> first = run();
    CHECK(run() == first);
  }
}

TEST_CASE("GPU: an empty batch gives zero parameter gradients", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  const ConvGeom g = geom(0, 4, 6, 6, 5, 3, 3, 1, 1);
  const DeviceBuffer dgw = poisoned_gpu(weight_size(g)), dgb = poisoned_gpu(5);
  cuda::conv2d_backward_params(cuda_context(), g, nullptr, nullptr, dev(dgw), dev(dgb));
  CHECK(from_gpu(dgw, weight_size(g)) == std::vector<float>(weight_size(g), 0.f));
  CHECK(from_gpu(dgb, 5) == std::vector<float>(5, 0.f));
}

TEST_CASE("GPU: im2col_batch lays the images' columns side by side like kernels::im2col", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  struct Case {
    ConvGeom g;
    int64_t c0;
  };
  const std::vector<Case> cases = {
      {geom(3, 6, 15, 10, 8, 3, 3, 2, 1, 1, 2), 3},  // the second group's channels
      {geom(2, 3, 23, 21, 4, 7, 7, 2, 3), 0},
      {geom(4, 5, 11, 12, 5, 3, 3, 1, 2, 2), 0},
      {geom(1, 4, 9, 8, 4, 1, 1), 0},
  };
  uint64_t seed = 500;
  for (const Case& c : cases) {
    const ConvGeom& g = c.g;
    INFO(describe(g) << ", channels from " << c.c0);
    const int64_t ohw = g.out_h() * g.out_w(), ld = g.N * ohw;
    const size_t size = static_cast<size_t>(g.col_rows() * ld);
    const std::vector<float> x = random_floats(input_size(g), ++seed);
    std::vector<float> expected(size);
    for (int64_t n = 0; n < g.N; ++n)
      kernels::im2col(g, x.data() + n * g.C * g.H * g.W, c.c0, expected.data() + n * ohw, ld);
    const DeviceBuffer dx = to_gpu(x), cols = poisoned_gpu(size);
    cuda::im2col_batch(cuda_context(), g, dev(dx), c.c0, dev(cols));
    CHECK(from_gpu(cols, size) == expected);  // pure copies: exact
  }
}

TEST_CASE("GPU: gemm matches the CPU in every transpose combination", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  struct Dims {
    int64_t M, N, K;
  };
  uint64_t seed = 900;
  for (const Dims d : {Dims{1, 1, 1}, Dims{7, 13, 5}, Dims{33, 65, 129}, Dims{128, 96, 300}, Dims{257, 31, 1000},
                       Dims{5, 300, 2}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool accumulate : {false, true}) {
          INFO("M=" << d.M << " N=" << d.N << " K=" << d.K << " trans_a=" << ta << " trans_b=" << tb
                    << " accumulate=" << accumulate);
          const size_t mn = static_cast<size_t>(d.M * d.N);
          const std::vector<float> A = random_floats(static_cast<size_t>(d.M * d.K), ++seed);
          const std::vector<float> B = random_floats(static_cast<size_t>(d.K * d.N), ++seed);
          std::vector<float> C = random_floats(mn, ++seed);
          const DeviceBuffer dA = to_gpu(A), dB = to_gpu(B), dC = accumulate ? to_gpu(C) : poisoned_gpu(mn);
          kernels::gemm(ta, tb, d.M, d.N, d.K, A.data(), B.data(), C.data(), accumulate);
          cuda::gemm(ctx, ta, tb, d.M, d.N, d.K, dev(dA), dev(dB), dev(dC), accumulate);
          CHECK(relative_l2(from_gpu(dC, mn), C) < 1e-5);
        }
}

TEST_CASE("GPU: strided-batched gemm with padded and shared operands", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const int64_t M = 17, N = 23, K = 19, batch = 4;
  for (bool shared_a : {false, true}) {
    INFO("A shared by every product: " << shared_a);
    const int64_t sa = shared_a ? 0 : M * K + 5, sb = K * N + 3, sc = M * N + 7;
    const std::vector<float> A = random_floats(static_cast<size_t>(sa * (batch - 1) + M * K), 31);
    const std::vector<float> B = random_floats(static_cast<size_t>(sb * batch), 32);
    const size_t c_size = static_cast<size_t>(sc * batch);
    const DeviceBuffer dA = to_gpu(A), dB = to_gpu(B), dC = poisoned_gpu(c_size);
    cuda::gemm_strided_batched(ctx, true, false, M, N, K, dev(dA), sa, dev(dB), sb, dev(dC), sc, batch, false);
    const std::vector<float> got = from_gpu(dC, c_size);
    for (int64_t b = 0; b < batch; ++b) {
      INFO("product " << b);
      std::vector<float> expected(static_cast<size_t>(M * N));
      kernels::gemm(true, false, M, N, K, A.data() + b * sa, B.data() + b * sb, expected.data(), false);
      const std::vector<float> part(got.begin() + b * sc, got.begin() + b * sc + M * N);
      CHECK(relative_l2(part, expected) < 1e-5);
      for (int64_t i = M * N; i < sc; ++i) CHECK(std::isnan(got[static_cast<size_t>(b * sc + i)]));  // untouched
    }
  }
}

TEST_CASE("GPU: gemm edge cases: empty products, oversized problems, TF32", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const std::vector<float> C0 = random_floats(12, 41);
  const DeviceBuffer zeroed = poisoned_gpu(12), kept = to_gpu(C0);
  cuda::gemm(ctx, false, false, 3, 4, 0, nullptr, nullptr, dev(zeroed), false);
  cuda::gemm(ctx, false, true, 3, 4, 0, nullptr, nullptr, dev(kept), true);
  cuda::gemm(ctx, false, false, 0, 4, 7, nullptr, nullptr, nullptr, false);
  CHECK(from_gpu(zeroed, 12) == std::vector<float>(12, 0.f));
  CHECK(from_gpu(kept, 12) == C0);

  const int64_t too_big = int64_t{1} << 31;
  const std::string msg =
      test::error_of([&] { cuda::gemm(ctx, false, false, 4, too_big, 4, nullptr, nullptr, nullptr, false); });
  INFO(msg);
  CHECK(msg.find("N = 2147483648") != std::string::npos);
  CHECK(msg.find("32-bit limit") != std::string::npos);
  CHECK_THROWS_AS(cuda::gemm_strided_batched(ctx, false, false, 2, 2, 2, nullptr, 4, nullptr, 4, nullptr, 4, too_big,
                                             false),
                  Error);

  CHECK_FALSE(cuda::allow_tf32());
  const int64_t M = 64, N = 64, K = 256;
  const std::vector<float> A = random_floats(static_cast<size_t>(M * K), 42);
  const std::vector<float> B = random_floats(static_cast<size_t>(K * N), 43);
  std::vector<float> expected(static_cast<size_t>(M * N));
  kernels::gemm(false, false, M, N, K, A.data(), B.data(), expected.data(), false);
  const DeviceBuffer dA = to_gpu(A), dB = to_gpu(B), dC = poisoned_gpu(expected.size());
  {
    Tf32Scope tf32;
    CHECK(cuda::allow_tf32());
    cuda::gemm(ctx, false, false, M, N, K, dev(dA), dev(dB), dev(dC), false);
    // TF32 keeps 10 mantissa bits of each input: ~1e-3 relative error per product, not 1e-5.
    CHECK(relative_l2(from_gpu(dC, expected.size()), expected) < 1e-2);
  }
  CHECK_FALSE(cuda::allow_tf32());
  cuda::gemm(ctx, false, false, M, N, K, dev(dA), dev(dB), dev(dC), false);
  CHECK(relative_l2(from_gpu(dC, expected.size()), expected) < 1e-5);
}
