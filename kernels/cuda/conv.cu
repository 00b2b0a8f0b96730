#include "kernels/cuda/conv.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"

namespace spade::cuda {

namespace {

constexpr int kThreads = 256;
// Column buffers (and the gathered output gradients of the weight gradient) of one chunk of
// images stay below this; a single image may exceed it.
constexpr int64_t kWorkspaceBytes = int64_t{256} << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid-stride loops: at most 2^20 blocks (2^28 threads) however large the tensor.
unsigned grid_for(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(total, kThreads), 1 << 20));
}

// 32-bit index arithmetic (much cheaper divisions) whenever every flattened index, plus one
// grid-stride step past it, stays below 2^31.
bool small_indices(std::initializer_list<int64_t> extents) {
  for (int64_t e : extents)
    if (e >= (int64_t{1} << 30)) return false;
  return true;
}

template <typename F>
void with_index_type(bool small, F&& f) {
  if (small)
    f(int32_t{});
  else
    f(int64_t{});
}

bool is_pointwise(const ConvGeom& g) {
  return g.R == 1 && g.S == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 && g.pad_left == 0 &&
         g.pad_bottom == 0 && g.pad_right == 0;
}

int64_t images_per_chunk(int64_t bytes_per_image, int64_t N) {
  return std::max<int64_t>(1, std::min<int64_t>(N, kWorkspaceBytes / std::max<int64_t>(bytes_per_image, 1)));
}

void zero(CudaContext& ctx, float* p, int64_t count, const char* what) {
  if (p && count > 0) SPADE_CUDA_CHECK(cudaMemsetAsync(p, 0, count * sizeof(float), ctx.stream()), what);
}

// The window geometry in the kernels' index type. C is the channel count of a whole image
// (the distance between images), whatever channel range a kernel works on.
template <typename I>
struct Window {
  I C, H, W, R, S, OH, OW, sh, sw, ph, pw, dh, dw;
};

template <typename I>
Window<I> window_of(const ConvGeom& g) {
  return {I(g.C),        I(g.H),        I(g.W),     I(g.R),     I(g.S),     I(g.out_h()), I(g.out_w()),
          I(g.stride_h), I(g.stride_w), I(g.pad_top), I(g.pad_left), I(g.dil_h), I(g.dil_w)};
}

// Output positions o in [lo, hi) whose input coordinate o*stride - pad + offset is in [0, size).
template <typename I>
__device__ void valid_range(I out, I size, I stride, I pad, I offset, I& lo, I& hi) {
  const I a = pad - offset;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  const I b = size - 1 + pad - offset;
  hi = b < 0 ? 0 : b / stride + 1;
  lo = min(lo, out);
  hi = max(lo, min(hi, out));
}

// Fixed shuffle pattern, then the warps' partials in warp order: the same sum every run.
// Valid in thread 0; blockDim.x must be kThreads.
__device__ double block_sum(double v) {
  __shared__ double partial[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? partial[lane] : 0.0;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}

// ---- im2col / col2im ----

// Columns of channels [0, cc) of nb images (x points at the first image's first channel).
// Image-major: ((n, row), p), each image's (cc*R*S, OH*OW) block after the previous one, which
// is what strided-batched GEMMs over images want. Otherwise ((row, n), p): one (cc*R*S, nb*OH*OW)
// matrix whose inner dimension runs over all images (the weight gradient, layer Hessians).
// A thread owns one pixel p of kRowsPerThread consecutive column rows: neighbouring threads
// write neighbouring floats, and the (n, c, r, s) of the next row is a step, not a division
// (integer division would otherwise cost more than the memory traffic).
constexpr int kRowsPerThread = 8;

// One digit of a mixed-radix counter: increments it and reports whether it wrapped to 0.
template <typename I>
__device__ bool wrap(I& digit, I radix) {
  if (++digit < radix) return false;
  digit = 0;
  return true;
}

template <typename I, bool kImageMajor>
__global__ void unfold_kernel(Window<I> g, I cc, I nb, I total, const float* __restrict__ x,
                              float* __restrict__ cols) {
  const I ohw = g.OH * g.OW, rows = cc * g.R * g.S, total_rows = nb * rows;
  const I step = I(blockDim.x) * I(gridDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += step) {
    const I p = i % ohw, t0 = i / ohw * kRowsPerThread;
    const I h0 = (p / g.OW) * g.sh - g.ph, w0 = (p % g.OW) * g.sw - g.pw;
    I n = kImageMajor ? t0 / rows : t0 % nb;
    const I row = kImageMajor ? t0 % rows : t0 / nb;
    I s = row % g.S, r = row / g.S % g.R, c = row / (g.R * g.S);
    const I t1 = min(t0 + I(kRowsPerThread), total_rows);
    for (I t = t0; t < t1; ++t) {
      const I ih = h0 + r * g.dh, iw = w0 + s * g.dw;
      cols[t * ohw + p] = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W ? x[((n * g.C + c) * g.H + ih) * g.W + iw] : 0.f;
      if (kImageMajor) {
        if (wrap(s, g.S) && wrap(r, g.R) && wrap(c, cc)) ++n;
      } else {
        if (wrap(n, nb) && wrap(s, g.S) && wrap(r, g.R)) ++c;
      }
    }
  }
}

void unfold(CudaContext& ctx, const ConvGeom& g, const float* x, int64_t nb, int64_t cc, bool image_major,
            float* cols) {
  const int64_t ohw = g.out_h() * g.out_w(), total_rows = nb * cc * g.R * g.S;
  if (ohw <= 0 || total_rows <= 0) return;
  const int64_t total = ohw * ceil_div(total_rows, kRowsPerThread);  // threads, one per (pixel, row group)
  with_index_type(small_indices({total_rows * ohw, nb * g.C * g.H * g.W}), [&](auto tag) {
    using I = decltype(tag);
    if (image_major)
      unfold_kernel<I, true><<<grid_for(total), kThreads, 0, ctx.stream()>>>(window_of<I>(g), I(cc), I(nb), I(total),
                                                                              x, cols);
    else
      unfold_kernel<I, false><<<grid_for(total), kThreads, 0, ctx.stream()>>>(window_of<I>(g), I(cc), I(nb),
                                                                               I(total), x, cols);
  });
  SPADE_CUDA_CHECK_LAUNCH("unfolding convolution inputs into columns");
}

// gx of nb images from image-major columns of all C channels. Each input pixel gathers its
// (r, s) contributions in order (the CPU's col2im order), no atomics: deterministic.
template <typename I>
__global__ void fold_kernel(Window<I> g, I total, const float* __restrict__ cols, float* __restrict__ gx) {
  const I ohw = g.OH * g.OW;
  const I step = I(blockDim.x) * I(gridDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += step) {
    const I iw = i % g.W, t = i / g.W;
    const I ih = t % g.H, nc = t / g.H;  // n * C + c
    const float* base = cols + nc * g.R * g.S * ohw;
    float acc = 0.f;
    for (I r = 0; r < g.R; ++r) {
      const I th = ih + g.ph - r * g.dh;
      if (th < 0) break;
      const I oh = th / g.sh;
      if (oh * g.sh != th || oh >= g.OH) continue;
      const float* row = base + r * g.S * ohw + oh * g.OW;
      for (I s = 0; s < g.S; ++s) {
        const I tw = iw + g.pw - s * g.dw;
        if (tw < 0) break;
        const I ow = tw / g.sw;
        if (ow * g.sw != tw || ow >= g.OW) continue;
        acc += row[s * ohw + ow];
      }
    }
    gx[i] = acc;
  }
}

void fold(CudaContext& ctx, const ConvGeom& g, const float* cols, int64_t nb, float* gx) {
  const int64_t total = nb * g.C * g.H * g.W;
  if (total <= 0) return;
  with_index_type(small_indices({total, nb * g.C * g.R * g.S * g.out_h() * g.out_w()}), [&](auto tag) {
    using I = decltype(tag);
    fold_kernel<I><<<grid_for(total), kThreads, 0, ctx.stream()>>>(window_of<I>(g), I(total), cols, gx);
  });
  SPADE_CUDA_CHECK_LAUNCH("folding columns into the input gradient");
}

// ---- bias ----

template <typename I>
__global__ void fill_bias_kernel(I total, I ohw, I K, const float* __restrict__ bias, float* __restrict__ y) {
  const I step = I(blockDim.x) * I(gridDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += step) y[i] = bias[(i / ohw) % K];
}

// One block per output channel: sum of gy over images and pixels, in double.
template <typename I>
__global__ void bias_grad_kernel(I N, I K, I ohw, const float* __restrict__ gy, float* __restrict__ gb) {
  const I k = blockIdx.x, count = N * ohw;
  double acc = 0;
  for (I i = threadIdx.x; i < count; i += kThreads) acc += gy[((i / ohw) * K + k) * ohw + i % ohw];
  acc = block_sum(acc);
  if (threadIdx.x == 0) gb[k] = static_cast<float>(acc);
}

void bias_grad(CudaContext& ctx, const ConvGeom& g, const float* gy, float* gb) {
  const int64_t ohw = g.out_h() * g.out_w();
  with_index_type(small_indices({g.N * g.K * ohw}), [&](auto tag) {
    using I = decltype(tag);
    bias_grad_kernel<I><<<static_cast<unsigned>(g.K), kThreads, 0, ctx.stream()>>>(I(g.N), I(g.K), I(ohw), gy, gb);
  });
  SPADE_CUDA_CHECK_LAUNCH("summing the bias gradient");
}

// ---- depthwise: direct kernels, output channel k reads input channel k / m ----

// One thread per output element; taps added in (r, s) order after the bias, as on the CPU.
template <typename I>
__global__ void dw_forward_kernel(Window<I> g, I K, I m, I total, const float* __restrict__ x,
                                  const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y) {
  const I step = I(blockDim.x) * I(gridDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += step) {
    const I ow = i % g.OW, t = i / g.OW;
    const I oh = t % g.OH, nk = t / g.OH;
    const I k = nk % K, n = nk / K;
    const float* in = x + (n * g.C + k / m) * g.H * g.W;
    const float* wk = w + k * g.R * g.S;
    float acc = bias ? bias[k] : 0.f;
    for (I r = 0; r < g.R; ++r) {
      const I ih = oh * g.sh - g.ph + r * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      for (I s = 0; s < g.S; ++s) {
        const I iw = ow * g.sw - g.pw + s * g.dw;
        if (iw < 0 || iw >= g.W) continue;
        acc += wk[r * g.S + s] * in[ih * g.W + iw];
      }
    }
    y[i] = acc;
  }
}

// One thread per input pixel gathering (k, r, s) contributions in the CPU's order; no atomics.
template <typename I>
__global__ void dw_backward_input_kernel(Window<I> g, I K, I m, I total, const float* __restrict__ gy,
                                         const float* __restrict__ w, float* __restrict__ gx) {
  const I ohw = g.OH * g.OW;
  const I step = I(blockDim.x) * I(gridDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += step) {
    const I iw = i % g.W, t = i / g.W;
    const I ih = t % g.H, nc = t / g.H;
    const I c = nc % g.C, n = nc / g.C;
    float acc = 0.f;
    for (I k = c * m; k < (c + 1) * m; ++k) {
      const float* gout = gy + (n * K + k) * ohw;
      const float* wk = w + k * g.R * g.S;
      for (I r = 0; r < g.R; ++r) {
        const I th = ih + g.ph - r * g.dh;
        if (th < 0) break;
        const I oh = th / g.sh;
        if (oh * g.sh != th || oh >= g.OH) continue;
        const float* orow = gout + oh * g.OW;
        for (I s = 0; s < g.S; ++s) {
          const I tw = iw + g.pw - s * g.dw;
          if (tw < 0) break;
          const I ow = tw / g.sw;
          if (ow * g.sw != tw || ow >= g.OW) continue;
          acc += wk[r * g.S + s] * orow[ow];
        }
      }
    }
    gx[i] = acc;
  }
}

// One block per weight (k, r, s), (r, s) fastest so the blocks of one channel share its planes
// in L2. Each thread sums float products over a fixed set of (image, pixel) in double, then a
// fixed-order block reduction: deterministic.
template <typename I>
__global__ void dw_params_kernel(Window<I> g, I N, I K, I m, const float* __restrict__ x,
                                 const float* __restrict__ gy, float* __restrict__ gw) {
  const I rs = blockIdx.x % (g.R * g.S), k = blockIdx.x / (g.R * g.S);
  const I r = rs / g.S, s = rs % g.S, c = k / m;
  I oh0, oh1, ow0, ow1;
  valid_range<I>(g.OH, g.H, g.sh, g.ph, r * g.dh, oh0, oh1);
  valid_range<I>(g.OW, g.W, g.sw, g.pw, s * g.dw, ow0, ow1);
  const I nw = ow1 - ow0, per_image = (oh1 - oh0) * nw, count = N * per_image;
  double acc = 0;
  for (I i = threadIdx.x; i < count; i += kThreads) {
    const I n = i / per_image, q = i % per_image;
    const I oh = oh0 + q / nw, ow = ow0 + q % nw;
    const float gv = gy[((n * K + k) * g.OH + oh) * g.OW + ow];
    const float xv = x[((n * g.C + c) * g.H + oh * g.sh - g.ph + r * g.dh) * g.W + ow * g.sw - g.pw + s * g.dw];
    acc += static_cast<double>(gv * xv);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) gw[blockIdx.x] = static_cast<float>(acc);
}

bool dw_small(const ConvGeom& g) { return small_indices({g.N * g.C * g.H * g.W, g.N * g.K * g.out_h() * g.out_w()}); }

// ---- dense and grouped: im2col + cuBLAS ----

// Offsets of one GEMM operand for (image n, group gi) of a chunk: n * per_image + gi * per_group.
struct Operand {
  const float* p;
  int64_t per_image, per_group;
};

// Every (image, group) product of a chunk: the larger of the two counts becomes the batch of one
// strided-batched call and the smaller is looped over (batch 1 grouped convs: one call).
void gemm_images_groups(CudaContext& ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, Operand A, Operand B,
                        float* C, int64_t c_image, int64_t c_group, int64_t nb, int64_t groups, bool accumulate) {
  if (nb >= groups) {
    for (int64_t gi = 0; gi < groups; ++gi)
      gemm_strided_batched(ctx, ta, tb, M, N, K, A.p + gi * A.per_group, A.per_image, B.p + gi * B.per_group,
                           B.per_image, C + gi * c_group, c_image, nb, accumulate);
  } else {
    for (int64_t n = 0; n < nb; ++n)
      gemm_strided_batched(ctx, ta, tb, M, N, K, A.p + n * A.per_image, A.per_group, B.p + n * B.per_image,
                           B.per_group, C + n * c_image, c_group, groups, accumulate);
  }
}

}  // namespace

void im2col_batch(CudaContext& ctx, const ConvGeom& g, const float* x, int64_t c0, float* cols) {
  if (g.N <= 0 || g.out_h() <= 0 || g.out_w() <= 0) return;
  unfold(ctx, g, x + c0 * g.H * g.W, g.N, g.cin_per_group(), false, cols);
}

void conv2d_forward(CudaContext& ctx, const ConvGeom& g, const float* x, const float* w, const float* bias,
                    float* y) {
  const int64_t OHW = g.out_h() * g.out_w();
  if (g.N <= 0 || g.K <= 0 || g.out_h() <= 0 || g.out_w() <= 0) return;
  if (g.depthwise()) {
    const int64_t total = g.N * g.K * OHW;
    with_index_type(dw_small(g), [&](auto tag) {
      using I = decltype(tag);
      dw_forward_kernel<I><<<grid_for(total), kThreads, 0, ctx.stream()>>>(window_of<I>(g), I(g.K), I(g.K / g.C),
                                                                            I(total), x, w, bias, y);
    });
    SPADE_CUDA_CHECK_LAUNCH("depthwise convolution forward");
    return;
  }
  const int64_t HW = g.H * g.W, Kg = g.cout_per_group(), rows = g.col_rows();
  // The bias goes in first and the products are accumulated onto it.
  if (bias) {
    const int64_t total = g.N * g.K * OHW;
    with_index_type(small_indices({total}), [&](auto tag) {
      using I = decltype(tag);
      fill_bias_kernel<I><<<grid_for(total), kThreads, 0, ctx.stream()>>>(I(total), I(OHW), I(g.K), bias, y);
    });
    SPADE_CUDA_CHECK_LAUNCH("broadcasting the convolution bias");
  }
  const Operand weights{w, 0, Kg * rows};
  if (is_pointwise(g)) {  // each image already is its (C, H*W) column matrix
    gemm_images_groups(ctx, false, false, Kg, OHW, rows, weights, {x, g.C * HW, rows * HW}, y, g.K * OHW, Kg * OHW,
                       g.N, g.groups, bias != nullptr);
    return;
  }
  const int64_t per_image = g.C * g.R * g.S * OHW;
  const int64_t chunk = images_per_chunk(per_image * sizeof(float), g.N);
  DeviceBuffer cols = ctx.allocate(chunk * per_image * sizeof(float));
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    unfold(ctx, g, x + n0 * g.C * HW, nb, g.C, true, cols.data_as<float>());
    gemm_images_groups(ctx, false, false, Kg, OHW, rows, weights, {cols.data_as<float>(), per_image, rows * OHW},
                       y + n0 * g.K * OHW, g.K * OHW, Kg * OHW, nb, g.groups, bias != nullptr);
  }
}

void conv2d_backward_input(CudaContext& ctx, const ConvGeom& g, const float* gy, const float* w, float* gx) {
  const int64_t HW = g.H * g.W, OHW = g.out_h() * g.out_w();
  if (g.N <= 0 || g.C * HW <= 0) return;
  if (g.K <= 0 || g.out_h() <= 0 || g.out_w() <= 0) {
    zero(ctx, gx, g.N * g.C * HW, "zeroing the input gradient of an empty convolution");
    return;
  }
  if (g.depthwise()) {
    const int64_t total = g.N * g.C * HW;
    with_index_type(dw_small(g), [&](auto tag) {
      using I = decltype(tag);
      dw_backward_input_kernel<I><<<grid_for(total), kThreads, 0, ctx.stream()>>>(
          window_of<I>(g), I(g.K), I(g.K / g.C), I(total), gy, w, gx);
    });
    SPADE_CUDA_CHECK_LAUNCH("depthwise convolution input gradient");
    return;
  }
  const int64_t Kg = g.cout_per_group(), rows = g.col_rows();
  const Operand weights{w, 0, Kg * rows};
  if (is_pointwise(g)) {
    gemm_images_groups(ctx, true, false, rows, OHW, Kg, weights, {gy, g.K * OHW, Kg * OHW}, gx, g.C * HW, rows * HW,
                       g.N, g.groups, false);
    return;
  }
  const int64_t per_image = g.C * g.R * g.S * OHW;
  const int64_t chunk = images_per_chunk(per_image * sizeof(float), g.N);
  DeviceBuffer cols = ctx.allocate(chunk * per_image * sizeof(float));
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    gemm_images_groups(ctx, true, false, rows, OHW, Kg, weights, {gy + n0 * g.K * OHW, g.K * OHW, Kg * OHW},
                       cols.data_as<float>(), per_image, rows * OHW, nb, g.groups, false);
    fold(ctx, g, cols.data_as<float>(), nb, gx + n0 * g.C * HW);
  }
}

void conv2d_backward_params(CudaContext& ctx, const ConvGeom& g, const float* x, const float* gy, float* gw,
                            float* gb) {
  const int64_t OHW = g.out_h() * g.out_w(), HW = g.H * g.W;
  const int64_t Kg = g.cout_per_group(), rows = g.col_rows();
  if (g.K <= 0) return;
  if (g.N <= 0 || g.out_h() <= 0 || g.out_w() <= 0) {
    zero(ctx, gw, g.K * rows, "zeroing the weight gradient of an empty convolution");
    zero(ctx, gb, g.K, "zeroing the bias gradient of an empty convolution");
    return;
  }
  if (gb) bias_grad(ctx, g, gy, gb);
  if (g.depthwise()) {
    with_index_type(dw_small(g), [&](auto tag) {
      using I = decltype(tag);
      dw_params_kernel<I><<<static_cast<unsigned>(g.K * g.R * g.S), kThreads, 0, ctx.stream()>>>(
          window_of<I>(g), I(g.N), I(g.K), I(g.K / g.C), x, gy, gw);
    });
    SPADE_CUDA_CHECK_LAUNCH("depthwise convolution weight gradient");
    return;
  }
  // gw_group = sum over images of gy_n cols_n^T. The chunk's columns are laid out (rows, nb*OHW)
  // and its output gradients (K, nb*OHW), so one GEMM per group (all groups in one batched call)
  // sums the whole chunk with the images inside its inner dimension; chunks are added in order.
  // With one image per chunk both layouts are the tensors themselves (no copies for 1x1 convs).
  const bool pw = is_pointwise(g);
  const int64_t cols_per_image = g.C * g.R * g.S * OHW;
  const int64_t chunk = images_per_chunk((cols_per_image + g.K * OHW) * sizeof(float), g.N);
  DeviceBuffer cols_buf, gy_buf;
  if (!pw || chunk > 1) cols_buf = ctx.allocate(chunk * cols_per_image * sizeof(float));
  if (chunk > 1) gy_buf = ctx.allocate(chunk * g.K * OHW * sizeof(float));
  // gy viewed as a 1x1 convolution input with K channels: unfolding it is the (n, k) -> (k, n) transpose.
  ConvGeom gyg;
  gyg.C = g.K;
  gyg.H = g.out_h();
  gyg.W = g.out_w();
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0), L = nb * OHW;
    const float* cols = x + n0 * g.C * HW;
    if (!pw || nb > 1) {
      unfold(ctx, g, cols, nb, g.C, false, cols_buf.data_as<float>());
      cols = cols_buf.data_as<float>();
    }
    const float* gyt = gy + n0 * g.K * OHW;
    if (nb > 1) {
      unfold(ctx, gyg, gyt, nb, g.K, false, gy_buf.data_as<float>());
      gyt = gy_buf.data_as<float>();
    }
    gemm_strided_batched(ctx, false, true, Kg, rows, L, gyt, Kg * L, cols, rows * L, gw, Kg * rows, g.groups, n0 > 0);
  }
}

}  // namespace spade::cuda
