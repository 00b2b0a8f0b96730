#pragma once
// Helpers for the GPU tests (tests/cuda_test_*.cpp): they compare the CUDA backend with the CPU
// one and skip, saying so, on a machine without a GPU (CI has none).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/device.h"

#define SPADE_REQUIRE_GPU()                     \
  do {                                          \
    if (!::spade::cuda_available()) {           \
      WARN("no CUDA device: GPU test skipped"); \
      return;                                   \
    }                                           \
  } while (0)

namespace spade::test {

inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Device copy of host floats (blocking), and back.
inline DeviceBuffer to_gpu(const std::vector<float>& v) { return copy_to_device(v.data(), v.size(), cuda_context().stream()); }
inline std::vector<float> from_gpu(const DeviceBuffer& b, size_t n) {
  std::vector<float> v(n);
  copy_to_host(b, v.data(), n);
  return v;
}
// A device buffer of n floats filled with NaN, so that an element a kernel fails to write shows.
inline DeviceBuffer poisoned_gpu(size_t n) { return to_gpu(std::vector<float>(n, NAN)); }

// ||a - b|| / ||b|| in double (the normalised error the GPU tests bound); NaN anywhere gives inf.
template <class T>
double relative_l2(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace spade::test
