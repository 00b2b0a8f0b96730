#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cstring>

namespace spade::kernels {

void clamp_forward(int64_t n, const float* x, float lo, float hi, float* y) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
}

void clamp_backward(int64_t n, const float* x, const float* gy, float lo, float hi, float* gx) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) gx[i] = (x[i] > lo && x[i] < hi) ? gy[i] : 0.f;
}

void add_forward(int64_t n, const float* a, const float* b, float* y) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void shortcut_forward(const ShortcutGeom& g, const float* x, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w(), OC = g.out_c();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc) {
      float* out = y + (n * OC + oc) * OH * OW;
      const int64_t c = oc - g.pad;
      if (c < 0 || c >= g.C) {
        std::fill(out, out + OH * OW, 0.f);
        continue;
      }
      const float* in = x + (n * g.C + c) * g.H * g.W;
      for (int64_t h = 0; h < OH; ++h)
        for (int64_t w = 0; w < OW; ++w) out[h * OW + w] = in[(h * g.stride) * g.W + w * g.stride];
    }
}

void shortcut_backward(const ShortcutGeom& g, const float* gy, float* gx) {
  const int64_t OH = g.out_h(), OW = g.out_w(), OC = g.out_c();
  std::fill(gx, gx + g.N * g.C * g.H * g.W, 0.f);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const float* gout = gy + (n * OC + c + g.pad) * OH * OW;
      float* gin = gx + (n * g.C + c) * g.H * g.W;
      for (int64_t h = 0; h < OH; ++h)
        for (int64_t w = 0; w < OW; ++w) gin[(h * g.stride) * g.W + w * g.stride] = gout[h * OW + w];
    }
}

namespace {
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

void dropout_apply(int64_t n, const float* x, float p, uint64_t seed, float* y) {
  if (p <= 0.f) {
    if (y != x) std::memcpy(y, x, n * sizeof(float));
    return;
  }
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  const uint64_t base = splitmix64(seed);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double u = static_cast<double>(splitmix64(base ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    y[i] = u >= p ? x[i] * scale : 0.f;
  }
}

}  // namespace spade::kernels
