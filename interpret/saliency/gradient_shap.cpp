// GradientShap (Lundberg & Lee 2017) as Captum computes it: for each sample, one baseline drawn
// uniformly from the set, alpha ~ U(0, 1) and Gaussian noise on x; the attribution is the mean of
// grad(b + alpha (x_noisy - b)) * (x_noisy - b). Samples are evaluated a chunk at a time.
#include <vector>

#include "engine/error.h"
#include "interpret/sample_rng.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

Tensor gradient_shap(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "gradient_shap input");
  if (p.baselines.empty()) throw Error("gradient_shap needs at least one baseline");
  const int64_t samples = p.samples < 0 ? 5 : p.samples;
  const double stdev = p.stdev < 0 ? 0.0 : p.stdev;
  if (samples < 1) throw Error("gradient_shap: samples must be at least 1");
  const int64_t N = x.dim(0), per = x.numel() / N;
  const int64_t chunk = std::max<int64_t>(1, std::min(net.batch, samples));
  Tensor out = Tensor::empty(x.shape());
  std::vector<double> acc(per);
  for (int64_t n = 0; n < N; ++n) {
    const Tensor xn = x.slice0(n, n + 1);
    std::vector<Tensor> bases;
    for (Baseline b : p.baselines) bases.push_back(baseline_image(b, xn));
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k0 = 0; k0 < samples; k0 += chunk) {
      const int64_t count = std::min(chunk, samples - k0);
      Shape s = x.shape();
      s[0] = count;
      Tensor points = Tensor::empty(s), diffs = Tensor::empty(s);
      for (int64_t k = 0; k < count; ++k) {
        // One stream per sample: baseline choice, alpha, then the noise.
        SampleRng rng(mix64(p.seed + 0x5a17) ^ uint64_t(n) << 32, k0 + k);
        const Tensor& b = bases[std::min<size_t>(size_t(rng.next_unit() * double(bases.size())), bases.size() - 1)];
        const float alpha = float(rng.next_unit());
        float* pt = points.data() + k * per;
        float* df = diffs.data() + k * per;
        for (int64_t i = 0; i < per; ++i) {
          const float noisy = xn[i] + (stdev == 0.0 ? 0.f : float(stdev * rng.normal()));
          df[i] = noisy - b[i];
          pt[i] = b[i] + alpha * df[i];
        }
      }
      const Tensor g = target_gradients(net, points, target);
      for (int64_t k = 0; k < count; ++k)
        for (int64_t i = 0; i < per; ++i) acc[i] += double(g[k * per + i]) * double(diffs[k * per + i]);
      if (p.progress) p.progress(n * samples + k0 + count, N * samples);
    }
    for (int64_t i = 0; i < per; ++i) out[n * per + i] = float(acc[i] / double(samples));
  }
  return out;
}

}  // namespace spade::interp
