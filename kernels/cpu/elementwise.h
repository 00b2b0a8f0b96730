#pragma once
// Pointwise kernels: activations, addition, the CIFAR option-A shortcut and dropout masks.
#include <cstdint>

namespace spade::kernels {

// y = min(max(x, lo), hi); hi = +inf for ReLU.
void clamp_forward(int64_t n, const float* x, float lo, float hi, float* y);
// gx = gy where lo < x < hi, else 0 (PyTorch's threshold/hardtanh backward).
void clamp_backward(int64_t n, const float* x, const float* gy, float lo, float hi, float* gx);

void add_forward(int64_t n, const float* a, const float* b, float* y);

// Option-A shortcut: y[n, c + pad, h, w] = x[n, c, stride*h, stride*w], zero elsewhere.
struct ShortcutGeom {
  int64_t N = 1, C = 1, H = 1, W = 1, pad = 0, stride = 2;
  int64_t out_h() const { return (H + stride - 1) / stride; }
  int64_t out_w() const { return (W + stride - 1) / stride; }
  int64_t out_c() const { return C + 2 * pad; }
};
void shortcut_forward(const ShortcutGeom& g, const float* x, float* y);
void shortcut_backward(const ShortcutGeom& g, const float* gy, float* gx);

// Inverted dropout with a counter-based mask: element i is kept iff hash(seed, i) >= p, and
// kept elements are scaled by 1/(1-p). The same (seed, p) always gives the same mask, so the
// backward pass recomputes it instead of storing it.
void dropout_apply(int64_t n, const float* x, float p, uint64_t seed, float* y);

}  // namespace spade::kernels
