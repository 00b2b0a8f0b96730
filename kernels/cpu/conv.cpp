#include "kernels/cpu/conv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace spade::kernels {

namespace {

// Output positions o in [lo, hi) whose input coordinate o*stride - pad + offset lies in [0, size).
inline void valid_range(int64_t out, int64_t size, int64_t stride, int64_t pad, int64_t offset, int64_t& lo,
                        int64_t& hi) {
  int64_t a = pad - offset;  // need o*stride >= a
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  int64_t b = size - 1 + pad - offset;  // need o*stride <= b
  hi = b < 0 ? 0 : b / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

bool is_pointwise(const ConvGeom& g) {
  return g.R == 1 && g.S == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 && g.pad_left == 0 &&
         g.pad_bottom == 0 && g.pad_right == 0;
}

float* scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Whether to split a batch across threads (one image per thread, single-threaded GEMMs) rather
// than running images one after another with a multi-threaded GEMM.
bool parallel_images(int64_t n) { return n > 1 && num_threads() > 1; }

// ---- depthwise: direct loops, one (image, input channel) plane at a time ----
void dw_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w(), m = g.K / g.C;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      const float* in = x + (n * g.C + k / m) * g.H * g.W;
      float* out = y + (n * g.K + k) * OH * OW;
      std::fill(out, out + OH * OW, bias ? bias[k] : 0.f);
      for (int64_t r = 0; r < g.R; ++r) {
        int64_t oh0, oh1;
        valid_range(OH, g.H, g.stride_h, g.pad_top, r * g.dil_h, oh0, oh1);
        for (int64_t s = 0; s < g.S; ++s) {
          const float wv = w[(k * g.R + r) * g.S + s];
          int64_t ow0, ow1;
          valid_range(OW, g.W, g.stride_w, g.pad_left, s * g.dil_w, ow0, ow1);
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            const float* irow = in + (oh * g.stride_h - g.pad_top + r * g.dil_h) * g.W - g.pad_left + s * g.dil_w;
            float* orow = out + oh * OW;
            if (g.stride_w == 1) {
              for (int64_t ow = ow0; ow < ow1; ++ow) orow[ow] += wv * irow[ow];
            } else {
              for (int64_t ow = ow0; ow < ow1; ++ow) orow[ow] += wv * irow[ow * g.stride_w];
            }
          }
        }
      }
    }
}

void dw_backward_input(const ConvGeom& g, const float* gy, const float* w, float* gx) {
  const int64_t OH = g.out_h(), OW = g.out_w(), m = g.K / g.C;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      float* gin = gx + (n * g.C + c) * g.H * g.W;
      std::fill(gin, gin + g.H * g.W, 0.f);
      for (int64_t k = c * m; k < (c + 1) * m; ++k) {
        const float* gout = gy + (n * g.K + k) * OH * OW;
        for (int64_t r = 0; r < g.R; ++r) {
          int64_t oh0, oh1;
          valid_range(OH, g.H, g.stride_h, g.pad_top, r * g.dil_h, oh0, oh1);
          for (int64_t s = 0; s < g.S; ++s) {
            const float wv = w[(k * g.R + r) * g.S + s];
            int64_t ow0, ow1;
            valid_range(OW, g.W, g.stride_w, g.pad_left, s * g.dil_w, ow0, ow1);
            for (int64_t oh = oh0; oh < oh1; ++oh) {
              float* irow = gin + (oh * g.stride_h - g.pad_top + r * g.dil_h) * g.W - g.pad_left + s * g.dil_w;
              const float* orow = gout + oh * OW;
              for (int64_t ow = ow0; ow < ow1; ++ow) irow[ow * g.stride_w] += wv * orow[ow];
            }
          }
        }
      }
    }
}

void dw_backward_params(const ConvGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  const int64_t OH = g.out_h(), OW = g.out_w(), m = g.K / g.C;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < g.K; ++k) {
    double bsum = 0;
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        int64_t oh0, oh1, ow0, ow1;
        valid_range(OH, g.H, g.stride_h, g.pad_top, r * g.dil_h, oh0, oh1);
        valid_range(OW, g.W, g.stride_w, g.pad_left, s * g.dil_w, ow0, ow1);
        double acc = 0;
        for (int64_t n = 0; n < g.N; ++n) {
          const float* in = x + (n * g.C + k / m) * g.H * g.W;
          const float* gout = gy + (n * g.K + k) * OH * OW;
          for (int64_t oh = oh0; oh < oh1; ++oh) {
            const float* irow = in + (oh * g.stride_h - g.pad_top + r * g.dil_h) * g.W - g.pad_left + s * g.dil_w;
            const float* orow = gout + oh * OW;
            float part = 0;
            for (int64_t ow = ow0; ow < ow1; ++ow) part += orow[ow] * irow[ow * g.stride_w];
            acc += part;
          }
        }
        gw[(k * g.R + r) * g.S + s] = static_cast<float>(acc);
      }
    if (gb) {
      for (int64_t n = 0; n < g.N; ++n) {
        const float* gout = gy + (n * g.K + k) * OH * OW;
        float part = 0;
        for (int64_t i = 0; i < OH * OW; ++i) part += gout[i];
        bsum += part;
      }
      gb[k] = static_cast<float>(bsum);
    }
  }
}

// ---- dense / grouped: im2col + GEMM per image and group ----
void forward_image(const ConvGeom& g, const float* xi, const float* w, const float* bias, float* yi) {
  const int64_t OHW = g.out_h() * g.out_w(), Kg = g.cout_per_group(), rows = g.col_rows();
  const bool pw = is_pointwise(g);
  float* cols = pw ? nullptr : scratch(rows * OHW);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const int64_t c0 = gi * g.cin_per_group();
    const float* B = xi + c0 * g.H * g.W;
    if (!pw) {
      im2col(g, xi, c0, cols);
      B = cols;
    }
    float* out = yi + gi * Kg * OHW;
    gemm(false, false, Kg, OHW, rows, w + gi * Kg * rows, B, out, false);
    if (bias)
      for (int64_t k = 0; k < Kg; ++k) {
        const float b = bias[gi * Kg + k];
        float* o = out + k * OHW;
        for (int64_t i = 0; i < OHW; ++i) o[i] += b;
      }
  }
}

void backward_input_image(const ConvGeom& g, const float* gyi, const float* w, float* gxi) {
  const int64_t OHW = g.out_h() * g.out_w(), Kg = g.cout_per_group(), rows = g.col_rows();
  const bool pw = is_pointwise(g);
  float* cols = pw ? nullptr : scratch(rows * OHW);
  if (!pw) std::fill(gxi, gxi + g.C * g.H * g.W, 0.f);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    const int64_t c0 = gi * g.cin_per_group();
    float* dst = pw ? gxi + c0 * g.H * g.W : cols;
    gemm(true, false, rows, OHW, Kg, w + gi * Kg * rows, gyi + gi * Kg * OHW, dst, false);
    if (!pw) col2im_add(g, cols, c0, gxi);
  }
}

}  // namespace

void im2col(const ConvGeom& g, const float* image, int64_t c0, float* cols, int64_t ld) {
  const int64_t OH = g.out_h(), OW = g.out_w(), Cg = g.cin_per_group();
  if (ld == 0) ld = OH * OW;
  for (int64_t c = 0; c < Cg; ++c) {
    const float* plane = image + (c0 + c) * g.H * g.W;
    for (int64_t r = 0; r < g.R; ++r) {
      int64_t oh0, oh1;
      valid_range(OH, g.H, g.stride_h, g.pad_top, r * g.dil_h, oh0, oh1);
      for (int64_t s = 0; s < g.S; ++s) {
        float* row = cols + ((c * g.R + r) * g.S + s) * ld;
        int64_t ow0, ow1;
        valid_range(OW, g.W, g.stride_w, g.pad_left, s * g.dil_w, ow0, ow1);
        std::fill(row, row + oh0 * OW, 0.f);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          float* o = row + oh * OW;
          const float* irow = plane + (oh * g.stride_h - g.pad_top + r * g.dil_h) * g.W - g.pad_left + s * g.dil_w;
          std::fill(o, o + ow0, 0.f);
          if (g.stride_w == 1)
            std::memcpy(o + ow0, irow + ow0, (ow1 - ow0) * sizeof(float));
          else
            for (int64_t ow = ow0; ow < ow1; ++ow) o[ow] = irow[ow * g.stride_w];
          std::fill(o + ow1, o + OW, 0.f);
        }
        std::fill(row + oh1 * OW, row + OH * OW, 0.f);
      }
    }
  }
}

void col2im_add(const ConvGeom& g, const float* cols, int64_t c0, float* image) {
  const int64_t OH = g.out_h(), OW = g.out_w(), Cg = g.cin_per_group();
  for (int64_t c = 0; c < Cg; ++c) {
    float* plane = image + (c0 + c) * g.H * g.W;
    for (int64_t r = 0; r < g.R; ++r) {
      int64_t oh0, oh1;
      valid_range(OH, g.H, g.stride_h, g.pad_top, r * g.dil_h, oh0, oh1);
      for (int64_t s = 0; s < g.S; ++s) {
        const float* row = cols + ((c * g.R + r) * g.S + s) * OH * OW;
        int64_t ow0, ow1;
        valid_range(OW, g.W, g.stride_w, g.pad_left, s * g.dil_w, ow0, ow1);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          const float* o = row + oh * OW;
          float* irow = plane + (oh * g.stride_h - g.pad_top + r * g.dil_h) * g.W - g.pad_left + s * g.dil_w;
          for (int64_t ow = ow0; ow < ow1; ++ow) irow[ow * g.stride_w] += o[ow];
        }
      }
    }
  }
}

void conv2d_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y) {
  if (g.depthwise()) return dw_forward(g, x, w, bias, y);
  const int64_t in_sz = g.C * g.H * g.W, out_sz = g.K * g.out_h() * g.out_w();
  if (parallel_images(g.N)) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < g.N; ++n) forward_image(g, x + n * in_sz, w, bias, y + n * out_sz);
  } else {
    for (int64_t n = 0; n < g.N; ++n) forward_image(g, x + n * in_sz, w, bias, y + n * out_sz);
  }
}

void conv2d_backward_input(const ConvGeom& g, const float* gy, const float* w, float* gx) {
  if (g.depthwise()) return dw_backward_input(g, gy, w, gx);
  const int64_t in_sz = g.C * g.H * g.W, out_sz = g.K * g.out_h() * g.out_w();
  if (parallel_images(g.N)) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < g.N; ++n) backward_input_image(g, gy + n * out_sz, w, gx + n * in_sz);
  } else {
    for (int64_t n = 0; n < g.N; ++n) backward_input_image(g, gy + n * out_sz, w, gx + n * in_sz);
  }
}

namespace {
// Weight gradient of images [n0, n1) into gw (overwritten).
void weight_grad_images(const ConvGeom& g, const float* x, const float* gy, int64_t n0, int64_t n1, float* gw) {
  const int64_t OHW = g.out_h() * g.out_w(), Kg = g.cout_per_group(), rows = g.col_rows();
  const int64_t in_sz = g.C * g.H * g.W, out_sz = g.K * OHW;
  const bool pw = is_pointwise(g);
  float* cols = pw ? nullptr : scratch(rows * OHW);
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const int64_t c0 = gi * g.cin_per_group();
      const float* B = x + n * in_sz + c0 * g.H * g.W;
      if (!pw) {
        im2col(g, x + n * in_sz, c0, cols);
        B = cols;
      }
      gemm(false, true, Kg, rows, OHW, gy + n * out_sz + gi * Kg * OHW, B, gw + gi * Kg * rows, n > n0);
    }
}
}  // namespace

void conv2d_backward_params(const ConvGeom& g, const float* x, const float* gy, float* gw, float* gb) {
  if (g.depthwise()) return dw_backward_params(g, x, gy, gw, gb);
  // The batch is cut into one fixed range of images per thread, each summed into its own buffer,
  // and the buffers are added in thread order: deterministic for a given thread count.
  const int64_t parts = std::min<int64_t>(num_threads(), g.N);
  const int64_t size = g.K * g.col_rows(), OHW = g.out_h() * g.out_w(), out_sz = g.K * OHW;
  if (parts <= 1) {
    weight_grad_images(g, x, gy, 0, g.N, gw);
  } else {
    std::vector<float> partial((parts - 1) * size);
#pragma omp parallel for schedule(static, 1) num_threads(parts)
    for (int64_t p = 0; p < parts; ++p)
      weight_grad_images(g, x, gy, p * g.N / parts, (p + 1) * g.N / parts,
                         p == 0 ? gw : partial.data() + (p - 1) * size);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < size; ++i)
      for (int64_t p = 1; p < parts; ++p) gw[i] += partial[(p - 1) * size + i];
  }
  if (gb) {
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < g.K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < g.N; ++n) {
        const float* p = gy + n * out_sz + k * OHW;
        float part = 0;
        for (int64_t i = 0; i < OHW; ++i) part += p[i];
        acc += part;
      }
      gb[k] = static_cast<float>(acc);
    }
  }
}

}  // namespace spade::kernels
