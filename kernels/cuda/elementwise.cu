#include "kernels/cuda/elementwise.h"

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"

namespace spade::cuda {

namespace {

constexpr int kThreads = kThreadsPerBlock;

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// y[i] = f(i, a[i], b[i]) for the first `Inputs` of a, b. With Vec the bulk goes through float4
// loads and stores (all pointers 16-byte aligned), the last n % 4 elements one by one. Neither
// input is __restrict__: y may be a (in-place activations).
template <int Inputs, bool Vec, class F>
__global__ void map_kernel(int64_t n, const float* a, const float* b, float* y, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if constexpr (Vec) {
    const int64_t n4 = n / 4;
    for (int64_t k = t; k < n4; k += stride) {
      float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
      if constexpr (Inputs > 0) va = reinterpret_cast<const float4*>(a)[k];
      if constexpr (Inputs > 1) vb = reinterpret_cast<const float4*>(b)[k];
      const int64_t i = 4 * k;
      reinterpret_cast<float4*>(y)[k] =
          make_float4(f(i, va.x, vb.x), f(i + 1, va.y, vb.y), f(i + 2, va.z, vb.z), f(i + 3, va.w, vb.w));
    }
    done = 4 * n4;
  }
  for (int64_t i = done + t; i < n; i += stride) {
    float va = 0.f, vb = 0.f;
    if constexpr (Inputs > 0) va = a[i];
    if constexpr (Inputs > 1) vb = b[i];
    y[i] = f(i, va, vb);
  }
}

template <int Inputs, class F>
void launch_map(CudaContext& ctx, int64_t n, const float* a, const float* b, float* y, F f, const char* what) {
  if (n <= 0) return;
  if (aligned16(a) && aligned16(b) && aligned16(y)) {
    map_kernel<Inputs, true><<<grid_blocks(n / 4 + 1), kThreads, 0, ctx.stream()>>>(n, a, b, y, f);
  } else {
    map_kernel<Inputs, false><<<grid_blocks(n), kThreads, 0, ctx.stream()>>>(n, a, b, y, f);
  }
  SPADE_CUDA_CHECK_LAUNCH(what);
}

struct FillOp {
  float value;
  __device__ float operator()(int64_t, float, float) const { return value; }
};

// Written as comparisons, not fminf/fmaxf, so that NaN propagates exactly as std::min/std::max
// do on the CPU (fmaxf(NaN, lo) would return lo).
struct ClampOp {
  float lo, hi;
  __device__ float operator()(int64_t, float x, float) const {
    const float v = x < lo ? lo : x;
    return hi < v ? hi : v;
  }
};

struct ClampBackwardOp {
  float lo, hi;
  __device__ float operator()(int64_t, float x, float gy) const { return (x > lo && x < hi) ? gy : 0.f; }
};

struct AddOp {
  __device__ float operator()(int64_t, float a, float b) const { return a + b; }
};

__host__ __device__ inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The CPU's mask: element i is kept iff the top 53 bits of splitmix64(base ^ i), as a double in
// [0, 1), are >= p.
struct DropoutOp {
  uint64_t base;
  float p, scale;
  __device__ float operator()(int64_t i, float x, float) const {
    const double u = static_cast<double>(splitmix64(base ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    return u >= p ? x * scale : 0.f;
  }
};

// 32-bit index arithmetic when every index fits: 64-bit division is several times slower.
template <class I>
__global__ void shortcut_forward_kernel(I total, I C, I H, I W, I OC, I OH, I OW, I pad, I stride, const float* x,
                                        float* y) {
  const I step = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += step) {
    const I ow = o % OW, oh = (o / OW) % OH, plane = o / (OW * OH);
    const I oc = plane % OC, n = plane / OC, c = oc - pad;
    y[o] = (c < 0 || c >= C) ? 0.f : x[((n * C + c) * H + oh * stride) * W + ow * stride];
  }
}

template <class I>
__global__ void shortcut_backward_kernel(I total, I C, I H, I W, I OC, I OH, I OW, I pad, I stride,
                                         const float* gy, float* gx) {
  const I step = I(gridDim.x) * blockDim.x;
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const I w = i % W, h = (i / W) % H, plane = i / (W * H);
    const I c = plane % C, n = plane / C;
    gx[i] = (h % stride == 0 && w % stride == 0)
                ? gy[((n * OC + c + pad) * OH + h / stride) * OW + w / stride]
                : 0.f;
  }
}

// Also leaves room for the grid-stride increment past the last index.
bool fits_int32(int64_t v) { return v <= INT32_MAX - kMaxGridBlocks * kThreads; }

}  // namespace

void fill(CudaContext& ctx, int64_t n, float value, float* y) {
  launch_map<0>(ctx, n, nullptr, nullptr, y, FillOp{value}, "fill");
}

void clamp_forward(CudaContext& ctx, int64_t n, const float* x, float lo, float hi, float* y) {
  launch_map<1>(ctx, n, x, nullptr, y, ClampOp{lo, hi}, "clamp forward");
}

void clamp_backward(CudaContext& ctx, int64_t n, const float* x, const float* gy, float lo, float hi, float* gx) {
  launch_map<2>(ctx, n, x, gy, gx, ClampBackwardOp{lo, hi}, "clamp backward");
}

void add_forward(CudaContext& ctx, int64_t n, const float* a, const float* b, float* y) {
  launch_map<2>(ctx, n, a, b, y, AddOp{}, "add");
}

void shortcut_forward(CudaContext& ctx, const ShortcutGeom& g, const float* x, float* y) {
  const int64_t OC = g.out_c(), OH = g.out_h(), OW = g.out_w();
  const int64_t total = g.N * OC * OH * OW;
  if (total <= 0) return;
  if (fits_int32(total) && fits_int32(g.N * g.C * g.H * g.W)) {
    using I = int32_t;
    shortcut_forward_kernel<I><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(
        I(total), I(g.C), I(g.H), I(g.W), I(OC), I(OH), I(OW), I(g.pad), I(g.stride), x, y);
  } else {
    shortcut_forward_kernel<int64_t><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(
        total, g.C, g.H, g.W, OC, OH, OW, g.pad, g.stride, x, y);
  }
  SPADE_CUDA_CHECK_LAUNCH("shortcut forward");
}

void shortcut_backward(CudaContext& ctx, const ShortcutGeom& g, const float* gy, float* gx) {
  const int64_t OC = g.out_c(), OH = g.out_h(), OW = g.out_w();
  const int64_t total = g.N * g.C * g.H * g.W;
  if (total <= 0) return;
  if (fits_int32(total) && fits_int32(g.N * OC * OH * OW)) {
    using I = int32_t;
    shortcut_backward_kernel<I><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(
        I(total), I(g.C), I(g.H), I(g.W), I(OC), I(OH), I(OW), I(g.pad), I(g.stride), gy, gx);
  } else {
    shortcut_backward_kernel<int64_t><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(
        total, g.C, g.H, g.W, OC, OH, OW, g.pad, g.stride, gy, gx);
  }
  SPADE_CUDA_CHECK_LAUNCH("shortcut backward");
}

void dropout_apply(CudaContext& ctx, int64_t n, const float* x, float p, uint64_t seed, float* y) {
  if (n <= 0) return;
  if (p <= 0.f) {
    if (y != x)
      SPADE_CUDA_CHECK(cudaMemcpyAsync(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice, ctx.stream()),
                       "copying the input of a dropout with p = 0");
    return;
  }
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  launch_map<1>(ctx, n, x, nullptr, y, DropoutOp{splitmix64(seed), p, scale}, "dropout");
}

namespace {

struct AddBiasOp {
  const float* bias;
  int64_t cols;
  __device__ float operator()(int64_t i, float y, float) const { return y + bias[i % cols]; }
};

// Block: 32 columns x kRowGroups row groups. Each thread sums its column over every
// kRowGroups-th row in double, then the groups are added in a fixed order: deterministic.
constexpr int kRowGroups = 8;

__global__ void column_sums_kernel(int64_t rows, int64_t cols, const float* __restrict__ x,
                                   float* __restrict__ out) {
  __shared__ double part[kRowGroups][32];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  double acc = 0;
  if (c < cols) {
#pragma unroll 4
    for (int64_t r = threadIdx.y; r < rows; r += kRowGroups) acc += x[r * cols + c];
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double s = part[0][threadIdx.x];
    for (int k = 1; k < kRowGroups; ++k) s += part[k][threadIdx.x];
    out[c] = static_cast<float>(s);
  }
}

}  // namespace

void add_bias_rows(CudaContext& ctx, int64_t rows, int64_t cols, const float* bias, float* y) {
  if (rows <= 0 || cols <= 0) return;
  // The bias is indexed per element, so only y goes through the vector path (aligned16(nullptr)).
  launch_map<1>(ctx, rows * cols, y, nullptr, y, AddBiasOp{bias, cols}, "adding a bias to every row");
}

void column_sums(CudaContext& ctx, int64_t rows, int64_t cols, const float* x, float* out) {
  if (cols <= 0) return;
  const int64_t blocks = (cols + 31) / 32;
  column_sums_kernel<<<static_cast<unsigned>(blocks), dim3(32, kRowGroups), 0, ctx.stream()>>>(rows, cols, x, out);
  SPADE_CUDA_CHECK_LAUNCH("column sums");
}

}  // namespace spade::cuda
