// SmoothGrad (Smilkov et al. 2017) as Captum's NoiseTunnel(nt_type="smoothgrad"): the mean of
// the wrapped method's attributions over copies of x with Gaussian noise of absolute stdev
// (not relative to the input range). Noisy copies are made a chunk at a time.
#include <string>
#include <vector>

#include "engine/error.h"
#include "interpret/sample_rng.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

// Copies of image n of x with N(0, stdev) noise; copy k's noise depends only on (seed, n, k).
Tensor noisy_copies(const Tensor& x, int64_t n, int64_t first, int64_t count, double stdev, uint64_t seed) {
  const int64_t per = x.numel() / x.dim(0);
  Shape s = x.shape();
  s[0] = count;
  Tensor out = Tensor::empty(s);
  const float* src = x.data() + n * per;
  for (int64_t k = 0; k < count; ++k) {
    SampleRng rng(mix64(seed) ^ uint64_t(n) << 32, first + k);
    float* dst = out.data() + k * per;
    for (int64_t i = 0; i < per; ++i) dst[i] = src[i] + (stdev == 0.0 ? 0.f : float(stdev * rng.normal()));
  }
  return out;
}

Tensor smoothgrad(const Network& net, const Tensor& x, int64_t target, const MethodParams& p) {
  check_images(net, x, "smoothgrad input");
  const MethodInfo& wrapped = find_method(p.wrapped);
  if (p.wrapped == "smoothgrad") throw Error("smoothgrad cannot wrap itself");
  const int64_t samples = p.samples < 0 ? 5 : p.samples;
  const double stdev = p.stdev < 0 ? 1.0 : p.stdev;
  if (samples < 1) throw Error("smoothgrad: samples must be at least 1");
  MethodParams inner = p;
  inner.progress = nullptr;
  const int64_t N = x.dim(0), per = x.numel() / N;
  const int64_t chunk = std::max<int64_t>(1, std::min(net.batch, samples));
  Tensor out = Tensor::empty(x.shape());
  std::vector<double> acc(per);
  for (int64_t n = 0; n < N; ++n) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t k0 = 0; k0 < samples; k0 += chunk) {
      const int64_t count = std::min(chunk, samples - k0);
      const Tensor a = wrapped.fn(net, noisy_copies(x, n, k0, count, stdev, p.seed), target, inner);
      for (int64_t k = 0; k < count; ++k)
        for (int64_t i = 0; i < per; ++i) acc[i] += a[k * per + i];
      if (p.progress) p.progress(n * samples + k0 + count, N * samples);
    }
    for (int64_t i = 0; i < per; ++i) out[n * per + i] = float(acc[i] / double(samples));
  }
  return out;
}

}  // namespace spade::interp
