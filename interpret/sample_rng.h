#pragma once
// Counter-based random draws shared by the SPADE augmentations and the sampling saliency methods
// (SmoothGrad noise, GradientShap, LIME): draw k of sample i is a pure function of
// (seed, i, k), so samples can be drawn in any order, batch size or thread.
#include <algorithm>
#include <cmath>
#include <cstdint>

// GCC contracts a * b + c into a fused multiply-add by default in C++ once -march=native offers
// one, even across statements. That rounds once instead of twice: in the crop draws it would make
// the parameters depend on the build's CPU flags, and PIL's colour code (plain C built for
// baseline x86-64) never fuses. So the functions with such arithmetic are compiled with
// contraction off (clang only contracts within one expression, and the code keeps those products
// in their own statements).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#define SPADE_NO_FP_CONTRACT
#elif defined(__GNUC__)
#define SPADE_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define SPADE_NO_FP_CONTRACT
#endif

namespace spade::interp {

// splitmix64's output function: a bijective 64-bit mix with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A splitmix64 stream keyed by (seed, index).
class SampleRng {
 public:
  static constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
  SampleRng(uint64_t seed, int64_t index) : state_(mix64(mix64(seed + kGolden) ^ uint64_t(index))) {}

  uint64_t next_u64() { return mix64(state_ += kGolden); }
  // Uniform in [0, 1) with 53 random bits.
  double next_unit() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform in [lo, hi), like torch's uniform_.
  SPADE_NO_FP_CONTRACT double uniform(double lo, double hi) {
    const double span = (hi - lo) * next_unit();
    return lo + span;
  }
  // Uniform integer in [0, n], like torch.randint(0, n + 1).
  int randint_inclusive(int n) {
    const int k = static_cast<int>(next_unit() * (double(n) + 1.0));
    return std::min(k, n);
  }
  // Standard normal (Box-Muller; one draw per call, the pair's second half is discarded so a
  // draw depends only on its position in the stream).
  double normal() {
    const double u1 = 1.0 - next_unit();  // (0, 1]
    const double u2 = next_unit();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace spade::interp
