#include "kernels/cpu/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace spade::kernels {

int64_t PoolGeom::out_size(int64_t in, int64_t k, int64_t s, int64_t before, int64_t after) const {
  int64_t num = in + before + after - k;
  int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  // PyTorch: the last window must start inside the input or the left padding.
  if (ceil_mode && (out - 1) * s >= in + before) --out;
  return out;
}

void maxpool2d_forward(const PoolGeom& g, const float* x, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < g.N * g.C; ++pl) {
    const float* in = x + pl * g.H * g.W;
    float* out = y + pl * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_top, 0);
      int64_t h1 = std::min(oh * g.stride_h - g.pad_top + g.kh, g.H);
      for (int64_t ow = 0; ow < OW; ++ow) {
        int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_left, 0);
        int64_t w1 = std::min(ow * g.stride_w - g.pad_left + g.kw, g.W);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            float v = in[h * g.W + w];
            if (v > m || std::isnan(v)) m = v;
          }
        out[oh * OW + ow] = m;
      }
    }
  }
}

void maxpool2d_backward(const PoolGeom& g, const float* x, const float* gy, float* gx) {
  const int64_t OH = g.out_h(), OW = g.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < g.N * g.C; ++pl) {
    const float* in = x + pl * g.H * g.W;
    const float* gout = gy + pl * OH * OW;
    float* gin = gx + pl * g.H * g.W;
    std::fill(gin, gin + g.H * g.W, 0.f);
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_top, 0);
      int64_t h1 = std::min(oh * g.stride_h - g.pad_top + g.kh, g.H);
      for (int64_t ow = 0; ow < OW; ++ow) {
        int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_left, 0);
        int64_t w1 = std::min(ow * g.stride_w - g.pad_left + g.kw, g.W);
        float m = -std::numeric_limits<float>::infinity();
        int64_t arg = -1;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            float v = in[h * g.W + w];
            if (arg < 0 || v > m || std::isnan(v)) {
              m = v;
              arg = h * g.W + w;
            }
          }
        if (arg >= 0) gin[arg] += gout[oh * OW + ow];
      }
    }
  }
}

namespace {
// PyTorch's window bounds and divisor for one output position along one axis.
struct Window {
  int64_t lo, hi, padded;
};
inline Window window(int64_t o, int64_t s, int64_t p, int64_t p_end, int64_t k, int64_t in) {
  int64_t lo = o * s - p;
  int64_t hi = std::min(lo + k, in + p_end);
  int64_t padded = hi - lo;
  return {std::max<int64_t>(lo, 0), std::min(hi, in), padded};
}
}  // namespace

void avgpool2d_forward(const PoolGeom& g, const float* x, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < g.N * g.C; ++pl) {
    const float* in = x + pl * g.H * g.W;
    float* out = y + pl * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      Window wh = window(oh, g.stride_h, g.pad_top, g.pad_bottom, g.kh, g.H);
      for (int64_t ow = 0; ow < OW; ++ow) {
        Window ww = window(ow, g.stride_w, g.pad_left, g.pad_right, g.kw, g.W);
        float sum = 0;
        for (int64_t h = wh.lo; h < wh.hi; ++h)
          for (int64_t w = ww.lo; w < ww.hi; ++w) sum += in[h * g.W + w];
        int64_t div = g.count_include_pad ? wh.padded * ww.padded : (wh.hi - wh.lo) * (ww.hi - ww.lo);
        out[oh * OW + ow] = div > 0 ? sum / static_cast<float>(div) : 0.f;
      }
    }
  }
}

void avgpool2d_backward(const PoolGeom& g, const float* gy, float* gx) {
  const int64_t OH = g.out_h(), OW = g.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < g.N * g.C; ++pl) {
    const float* gout = gy + pl * OH * OW;
    float* gin = gx + pl * g.H * g.W;
    std::fill(gin, gin + g.H * g.W, 0.f);
    for (int64_t oh = 0; oh < OH; ++oh) {
      Window wh = window(oh, g.stride_h, g.pad_top, g.pad_bottom, g.kh, g.H);
      for (int64_t ow = 0; ow < OW; ++ow) {
        Window ww = window(ow, g.stride_w, g.pad_left, g.pad_right, g.kw, g.W);
        int64_t div = g.count_include_pad ? wh.padded * ww.padded : (wh.hi - wh.lo) * (ww.hi - ww.lo);
        if (div <= 0) continue;
        float v = gout[oh * OW + ow] / static_cast<float>(div);
        for (int64_t h = wh.lo; h < wh.hi; ++h)
          for (int64_t w = ww.lo; w < ww.hi; ++w) gin[h * g.W + w] += v;
      }
    }
  }
}

void global_avgpool_forward(int64_t planes, int64_t hw, const float* x, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = x + p * hw;
    float s = 0;
    for (int64_t i = 0; i < hw; ++i) s += in[i];
    y[p] = s / static_cast<float>(hw);
  }
}

void global_avgpool_backward(int64_t planes, int64_t hw, const float* gy, float* gx) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    float v = gy[p] / static_cast<float>(hw);
    std::fill(gx + p * hw, gx + (p + 1) * hw, v);
  }
}

}  // namespace spade::kernels
