#include "kernels/cpu/batchnorm.h"

namespace spade::kernels {

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

void batchnorm_batch_stats(const BNGeom& g, const float* x, double* mean, double* var) {
  const double count = static_cast<double>(g.N * g.HW);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      for (int64_t i = 0; i < g.HW; ++i) s += in[i];
    }
    const double m = s / count;
    double ss = 0;
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      for (int64_t i = 0; i < g.HW; ++i) {
        double d = in[i] - m;
        ss += d * d;
      }
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
    for (int64_t n = 0; n < g.N; ++n) {
      const float* in = x + (n * g.C + c) * g.HW;
      const float* go = gy + (n * g.C + c) * g.HW;
      for (int64_t i = 0; i < g.HW; ++i) {
        a += go[i];
        b += go[i] * (in[i] - mean[c]) * invstd[c];
      }
    }
    sum_gy[c] = a;
    sum_gy_xhat[c] = b;
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
