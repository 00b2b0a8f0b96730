#include "kernels/cpu/batchnorm.h"

namespace spade::kernels {

namespace {
// Plane reductions with 16 independent float lanes (vectorisable without reassociating, so the
// result is the same on every run), combined in a fixed order.
constexpr int kLanes = 16;

template <class F>
float lane_sum(int64_t n, F term) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += term(i + j);
  float tail = 0;
  for (; i < n; ++i) tail += term(i);
  float s = tail;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}
}  // namespace

void batchnorm_apply(const BNGeom& g, const float* x, const float* mean, const float* invstd,
                     const float* weight, const float* bias, float* y) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const float scale = invstd[c] * weight[c];
      const float shift = bias[c] - mean[c] * scale;
      const float* in = x + (n * g.C + c) * g.HW;
      float* out = y + (n * g.C + c) * g.HW;
      for (int64_t i = 0; i < g.HW; ++i) out[i] = in[i] * scale + shift;
    }
}

// Planes are summed in float lanes (lane_sum) and combined in double, always in the same order.
void batchnorm_batch_stats(const BNGeom& g, const float* x, double* mean, double* var) {
  const double count = static_cast<double>(g.N * g.HW);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      s += lane_sum(g.HW, [in](int64_t i) { return in[i]; });
    }
    const double m = s / count;
    const float mf = static_cast<float>(m);
    double ss = 0;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      ss += lane_sum(g.HW, [in, mf](int64_t i) { return (in[i] - mf) * (in[i] - mf); });
    }
    mean[c] = m;
    var[c] = ss / count;
  }
}

namespace {
// Per channel: sum gy and sum gy * xhat.
void grad_sums(const BNGeom& g, const float* x, const float* gy, const float* mean, const float* invstd,
               double* sum_gy, double* sum_gy_xhat) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    double a = 0, b = 0;
    const float m = mean[c];
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      const float* go = gy + (n * g.C + c) * g.HW;
      a += lane_sum(g.HW, [go](int64_t i) { return go[i]; });
      b += lane_sum(g.HW, [go, in, m](int64_t i) { return go[i] * (in[i] - m); });
    }
    sum_gy[c] = a;
    sum_gy_xhat[c] = b * invstd[c];
  }
}
}  // namespace

void batchnorm_backward_eval(const BNGeom& g, const float* x, const float* gy, const float* mean,
                             const float* invstd, const float* weight, float* gx, float* gweight,
                             float* gbias) {
  if (gweight || gbias) {
    double* sums = new double[2 * g.C];
    grad_sums(g, x, gy, mean, invstd, sums, sums + g.C);
    for (int64_t c = 0; c < g.C; ++c) {
      if (gbias) gbias[c] = static_cast<float>(sums[c]);
      if (gweight) gweight[c] = static_cast<float>(sums[g.C + c]);
    }
    delete[] sums;
  }
  if (!gx) return;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const float scale = weight[c] * invstd[c];
      const float* go = gy + (n * g.C + c) * g.HW;
      float* gi = gx + (n * g.C + c) * g.HW;
      for (int64_t i = 0; i < g.HW; ++i) gi[i] = go[i] * scale;
    }
}

void batchnorm_backward_train(const BNGeom& g, const float* x, const float* gy, const float* mean,
                              const float* invstd, const float* weight, float* gx, float* gweight,
                              float* gbias) {
  double* sums = new double[2 * g.C];
  grad_sums(g, x, gy, mean, invstd, sums, sums + g.C);
  for (int64_t c = 0; c < g.C; ++c) {
    if (gbias) gbias[c] = static_cast<float>(sums[c]);
    if (gweight) gweight[c] = static_cast<float>(sums[g.C + c]);
  }
  if (gx) {
    const double count = static_cast<double>(g.N * g.HW);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t c = 0; c < g.C; ++c) {
        // gx = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))
        const double k = weight[c] * invstd[c];
        const double mg = sums[c] / count, mgx = sums[g.C + c] / count;
        const float* in = x + (n * g.C + c) * g.HW;
        const float* go = gy + (n * g.C + c) * g.HW;
        float* gi = gx + (n * g.C + c) * g.HW;
        for (int64_t i = 0; i < g.HW; ++i) {
          double xhat = (in[i] - mean[c]) * invstd[c];
          gi[i] = static_cast<float>(k * (go[i] - mg - xhat * mgx));
        }
      }
  }
  delete[] sums;
}

}  // namespace spade::kernels
