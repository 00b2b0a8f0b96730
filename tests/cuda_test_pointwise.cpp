// GPU pointwise, BatchNorm, pooling and loss kernels (kernels/cuda/elementwise.h, batchnorm.h,
// pool.h, loss.h) against the CPU kernels. Where the GPU kernel performs the CPU's operations in
// the CPU's order with no product feeding a sum (pointwise ops, dropout masks, pooling forward and
// backward, BatchNorm eval gx and coefficients) the results must be bit-identical. Where a product
// feeds a sum, nvcc and the host compiler may each fuse it into an FMA, so the last bit may
// differ; reductions done in another order (in double) are bounded, and also checked against a
// double-precision reference computed here.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/pool.h"
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/pool.h"
#include "support/cuda_test_support.h"
#include "support/test_support.h"

using namespace spade;
using kernels::BNGeom;
using kernels::PoolGeom;
using kernels::ShortcutGeom;
using test::from_gpu;
using test::poisoned_gpu;
using test::random_floats;
using test::relative_l2;
using test::to_gpu;

namespace {

float* dev(const DeviceBuffer& b) { return b.data_as<float>(); }

template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  CudaContext& ctx = cuda_context();
  DeviceBuffer b = ctx.allocate(std::max<size_t>(v.size(), 1) * sizeof(T));
  if (!v.empty())
    SPADE_CUDA_CHECK(cudaMemcpyAsync(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, ctx.stream()),
                     "uploading test data");
  ctx.synchronize();
  return b;
}

template <class T>
std::vector<T> download(const DeviceBuffer& b, size_t n) {
  CudaContext& ctx = cuda_context();
  std::vector<T> v(n);
  if (n)
    SPADE_CUDA_CHECK(cudaMemcpyAsync(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()),
                     "downloading test results");
  ctx.synchronize();
  return v;
}

// Bit-for-bit equality (any NaN equals any NaN); reports the first difference.
void check_identical(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) && std::isnan(want[i])) continue;
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      INFO(what << ": first difference at " << i << " of " << got.size() << ": GPU " << got[i] << ", CPU " << want[i]);
      CHECK(false);
      return;
    }
  }
  SUCCEED(what);
}

// Sizes around warp, block and vector multiples, and one of a ResNet activation (8x256x56x56).
const std::vector<int64_t> kSizes = {1, 3, 4, 31, 32, 33, 255, 256, 257, 1000, 4099, 65537, 8 * 256 * 56 * 56};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Pointwise

TEST_CASE("GPU: fill, clamp and add match the CPU exactly", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  uint64_t seed = 100;
  for (int64_t n : kSizes)
    for (int offset : {0, 1}) {  // offset 1: pointers not 16-byte aligned, the scalar path
      INFO("n=" << n << " offset " << offset);
      const size_t total = static_cast<size_t>(n + offset);
      std::vector<float> x = random_floats(total, ++seed, -8.f, 8.f), b = random_floats(total, ++seed);
      const std::vector<float> gy = random_floats(total, ++seed);
      // Values on the clamp boundaries, and a NaN (propagated by clamp forward, zero backward).
      std::mt19937_64 rng(++seed);
      for (float v : {0.f, -0.f, 6.f, -0.5f, 0.5f, NAN})
        x[static_cast<size_t>(std::uniform_int_distribution<int64_t>(0, n - 1)(rng) + offset)] = v;
      const DeviceBuffer dx = to_gpu(x), db = to_gpu(b), dgy = to_gpu(gy);
      const float* px = dev(dx) + offset;
      const size_t m = static_cast<size_t>(n);
      auto cpu = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + offset, v.end()); };
      const std::vector<float> xs = cpu(x), bs = cpu(b), gys = cpu(gy);

      const DeviceBuffer dy = poisoned_gpu(total);
      cuda::fill(ctx, n, 3.5f, dev(dy) + offset);
      check_identical(cpu(from_gpu(dy, total)), std::vector<float>(m, 3.5f), "fill");

      for (auto [lo, hi] : {std::pair<float, float>{0.f, INFINITY}, {0.f, 6.f}, {-0.5f, 0.5f}}) {
        INFO("clamp to [" << lo << ", " << hi << "]");
        std::vector<float> y(m), gx(m);
        kernels::clamp_forward(n, xs.data(), lo, hi, y.data());
        kernels::clamp_backward(n, xs.data(), gys.data(), lo, hi, gx.data());
        const DeviceBuffer dyc = poisoned_gpu(total), dgx = poisoned_gpu(total);
        cuda::clamp_forward(ctx, n, px, lo, hi, dev(dyc) + offset);
        cuda::clamp_backward(ctx, n, px, dev(dgy) + offset, lo, hi, dev(dgx) + offset);
        check_identical(cpu(from_gpu(dyc, total)), y, "clamp forward");
        check_identical(cpu(from_gpu(dgx, total)), gx, "clamp backward");
      }
      // In place, as the engine runs activations.
      {
        std::vector<float> y(m);
        kernels::clamp_forward(n, xs.data(), 0.f, 6.f, y.data());
        const DeviceBuffer inplace = to_gpu(x);
        cuda::clamp_forward(ctx, n, dev(inplace) + offset, 0.f, 6.f, dev(inplace) + offset);
        check_identical(cpu(from_gpu(inplace, total)), y, "clamp forward in place");
      }
      std::vector<float> sum(m);
      kernels::add_forward(n, xs.data(), bs.data(), sum.data());
      const DeviceBuffer dsum = poisoned_gpu(total);
      cuda::add_forward(ctx, n, px, dev(db) + offset, dev(dsum) + offset);
      check_identical(cpu(from_gpu(dsum, total)), sum, "add");
    }
}

TEST_CASE("GPU: dropout masks are bit-identical to the CPU's", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  for (int64_t n : kSizes)
    for (float p : {0.f, 0.1f, 0.5f, 1.f})
      for (uint64_t seed : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, uint64_t{0xdeadbeefcafef00dULL}}) {
        INFO("n=" << n << " p=" << p << " seed " << seed);
        const std::vector<float> x = random_floats(static_cast<size_t>(n), seed + 7);
        std::vector<float> y(x.size());
        kernels::dropout_apply(n, x.data(), p, seed, y.data());
        const DeviceBuffer dx = to_gpu(x), dy = poisoned_gpu(x.size());
        cuda::dropout_apply(ctx, n, dev(dx), p, seed, dev(dy));
        const std::vector<float> got = from_gpu(dy, x.size());
        check_identical(got, y, "dropout");
        if (n == kSizes.back()) {  // the mask keeps about 1 - p of the values
          const double kept = std::count_if(got.begin(), got.end(), [](float v) { return v != 0.f; }) / double(n);
          CHECK(std::abs(kept - (1.0 - p)) < 0.01);
        }
        cuda::dropout_apply(ctx, n, dev(dx), p, seed, dev(dx));  // in place
        check_identical(from_gpu(dx, x.size()), y, "dropout in place");
      }
}

TEST_CASE("GPU: option-A shortcut matches the CPU exactly", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const std::vector<std::array<int64_t, 6>> geoms = {  // N, C, H, W, pad, stride
      {2, 16, 32, 32, 8, 2}, {1, 3, 7, 5, 1, 2}, {3, 5, 9, 9, 2, 3}, {1, 1, 1, 1, 0, 1},
      {4, 32, 16, 16, 16, 2}, {8, 64, 56, 56, 32, 2}, {2, 7, 11, 13, 0, 2}};
  uint64_t seed = 300;
  for (const auto& a : geoms) {
    ShortcutGeom g;
    g.N = a[0], g.C = a[1], g.H = a[2], g.W = a[3], g.pad = a[4], g.stride = a[5];
    INFO("N=" << g.N << " C=" << g.C << " " << g.H << "x" << g.W << " pad " << g.pad << " stride " << g.stride);
    const size_t xs = static_cast<size_t>(g.N * g.C * g.H * g.W);
    const size_t ys = static_cast<size_t>(g.N * g.out_c() * g.out_h() * g.out_w());
    const std::vector<float> x = random_floats(xs, ++seed), gy = random_floats(ys, ++seed);
    std::vector<float> y(ys), gx(xs);
    kernels::shortcut_forward(g, x.data(), y.data());
    kernels::shortcut_backward(g, gy.data(), gx.data());
    const DeviceBuffer dx = to_gpu(x), dgy = to_gpu(gy), dy = poisoned_gpu(ys), dgx = poisoned_gpu(xs);
    cuda::shortcut_forward(ctx, g, dev(dx), dev(dy));
    cuda::shortcut_backward(ctx, g, dev(dgy), dev(dgx));
    check_identical(from_gpu(dy, ys), y, "shortcut forward");
    check_identical(from_gpu(dgx, xs), gx, "shortcut backward");
  }
}

TEST_CASE("GPU: bias rows and column sums match the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},   {7, 10},  {33, 1000}, {256, 17},
                                                           {1000, 3}, {5000, 64}, {3, 4097}, {1, 2048}};
  uint64_t seed = 400;
  for (auto [rows, cols] : shapes) {
    INFO(rows << " x " << cols);
    const size_t n = static_cast<size_t>(rows * cols);
    const std::vector<float> x = random_floats(n, ++seed), bias = random_floats(static_cast<size_t>(cols), ++seed);
    // The engine's CPU versions (engine/backend.cpp).
    std::vector<float> y = x;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) y[r * cols + c] += bias[c];
    std::vector<double> acc(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) acc[c] += x[r * cols + c];
    std::vector<float> sums(acc.begin(), acc.end());

    const DeviceBuffer dy = to_gpu(x), db = to_gpu(bias);
    cuda::add_bias_rows(ctx, rows, cols, dev(db), dev(dy));
    check_identical(from_gpu(dy, n), y, "add_bias_rows");

    const DeviceBuffer dx = to_gpu(x), ds = poisoned_gpu(static_cast<size_t>(cols));
    cuda::column_sums(ctx, rows, cols, dev(dx), dev(ds));
    const std::vector<float> got = from_gpu(ds, static_cast<size_t>(cols));
    // Both sum in double (in different orders): they can differ only by a float rounding.
    CHECK(relative_l2(got, sums) <= 1e-7);
    cuda::column_sums(ctx, rows, cols, dev(dx), dev(ds));
    check_identical(from_gpu(ds, static_cast<size_t>(cols)), got, "column_sums rerun");
  }
}

// ---------------------------------------------------------------------------------------------
// Pooling

namespace {

std::string describe(const PoolGeom& g) {
  std::ostringstream os;
  os << "N=" << g.N << " C=" << g.C << " " << g.H << "x" << g.W << " kernel " << g.kh << "x" << g.kw << " stride "
     << g.stride_h << "," << g.stride_w << " pad " << g.pad_top << "," << g.pad_left << "," << g.pad_bottom << "," << g.pad_right << (g.ceil_mode ? " ceil" : "")
     << (g.count_include_pad ? "" : " exclude-pad") << " -> " << g.out_h() << "x" << g.out_w();
  return os.str();
}

PoolGeom pool(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
              int64_t pw, bool ceil, bool include_pad = true) {
  PoolGeom g;
  g.N = N, g.C = C, g.H = H, g.W = W, g.kh = kh, g.kw = kw;
  g.stride_h = sh, g.stride_w = sw, g.pad_top = g.pad_bottom = ph, g.pad_left = g.pad_right = pw;
  g.ceil_mode = ceil;
  g.count_include_pad = include_pad;
  return g;
}

// Kernels 2/3, strides 1/2, padding 0/1 (PyTorch allows at most half the kernel), ceil mode on and
// off, count_include_pad on and off, over odd shapes; plus asymmetric and gapped windows and
// large ResNet-sized layers.
std::vector<PoolGeom> pool_sweep() {
  std::vector<PoolGeom> out;
  const std::vector<std::array<int64_t, 4>> shapes = {{2, 3, 7, 7}, {1, 5, 8, 9}, {3, 2, 13, 11}, {1, 1, 2, 2},
                                                      {2, 4, 1, 1}, {1, 3, 4, 6}, {2, 2, 5, 5}};
  for (const auto& s : shapes)
    for (int64_t k : {2, 3})
      for (int64_t st : {1, 2})
        for (int64_t p : {0, 1})
          for (bool ceil : {false, true})
            for (bool include : {true, false}) {
              if (s[2] + 2 * p < k || s[3] + 2 * p < k) continue;
              out.push_back(pool(s[0], s[1], s[2], s[3], k, k, st, st, p, p, ceil, include));
            }
  out.push_back(pool(2, 3, 9, 8, 3, 2, 2, 1, 1, 0, false));
  out.push_back(pool(2, 3, 9, 8, 3, 2, 2, 1, 1, 1, true, false));
  out.push_back(pool(1, 2, 5, 5, 2, 2, 3, 3, 1, 1, true));   // last ceil window would start in the padding
  out.push_back(pool(1, 2, 7, 7, 3, 3, 2, 2, 1, 1, true));   // last window runs past the padding
  out.push_back(pool(1, 3, 10, 10, 2, 2, 3, 3, 0, 0, false));  // gaps: some inputs in no window
  out.push_back(pool(8, 64, 112, 112, 3, 3, 2, 2, 1, 1, false));  // ResNet stem max pool
  out.push_back(pool(8, 256, 56, 56, 2, 2, 2, 2, 0, 0, false));
  out.push_back(pool(4, 96, 57, 57, 3, 3, 1, 1, 1, 1, true, false));
  for (bool include : {true, false}) {  // asymmetric ("SAME"-style) padding, no ceil mode
    PoolGeom a = pool(2, 3, 8, 9, 3, 3, 2, 2, 0, 0, false, include);
    a.pad_bottom = a.pad_right = 1;
    out.push_back(a);
    PoolGeom b = pool(1, 4, 7, 6, 2, 3, 1, 2, 1, 0, false, include);
    b.pad_bottom = 0, b.pad_right = 1;
    out.push_back(b);
  }
  return out;
}

size_t pool_in(const PoolGeom& g) { return static_cast<size_t>(g.N * g.C * g.H * g.W); }
size_t pool_out(const PoolGeom& g) { return static_cast<size_t>(g.N * g.C * g.out_h() * g.out_w()); }

}  // namespace

TEST_CASE("GPU: max pooling matches the CPU exactly, ties and NaN included", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  uint64_t seed = 500;
  for (const PoolGeom& g : pool_sweep()) {
    if (!g.count_include_pad) continue;  // max pooling ignores it: each geometry once
    INFO(describe(g));
    const size_t xs = pool_in(g), ys = pool_out(g);
    for (int variant = 0; variant < 3; ++variant) {  // plain, values on a 0.25 grid (ties), NaNs
      INFO((variant == 0 ? "random values" : variant == 1 ? "ties" : "NaNs and ties"));
      std::vector<float> x = random_floats(xs, ++seed, -2.f, 2.f);
      if (variant > 0)
        for (float& v : x) v = std::round(v * 4.f) / 4.f;
      if (variant == 2)
        for (size_t i = 0; i < xs; i += 7) x[i] = NAN;
      const std::vector<float> gy = random_floats(ys, ++seed);
      std::vector<float> y(ys), gx(xs);
      kernels::maxpool2d_forward(g, x.data(), y.data());
      kernels::maxpool2d_backward(g, x.data(), gy.data(), gx.data());
      const DeviceBuffer dx = to_gpu(x), dgy = to_gpu(gy), dy = poisoned_gpu(ys), dgx = poisoned_gpu(xs);
      cuda::maxpool2d_forward(ctx, g, dev(dx), dev(dy));
      cuda::maxpool2d_backward(ctx, g, dev(dx), dev(dgy), dev(dgx));
      check_identical(from_gpu(dy, ys), y, "max pool forward");
      check_identical(from_gpu(dgx, xs), gx, "max pool backward");
      if (xs > 1000000) break;  // the large layers: one variant is enough
    }
  }
}

TEST_CASE("GPU: average pooling matches the CPU exactly", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  uint64_t seed = 600;
  for (const PoolGeom& g : pool_sweep()) {
    INFO(describe(g));
    const size_t xs = pool_in(g), ys = pool_out(g);
    const std::vector<float> x = random_floats(xs, ++seed), gy = random_floats(ys, ++seed);
    std::vector<float> y(ys), gx(xs);
    kernels::avgpool2d_forward(g, x.data(), y.data());
    kernels::avgpool2d_backward(g, gy.data(), gx.data());
    const DeviceBuffer dx = to_gpu(x), dgy = to_gpu(gy), dy = poisoned_gpu(ys), dgx = poisoned_gpu(xs);
    cuda::avgpool2d_forward(ctx, g, dev(dx), dev(dy));
    cuda::avgpool2d_backward(ctx, g, dev(dgy), dev(dgx));
    check_identical(from_gpu(dy, ys), y, "average pool forward");
    check_identical(from_gpu(dgx, xs), gx, "average pool backward");
  }
}

TEST_CASE("GPU: global average pooling matches the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},    {7, 49},   {8 * 2048, 49}, {3, 1000},
                                                           {5, 64},   {17, 3136}, {33, 31},     {2, 100000}};
  uint64_t seed = 700;
  for (auto [planes, hw] : shapes) {
    INFO(planes << " planes of " << hw);
    const size_t n = static_cast<size_t>(planes * hw), P = static_cast<size_t>(planes);
    const std::vector<float> x = random_floats(n, ++seed, 0.f, 1.f), gy = random_floats(P, ++seed);
    std::vector<float> y(P), gx(n);
    kernels::global_avgpool_forward(planes, hw, x.data(), y.data());
    kernels::global_avgpool_backward(planes, hw, gy.data(), gx.data());
    std::vector<float> exact(P);
    for (size_t p = 0; p < P; ++p) {
      double s = 0;
      for (int64_t i = 0; i < hw; ++i) s += x[p * hw + i];
      exact[p] = static_cast<float>(s / static_cast<double>(hw));
    }
    const DeviceBuffer dx = to_gpu(x), dgy = to_gpu(gy), dy = poisoned_gpu(P), dgx = poisoned_gpu(n);
    cuda::global_avgpool_forward(ctx, planes, hw, dev(dx), dev(dy));
    cuda::global_avgpool_backward(ctx, planes, hw, dev(dgy), dev(dgx));
    const std::vector<float> got = from_gpu(dy, P);
    // The GPU sums in double (only the final rounding differs from the exact mean); the CPU's
    // sequential float sum is off by up to ~sqrt(hw) float roundings.
    CHECK(relative_l2(got, exact) <= 1e-7);
    CHECK(relative_l2(got, y) <= 1e-5);
    check_identical(from_gpu(dgx, n), gx, "global average pool backward");
  }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm

namespace {

struct BNData {
  BNGeom g;
  std::vector<float> x, gy, weight, bias;
};

// Channels with their own offsets (up to +-4, scale 0.5), so the statistics are not trivial.
BNData bn_data(int64_t N, int64_t C, int64_t HW, uint64_t seed) {
  BNData d;
  d.g.N = N, d.g.C = C, d.g.HW = HW;
  const size_t n = static_cast<size_t>(N * C * HW);
  d.x = random_floats(n, seed, -0.5f, 0.5f);
  const std::vector<float> offsets = random_floats(static_cast<size_t>(C), seed + 1, -4.f, 4.f);
  for (size_t i = 0; i < n; ++i) d.x[i] += offsets[(i / HW) % C];
  d.gy = random_floats(n, seed + 2);
  d.weight = random_floats(static_cast<size_t>(C), seed + 3, 0.5f, 1.5f);
  d.bias = random_floats(static_cast<size_t>(C), seed + 4);
  return d;
}

const std::vector<std::array<int64_t, 3>> kBNShapes = {  // N, C, HW
    {1, 3, 1},    {2, 5, 1},     {1, 16, 1024},  {4, 7, 49},      {3, 13, 33},   {2, 3, 5000},
    {8, 64, 3136}, {16, 1, 100000}, {8, 2048, 49}, {8, 256, 3136}};

std::string describe(const BNGeom& g) {
  std::ostringstream os;
  os << "N=" << g.N << " C=" << g.C << " HW=" << g.HW;
  return os.str();
}

// Exact (double, two-pass) biased statistics.
void reference_stats(const BNData& d, std::vector<double>& mean, std::vector<double>& var) {
  const BNGeom& g = d.g;
  mean.assign(static_cast<size_t>(g.C), 0.0);
  var.assign(static_cast<size_t>(g.C), 0.0);
  const double count = static_cast<double>(g.N * g.HW);
  for (int64_t c = 0; c < g.C; ++c) {
    double s = 0, ss = 0;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.HW; ++i) s += d.x[(n * g.C + c) * g.HW + i];
    const double m = s / count;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.HW; ++i) {
        const double e = d.x[(n * g.C + c) * g.HW + i] - m;
        ss += e * e;
      }
    mean[c] = m;
    var[c] = ss / count;
  }
}

// The engine's coefficients (engine/ops.cpp bn_statistics).
void host_coefficients(const std::vector<double>& mean, const std::vector<double>& var, double eps,
                       std::vector<float>& mean_f, std::vector<float>& invstd) {
  mean_f.resize(mean.size());
  invstd.resize(mean.size());
  for (size_t c = 0; c < mean.size(); ++c) {
    mean_f[c] = static_cast<float>(mean[c]);
    invstd[c] = static_cast<float>(1.0 / std::sqrt(var[c] + eps));
  }
}

// Exact per-channel sums of gy and gy * xhat, and the train-mode gx from them (the CPU formula).
void reference_backward(const BNData& d, const std::vector<float>& mean, const std::vector<float>& invstd,
                        std::vector<float>& gweight, std::vector<float>& gbias, std::vector<float>& gx_train) {
  const BNGeom& g = d.g;
  const double count = static_cast<double>(g.N * g.HW);
  gweight.resize(static_cast<size_t>(g.C));
  gbias.resize(static_cast<size_t>(g.C));
  gx_train.resize(d.x.size());
  for (int64_t c = 0; c < g.C; ++c) {
    double a = 0, b = 0;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.HW; ++i) {
        const size_t k = static_cast<size_t>((n * g.C + c) * g.HW + i);
        a += d.gy[k];
        b += double(d.gy[k]) * (double(d.x[k]) - double(mean[c]));
      }
    b *= invstd[c];
    gbias[c] = static_cast<float>(a);
    gweight[c] = static_cast<float>(b);
    const double kk = d.weight[c] * invstd[c], mg = a / count, mgx = b / count;
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t i = 0; i < g.HW; ++i) {
        const size_t k = static_cast<size_t>((n * g.C + c) * g.HW + i);
        const double xhat = (d.x[k] - mean[c]) * invstd[c];
        gx_train[k] = static_cast<float>(kk * (d.gy[k] - mg - xhat * mgx));
      }
  }
}

}  // namespace

TEST_CASE("GPU: BatchNorm batch statistics, coefficients and running statistics", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  uint64_t seed = 800;
  for (const auto& s : kBNShapes) {
    const BNData d = bn_data(s[0], s[1], s[2], seed += 10);
    const BNGeom& g = d.g;
    INFO(describe(g));
    const size_t C = static_cast<size_t>(g.C);
    std::vector<double> ref_mean, ref_var, cpu_mean(C), cpu_var(C);
    reference_stats(d, ref_mean, ref_var);
    kernels::batchnorm_batch_stats(g, d.x.data(), cpu_mean.data(), cpu_var.data());

    const DeviceBuffer dx = to_gpu(d.x);
    DeviceBuffer dmean = upload(std::vector<double>(C, NAN)), dvar = upload(std::vector<double>(C, NAN));
    cuda::batchnorm_batch_stats(ctx, g, dev(dx), dmean.data_as<double>(), dvar.data_as<double>());
    const std::vector<double> mean = download<double>(dmean, C), var = download<double>(dvar, C);
    // Double sums in another order than the reference: ~1e-16 apart, far below float resolution.
    CHECK(relative_l2(mean, ref_mean) <= 1e-12);
    CHECK(relative_l2(var, ref_var) <= 1e-9);  // the variance of one value is exactly 0: absolute there
    // The CPU sums each plane in float lanes first.
    CHECK(relative_l2(mean, cpu_mean) <= 1e-5);
    CHECK(relative_l2(var, cpu_var) <= 1e-5);
    if (g.N * g.HW == 1)
      for (size_t c = 0; c < C; ++c) {
        CHECK(var[c] == 0.0);
        CHECK(mean[c] == double(d.x[c]));
      }
    cuda::batchnorm_batch_stats(ctx, g, dev(dx), dmean.data_as<double>(), dvar.data_as<double>());
    CHECK(download<double>(dmean, C) == mean);  // deterministic
    CHECK(download<double>(dvar, C) == var);

    // Coefficients from the batch statistics (double) and from running statistics (float):
    // the engine's host formula, exactly.
    const double eps = 1e-5;
    std::vector<float> want_mean, want_invstd;
    host_coefficients(mean, var, eps, want_mean, want_invstd);
    const DeviceBuffer cm = poisoned_gpu(C), ci = poisoned_gpu(C);
    cuda::batchnorm_coefficients(ctx, g.C, dmean.data_as<double>(), dvar.data_as<double>(), eps, dev(cm), dev(ci));
    check_identical(from_gpu(cm, C), want_mean, "coefficients (batch): mean");
    check_identical(from_gpu(ci, C), want_invstd, "coefficients (batch): invstd");

    const std::vector<float> rm = random_floats(C, seed + 5), rv = random_floats(C, seed + 6, 0.1f, 3.f);
    std::vector<float> rm_want(C), rv_want(C);
    for (size_t c = 0; c < C; ++c) {
      rm_want[c] = rm[c];
      rv_want[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(rv[c]) + 1e-3));
    }
    const DeviceBuffer drm = to_gpu(rm), drv = to_gpu(rv);
    cuda::batchnorm_coefficients(ctx, g.C, dev(drm), dev(drv), 1e-3, dev(cm), dev(ci));
    check_identical(from_gpu(cm, C), rm_want, "coefficients (running): mean");
    check_identical(from_gpu(ci, C), rv_want, "coefficients (running): invstd");

    // Running statistics update, as engine/ops.cpp does it on the host (products feed sums: the
    // two compilers may fuse different ones, a float ulp apart in ~1% of the channels).
    const double count = static_cast<double>(g.N * g.HW), momentum = 0.1;
    const double unbias = count > 1 ? count / (count - 1) : 1.0;
    std::vector<float> new_rm(C), new_rv(C);
    for (size_t c = 0; c < C; ++c) {
      const float mf = static_cast<float>(mean[c]);
      new_rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mf);
      new_rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * var[c] * unbias);
    }
    cuda::batchnorm_update_running(ctx, g.C, dmean.data_as<double>(), dvar.data_as<double>(), count, momentum,
                                   dev(drm), dev(drv));
    CHECK(relative_l2(from_gpu(drm, C), new_rm) <= 1e-6);
    CHECK(relative_l2(from_gpu(drv, C), new_rv) <= 1e-6);
  }
}

TEST_CASE("GPU: BatchNorm apply and backward match the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  uint64_t seed = 900;
  for (const auto& s : kBNShapes) {
    const BNData d = bn_data(s[0], s[1], s[2], seed += 10);
    const BNGeom& g = d.g;
    INFO(describe(g));
    const size_t C = static_cast<size_t>(g.C), n = d.x.size();
    std::vector<double> m64(C), v64(C);
    kernels::batchnorm_batch_stats(g, d.x.data(), m64.data(), v64.data());
    std::vector<float> mean, invstd;
    host_coefficients(m64, v64, 1e-5, mean, invstd);

    const DeviceBuffer dx = to_gpu(d.x), dgy = to_gpu(d.gy), dmean = to_gpu(mean), dinv = to_gpu(invstd);
    const DeviceBuffer dw = to_gpu(d.weight), db = to_gpu(d.bias);

    // Apply: the CPU's per-channel scale and shift, the same float operations up to FMA fusion.
    // The shift (bias - mean * scale, |mean| up to 4.5) is rounded at up to ~15x |y|: 1e-5.
    std::vector<float> y(n);
    kernels::batchnorm_apply(g, d.x.data(), mean.data(), invstd.data(), d.weight.data(), d.bias.data(), y.data());
    const DeviceBuffer dy = poisoned_gpu(n);
    cuda::batchnorm_apply(ctx, g, dev(dx), dev(dmean), dev(dinv), dev(dw), dev(db), dev(dy));
    const std::vector<float> got_y = from_gpu(dy, n);
    CHECK(relative_l2(got_y, y) <= 1e-5);
    const DeviceBuffer inplace = to_gpu(d.x);
    cuda::batchnorm_apply(ctx, g, dev(inplace), dev(dmean), dev(dinv), dev(dw), dev(db), dev(inplace));
    check_identical(from_gpu(inplace, n), got_y, "apply in place");
    if (g.N > 1) {  // one sample's worth from a misaligned pointer: the scalar path
      BNGeom g1 = g;
      g1.N = 1;
      const size_t n1 = static_cast<size_t>(g1.C * g1.HW);
      std::vector<float> y1(n1);
      kernels::batchnorm_apply(g1, d.x.data() + 1, mean.data(), invstd.data(), d.weight.data(), d.bias.data(),
                               y1.data());
      const DeviceBuffer dy1 = poisoned_gpu(n1 + 1);
      cuda::batchnorm_apply(ctx, g1, dev(dx) + 1, dev(dmean), dev(dinv), dev(dw), dev(db), dev(dy1) + 1);
      const std::vector<float> got = from_gpu(dy1, n1 + 1);
      CHECK(relative_l2(std::vector<float>(got.begin() + 1, got.end()), y1) <= 1e-5);
    }

    std::vector<float> ref_gw, ref_gb, ref_gx_train;
    reference_backward(d, mean, invstd, ref_gw, ref_gb, ref_gx_train);

    // Eval: gx exact; the sums in double, so only their final float rounding may differ from
    // the exact ones; the CPU's float-lane sums are further off.
    std::vector<float> gx(n), gw(C), gb(C);
    kernels::batchnorm_backward_eval(g, d.x.data(), d.gy.data(), mean.data(), invstd.data(), d.weight.data(),
                                     gx.data(), gw.data(), gb.data());
    {
      const DeviceBuffer dgx = poisoned_gpu(n), dgw = poisoned_gpu(C), dgb = poisoned_gpu(C);
      cuda::batchnorm_backward_eval(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), dev(dgx), dev(dgw),
                                    dev(dgb));
      check_identical(from_gpu(dgx, n), gx, "backward eval: gx");
      const std::vector<float> got_gw = from_gpu(dgw, C), got_gb = from_gpu(dgb, C);
      CHECK(relative_l2(got_gw, ref_gw) <= 1e-7);
      CHECK(relative_l2(got_gb, ref_gb) <= 1e-7);
      CHECK(relative_l2(got_gw, gw) <= 1e-5);
      CHECK(relative_l2(got_gb, gb) <= 1e-5);
      // Nullable outputs: gx alone, gweight alone.
      const DeviceBuffer dgx2 = poisoned_gpu(n), dgw2 = poisoned_gpu(C);
      cuda::batchnorm_backward_eval(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), dev(dgx2), nullptr,
                                    nullptr);
      check_identical(from_gpu(dgx2, n), gx, "backward eval: gx alone");
      cuda::batchnorm_backward_eval(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), nullptr, dev(dgw2),
                                    nullptr);
      check_identical(from_gpu(dgw2, C), got_gw, "backward eval: gweight alone");
    }

    // Train: gx through the batch statistics.
    std::vector<float> gxt(n), gwt(C), gbt(C);
    kernels::batchnorm_backward_train(g, d.x.data(), d.gy.data(), mean.data(), invstd.data(), d.weight.data(),
                                      gxt.data(), gwt.data(), gbt.data());
    {
      const DeviceBuffer dgx = poisoned_gpu(n), dgw = poisoned_gpu(C), dgb = poisoned_gpu(C);
      cuda::batchnorm_backward_train(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), dev(dgx), dev(dgw),
                                     dev(dgb));
      const std::vector<float> got_gx = from_gpu(dgx, n);
      // gx = k (gy - mean(gy) - xhat mean(gy xhat)): with exact sums it matches the exact
      // formula up to the last rounding; the CPU's float-lane sums shift it by ~1e-7 relative.
      // With N * HW = 1 every gx is k * (gy - gy - 0) = 0 up to rounding.
      // With two values per channel gx is ~eps / var of gy (it vanishes for eps = 0): the
      // CPU's float-rounded sums are then visible in it, so the CPU comparison starts at 16.
      if (g.N * g.HW > 1) {
        CHECK(relative_l2(got_gx, ref_gx_train) <= 1e-6);
        if (g.N * g.HW >= 16) CHECK(relative_l2(got_gx, gxt) <= 1e-5);
      } else {
        for (size_t i = 0; i < n; ++i) CHECK(std::abs(got_gx[i]) <= 1e-6);
      }
      CHECK(relative_l2(from_gpu(dgw, C), ref_gw) <= 1e-7);
      CHECK(relative_l2(from_gpu(dgb, C), ref_gb) <= 1e-7);
      CHECK(relative_l2(from_gpu(dgw, C), gwt) <= 1e-5);
      // Deterministic, and the nullable outputs.
      const DeviceBuffer dgx2 = poisoned_gpu(n), dgb2 = poisoned_gpu(C);
      cuda::batchnorm_backward_train(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), dev(dgx2), nullptr,
                                     nullptr);
      check_identical(from_gpu(dgx2, n), got_gx, "backward train: gx rerun, alone");
      cuda::batchnorm_backward_train(ctx, g, dev(dx), dev(dgy), dev(dmean), dev(dinv), dev(dw), nullptr, nullptr,
                                     dev(dgb2));
      check_identical(from_gpu(dgb2, C), from_gpu(dgb, C), "backward train: gbias alone");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loss

TEST_CASE("GPU: softmax cross-entropy matches the CPU", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  struct Case {
    int64_t N, classes;
    float scale, offset;
  };
  const std::vector<Case> cases = {{1, 1, 1, 0},     {1, 10, 3, 0},   {7, 10, 3, 0},    {33, 1000, 4, 0},
                                   {256, 10, 2, 0},  {5, 37, 300, 500}, {3, 100000, 5, 0}, {1000, 100, 1, -50}};
  uint64_t seed = 1000;
  for (const Case& k : cases) {
    INFO(k.N << " x " << k.classes << ", logits scale " << k.scale << " offset " << k.offset);
    const size_t n = static_cast<size_t>(k.N * k.classes), N = static_cast<size_t>(k.N);
    std::vector<float> logits = random_floats(n, ++seed, -k.scale, k.scale);
    for (float& v : logits) v += k.offset;
    std::mt19937_64 rng(++seed);
    std::vector<int64_t> targets(N);
    for (int64_t& t : targets) t = std::uniform_int_distribution<int64_t>(0, k.classes - 1)(rng);
    std::vector<float> probs(n), grad(n);
    const double loss = kernels::softmax_cross_entropy(k.N, k.classes, logits.data(), targets.data(), probs.data());
    kernels::softmax_cross_entropy_backward(k.N, k.classes, logits.data(), targets.data(), grad.data());

    const DeviceBuffer dl = to_gpu(logits), dt = upload(targets), dp = poisoned_gpu(n), dg = poisoned_gpu(n);
    DeviceBuffer drow = upload(std::vector<double>(N, NAN));
    cuda::softmax_cross_entropy(ctx, k.N, k.classes, dev(dl), dt.data_as<int64_t>(), drow.data_as<double>(), dev(dp));
    cuda::softmax_cross_entropy_backward(ctx, k.N, k.classes, dev(dl), dt.data_as<int64_t>(), dev(dg));
    const std::vector<double> rows = download<double>(drow, N);
    double mean = 0;
    for (double r : rows) mean += r;
    mean /= static_cast<double>(k.N);
    INFO("loss: GPU " << mean << ", CPU " << loss);
    // Both in double; exp and the order of the sums may differ in the last bits.
    CHECK(std::abs(mean - loss) <= 1e-12 * std::max(1.0, std::abs(loss)));
    // Floats rounded from doubles that agree to ~1e-15: at most one float ulp (<= 6e-8 below 1).
    double worst_p = 0, worst_g = 0;
    const std::vector<float> gp = from_gpu(dp, n), gg = from_gpu(dg, n);
    for (size_t i = 0; i < n; ++i) {
      worst_p = std::max(worst_p, std::abs(double(gp[i]) - probs[i]));
      worst_g = std::max(worst_g, std::abs(double(gg[i]) - grad[i]));
    }
    CHECK(worst_p <= 1e-7);
    CHECK(worst_g <= 1e-7);
    // Without probabilities.
    cuda::softmax_cross_entropy(ctx, k.N, k.classes, dev(dl), dt.data_as<int64_t>(), drow.data_as<double>(), nullptr);
    CHECK(download<double>(drow, N) == rows);
  }
}

TEST_CASE("GPU: softmax cross-entropy with a target out of range gives NaN for that row only", "[cuda][gpu]") {
  SPADE_REQUIRE_GPU();
  CudaContext& ctx = cuda_context();
  const int64_t N = 3, classes = 10;
  const std::vector<float> logits = random_floats(N * classes, 77);
  const std::vector<int64_t> targets = {4, classes, -1};
  const DeviceBuffer dl = to_gpu(logits), dt = upload(targets), dg = poisoned_gpu(N * classes);
  DeviceBuffer drow = upload(std::vector<double>(N, 0.0));
  cuda::softmax_cross_entropy(ctx, N, classes, dev(dl), dt.data_as<int64_t>(), drow.data_as<double>(), nullptr);
  cuda::softmax_cross_entropy_backward(ctx, N, classes, dev(dl), dt.data_as<int64_t>(), dev(dg));
  const std::vector<double> rows = download<double>(drow, N);
  CHECK(std::isfinite(rows[0]));
  CHECK(std::isnan(rows[1]));
  CHECK(std::isnan(rows[2]));
  const std::vector<float> g = from_gpu(dg, N * classes);
  for (int64_t j = 0; j < classes; ++j) {
    CHECK(std::isfinite(g[j]));
    CHECK(std::isnan(g[classes + j]));
    CHECK(std::isnan(g[2 * classes + j]));
  }
}
