#include "kernels/cuda/pool.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"

// Every kernel computes one output (forward) or one input element (backward) per thread, with
// the CPU's loops in the CPU's order: the forward passes are bit-identical to the CPU, and the
// backward passes GATHER, each input element adding the contributions of the windows that cover
// it in the CPU's (oh, ow) order, starting from 0 as the CPU's scatter does, so they are
// bit-identical too (and deterministic without atomics). Only the global average's sum is
// reduced in a different order (in double).

namespace spade::cuda {

namespace {

constexpr int kThreads = kThreadsPerBlock;

// 32-bit index arithmetic (much cheaper division) when every index, plus the grid-stride
// increment past the last one, fits.
bool fits_int32(int64_t v) { return v <= INT32_MAX - kMaxGridBlocks * kThreads; }

template <class I>
struct Geom {
  I planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, ph_end, pw_end;  // padding before and after
  bool count_include_pad;
};

template <class I>
Geom<I> geom_as(const PoolGeom& g) {
  return Geom<I>{I(g.N * g.C), I(g.H), I(g.W), I(g.out_h()), I(g.out_w()), I(g.kh), I(g.kw),
                 I(g.stride_h), I(g.stride_w), I(g.pad_top), I(g.pad_left), I(g.pad_bottom), I(g.pad_right),
                 g.count_include_pad};
}

// The outputs along one axis whose window covers input position h: o * s - p <= h < o * s - p + k.
template <class I>
__device__ inline void covering(I h, I s, I p, I k, I out, I& lo, I& hi) {
  const I q = h + p - k;
  lo = q < 0 ? I(0) : q / s + 1;
  hi = min((h + p) / s, out - 1);
}

template <class I>
__device__ inline void split_output(I o, const Geom<I>& g, I& pl, I& oh, I& ow) {
  ow = o % g.OW;
  const I t = o / g.OW;
  oh = t % g.OH;
  pl = t / g.OH;
}

template <class I>
__global__ void maxpool_forward_kernel(Geom<I> g, const float* __restrict__ x, float* __restrict__ y) {
  const I total = g.planes * g.OH * g.OW, step = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += step) {
    I pl, oh, ow;
    split_output(o, g, pl, oh, ow);
    const I hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    const I h0 = max(hs, I(0)), h1 = min(hs + g.kh, g.H), w0 = max(ws, I(0)), w1 = min(ws + g.kw, g.W);
    const float* in = x + pl * g.H * g.W;
    float m = -INFINITY;
    for (I h = h0; h < h1; ++h)
      for (I w = w0; w < w1; ++w) {
        const float v = in[h * g.W + w];
        if (v > m || isnan(v)) m = v;
      }
    y[o] = m;
  }
}

// The CPU backward's choice for each window: its first maximum, or its last NaN; -1 for an
// empty window.
template <class I>
__global__ void maxpool_argmax_kernel(Geom<I> g, const float* __restrict__ x, int32_t* __restrict__ arg) {
  const I total = g.planes * g.OH * g.OW, step = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += step) {
    I pl, oh, ow;
    split_output(o, g, pl, oh, ow);
    const I hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    const I h0 = max(hs, I(0)), h1 = min(hs + g.kh, g.H), w0 = max(ws, I(0)), w1 = min(ws + g.kw, g.W);
    const float* in = x + pl * g.H * g.W;
    float m = -INFINITY;
    int32_t a = -1;
    for (I h = h0; h < h1; ++h)
      for (I w = w0; w < w1; ++w) {
        const float v = in[h * g.W + w];
        if (a < 0 || v > m || isnan(v)) {
          m = v;
          a = static_cast<int32_t>(h * g.W + w);
        }
      }
    arg[o] = a;
  }
}

template <class I>
__global__ void maxpool_backward_kernel(Geom<I> g, const int32_t* __restrict__ arg, const float* __restrict__ gy,
                                        float* __restrict__ gx) {
  const I total = g.planes * g.H * g.W, step = I(gridDim.x) * blockDim.x;
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const I w = idx % g.W, t = idx / g.W, h = t % g.H, pl = t / g.H;
    const int32_t local = static_cast<int32_t>(h * g.W + w);
    I oh0, oh1, ow0, ow1;
    covering(h, g.sh, g.ph, g.kh, g.OH, oh0, oh1);
    covering(w, g.sw, g.pw, g.kw, g.OW, ow0, ow1);
    float acc = 0.f;
    for (I oh = oh0; oh <= oh1; ++oh)
      for (I ow = ow0; ow <= ow1; ++ow) {
        const I o = (pl * g.OH + oh) * g.OW + ow;
        if (arg[o] == local) acc += gy[o];
      }
    gx[idx] = acc;
  }
}

// PyTorch's window along one axis, as the CPU's window(): clipped bounds and the divisor's
// extent, which counts the padding but not a ceil-mode overrun past it.
template <class I>
struct Window {
  I lo, hi, padded;
};

template <class I>
__device__ inline Window<I> window(I o, I s, I p, I p_end, I k, I in) {
  const I lo = o * s - p;
  const I hi = min(lo + k, in + p_end);
  return {max(lo, I(0)), min(hi, in), hi - lo};
}

template <class I>
__device__ inline I divisor(const Geom<I>& g, const Window<I>& wh, const Window<I>& ww) {
  return g.count_include_pad ? wh.padded * ww.padded : (wh.hi - wh.lo) * (ww.hi - ww.lo);
}

template <class I>
__global__ void avgpool_forward_kernel(Geom<I> g, const float* __restrict__ x, float* __restrict__ y) {
  const I total = g.planes * g.OH * g.OW, step = I(gridDim.x) * blockDim.x;
  for (I o = I(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += step) {
    I pl, oh, ow;
    split_output(o, g, pl, oh, ow);
    const Window<I> wh = window(oh, g.sh, g.ph, g.ph_end, g.kh, g.H);
    const Window<I> ww = window(ow, g.sw, g.pw, g.pw_end, g.kw, g.W);
    const float* in = x + pl * g.H * g.W;
    float sum = 0;
    for (I h = wh.lo; h < wh.hi; ++h)
      for (I w = ww.lo; w < ww.hi; ++w) sum += in[h * g.W + w];
    const I div = divisor(g, wh, ww);
    y[o] = div > 0 ? sum / static_cast<float>(div) : 0.f;
  }
}

template <class I>
__global__ void avgpool_backward_kernel(Geom<I> g, const float* __restrict__ gy, float* __restrict__ gx) {
  const I total = g.planes * g.H * g.W, step = I(gridDim.x) * blockDim.x;
  for (I idx = I(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const I w = idx % g.W, t = idx / g.W, h = t % g.H, pl = t / g.H;
    I oh0, oh1, ow0, ow1;
    covering(h, g.sh, g.ph, g.kh, g.OH, oh0, oh1);
    covering(w, g.sw, g.pw, g.kw, g.OW, ow0, ow1);
    float acc = 0.f;
    for (I oh = oh0; oh <= oh1; ++oh) {
      const Window<I> wh = window(oh, g.sh, g.ph, g.ph_end, g.kh, g.H);
      for (I ow = ow0; ow <= ow1; ++ow) {
        const I div = divisor(g, wh, window(ow, g.sw, g.pw, g.pw_end, g.kw, g.W));
        if (div <= 0) continue;
        acc += gy[(pl * g.OH + oh) * g.OW + ow] / static_cast<float>(div);
      }
    }
    gx[idx] = acc;
  }
}

// One warp per plane; lanes sum in double, combined by a fixed shuffle tree.
__global__ void global_avgpool_forward_kernel(int64_t planes, int64_t hw, const float* __restrict__ x,
                                              float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t p = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; p < planes; p += warps) {
    const float* in = x + p * hw;
    double s = 0;
    for (int64_t i = lane; i < hw; i += 32) s += in[i];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) y[p] = static_cast<float>(s / static_cast<double>(hw));
  }
}

template <class I>
__global__ void global_avgpool_backward_kernel(I planes, I hw, const float* __restrict__ gy, float* __restrict__ gx) {
  const I total = planes * hw, step = I(gridDim.x) * blockDim.x;
  const float div = static_cast<float>(hw);
  for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) gx[i] = gy[i / hw] / div;
}

int64_t in_size(const PoolGeom& g) { return g.N * g.C * g.H * g.W; }
int64_t out_size(const PoolGeom& g) { return g.N * g.C * g.out_h() * g.out_w(); }
bool small(const PoolGeom& g) { return fits_int32(in_size(g)) && fits_int32(out_size(g)); }

}  // namespace

void maxpool2d_forward(CudaContext& ctx, const PoolGeom& g, const float* x, float* y) {
  const int64_t total = out_size(g);
  if (total <= 0) return;
  if (small(g))
    maxpool_forward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int32_t>(g), x, y);
  else
    maxpool_forward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int64_t>(g), x, y);
  SPADE_CUDA_CHECK_LAUNCH("max pooling forward");
}

void maxpool2d_backward(CudaContext& ctx, const PoolGeom& g, const float* x, const float* gy, float* gx) {
  const int64_t outs = out_size(g), ins = in_size(g);
  if (ins <= 0) return;
  if (g.H * g.W > INT32_MAX)
    throw Error("max pooling backward: a plane of " + std::to_string(g.H) + "x" + std::to_string(g.W) +
                " values is too large (at most 2^31 per plane)");
  // The window's choice is found once per output, so the gather only compares indices.
  DeviceBuffer arg = ctx.allocate(static_cast<size_t>(std::max<int64_t>(outs, 1)) * sizeof(int32_t));
  int32_t* a = arg.data_as<int32_t>();
  if (small(g)) {
    const Geom<int32_t> gi = geom_as<int32_t>(g);
    if (outs > 0) maxpool_argmax_kernel<<<grid_blocks(outs), kThreads, 0, ctx.stream()>>>(gi, x, a);
    SPADE_CUDA_CHECK_LAUNCH("max pooling backward (window maxima)");
    maxpool_backward_kernel<<<grid_blocks(ins), kThreads, 0, ctx.stream()>>>(gi, a, gy, gx);
  } else {
    const Geom<int64_t> gl = geom_as<int64_t>(g);
    if (outs > 0) maxpool_argmax_kernel<<<grid_blocks(outs), kThreads, 0, ctx.stream()>>>(gl, x, a);
    SPADE_CUDA_CHECK_LAUNCH("max pooling backward (window maxima)");
    maxpool_backward_kernel<<<grid_blocks(ins), kThreads, 0, ctx.stream()>>>(gl, a, gy, gx);
  }
  SPADE_CUDA_CHECK_LAUNCH("max pooling backward");
}

void avgpool2d_forward(CudaContext& ctx, const PoolGeom& g, const float* x, float* y) {
  const int64_t total = out_size(g);
  if (total <= 0) return;
  if (small(g))
    avgpool_forward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int32_t>(g), x, y);
  else
    avgpool_forward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int64_t>(g), x, y);
  SPADE_CUDA_CHECK_LAUNCH("average pooling forward");
}

void avgpool2d_backward(CudaContext& ctx, const PoolGeom& g, const float* gy, float* gx) {
  const int64_t total = in_size(g);
  if (total <= 0) return;
  if (small(g))
    avgpool_backward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int32_t>(g), gy, gx);
  else
    avgpool_backward_kernel<<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(geom_as<int64_t>(g), gy, gx);
  SPADE_CUDA_CHECK_LAUNCH("average pooling backward");
}

void global_avgpool_forward(CudaContext& ctx, int64_t planes, int64_t hw, const float* x, float* y) {
  if (planes <= 0) return;
  const int64_t warps_per_block = kThreads / 32;
  const int blocks = static_cast<int>(std::clamp<int64_t>((planes + warps_per_block - 1) / warps_per_block, 1, kMaxGridBlocks));
  global_avgpool_forward_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(planes, hw, x, y);
  SPADE_CUDA_CHECK_LAUNCH("global average pooling forward");
}

void global_avgpool_backward(CudaContext& ctx, int64_t planes, int64_t hw, const float* gy, float* gx) {
  const int64_t total = planes * hw;
  if (total <= 0) return;
  if (fits_int32(total))
    global_avgpool_backward_kernel<int32_t><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(
        static_cast<int32_t>(planes), static_cast<int32_t>(hw), gy, gx);
  else
    global_avgpool_backward_kernel<int64_t><<<grid_blocks(total), kThreads, 0, ctx.stream()>>>(planes, hw, gy, gx);
  SPADE_CUDA_CHECK_LAUNCH("global average pooling backward");
}

}  // namespace spade::cuda
