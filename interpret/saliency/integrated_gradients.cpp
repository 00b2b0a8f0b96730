// Integrated Gradients (Sundararajan et al. 2017), as Captum computes it: the path integral of
// the gradient from the baseline to x by Gauss-Legendre quadrature on [0, 1], times (x - baseline).
// The scaled inputs are built one chunk at a time, so memory does not grow with the step count.
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

void gauss_legendre(int64_t n, std::vector<double>& nodes, std::vector<double>& weights) {
  if (n < 1) throw Error("integrated_gradients: steps must be at least 1");
  nodes.assign(n, 0.0);
  weights.assign(n, 0.0);
  // Newton's method on the Legendre polynomial P_n from Chebyshev-like starting points; the
  // roots are symmetric, so only half are computed.
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    double z = std::cos(pi * (double(i) + 0.75) / (double(n) + 0.5)), pp = 0.0;
    for (int it = 0; it < 100; ++it) {
      double p1 = 1.0, p2 = 0.0;
      for (int64_t j = 1; j <= n; ++j) {
        const double p3 = p2;
        p2 = p1;
        p1 = ((2.0 * double(j) - 1.0) * z * p2 - (double(j) - 1.0) * p3) / double(j);
      }
      pp = double(n) * (z * p1 - p2) / (z * z - 1.0);  // P_n'(z)
      const double z1 = z;
      z = z1 - p1 / pp;
      if (std::fabs(z - z1) < 1e-15) break;
    }
    // Recompute the derivative at the converged root for the weight.
    double p1 = 1.0, p2 = 0.0;
    for (int64_t j = 1; j <= n; ++j) {
      const double p3 = p2;
      p2 = p1;
      p1 = ((2.0 * double(j) - 1.0) * z * p2 - (double(j) - 1.0) * p3) / double(j);
    }
    pp = double(n) * (z * p1 - p2) / (z * z - 1.0);
    const double w = 2.0 / ((1.0 - z * z) * pp * pp);
    nodes[i] = -z;  // ascending order, like numpy.polynomial.legendre.leggauss
    nodes[n - 1 - i] = z;
    weights[i] = weights[n - 1 - i] = w;
  }
}

Tensor integrated_gradients(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "integrated_gradients input");
  if (p.baselines.size() != 1) throw Error("integrated_gradients takes exactly one baseline");
  std::vector<double> nodes, weights;
  gauss_legendre(p.steps, nodes, weights);
  const int64_t N = x.dim(0), per = x.numel() / N, steps = p.steps;
  const int64_t chunk = std::max<int64_t>(1, std::min(net.batch, steps));
  Tensor out = Tensor::empty(x.shape());
  Shape chunk_shape = x.shape();
  std::vector<double> acc(per);
  for (int64_t n = 0; n < N; ++n) {
    const Tensor xn = x.slice0(n, n + 1);
    const Tensor base = baseline_image(p.baselines[0], xn);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k0 = 0; k0 < steps; k0 += chunk) {
      const int64_t k1 = std::min(steps, k0 + chunk);
      chunk_shape[0] = k1 - k0;
      Tensor scaled = Tensor::empty(chunk_shape);
      for (int64_t k = k0; k < k1; ++k) {
        const float a = float(0.5 * (1.0 + nodes[k]));
        float* dst = scaled.data() + (k - k0) * per;
        for (int64_t i = 0; i < per; ++i) dst[i] = base[i] + a * (xn[i] - base[i]);
      }
      const Tensor g = target_gradients(net, scaled, target);
      for (int64_t k = k0; k < k1; ++k) {
        const double w = 0.5 * weights[k];
        const float* gk = g.data() + (k - k0) * per;
        for (int64_t i = 0; i < per; ++i) acc[i] += w * gk[i];
      }
      if (p.progress) p.progress(n * steps + k1, N * steps);
    }
    float* o = out.data() + n * per;
    for (int64_t i = 0; i < per; ++i) o[i] = float(double(xn[i] - base[i]) * acc[i]);
  }
  return out;
}

}  // namespace spade::interp
