#pragma once
// The small block x block systems of OBC's block variant (kernels/cpu/obc.h), shared by the CPU
// solver and the GPU kernels (kernels/cuda/obc.cu): the same operations in the same order, so a
// block's loss is the same number on either device. Column-major, lower triangles.
//
// kB is the block size where it is a compile-time constant (1, or 9 for 3x3 kernels) so that the
// loops unroll; kB = 0 takes it from b.
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SPADE_HOST_DEVICE __host__ __device__
#else
#define SPADE_HOST_DEVICE
#endif

namespace spade::kernels::obc_block {

constexpr double kInfinity = static_cast<double>(INFINITY);

// x is neither infinite nor NaN (x - x is 0 exactly then); std::isfinite is not device code.
SPADE_HOST_DEVICE inline bool finite(double x) { return x - x == 0.0; }

// Cholesky of the B x B matrix whose lower triangle is in A (leading dimension lda) into L (B x B,
// lower). False when A is not numerically positive definite.
template <int kB>
SPADE_HOST_DEVICE bool small_cholesky(const double* A, int64_t lda, int64_t b, double* L) {
  const int64_t B = kB > 0 ? kB : b;
  for (int64_t j = 0; j < B; ++j) {
    double d = A[j + j * lda];
    for (int64_t k = 0; k < j; ++k) d -= L[j + k * B] * L[j + k * B];
    if (!(d > 0.0)) return false;
    const double ljj = sqrt(d);
    L[j + j * B] = ljj;
    for (int64_t i = j + 1; i < B; ++i) {
      double s = A[i + j * lda];
      for (int64_t k = 0; k < j; ++k) s -= L[i + k * B] * L[j + k * B];
      L[i + j * B] = s / ljj;
    }
  }
  return true;
}

// z = L^-1 z (forward substitution), in place.
template <int kB>
SPADE_HOST_DEVICE void forward_solve(const double* L, int64_t b, double* z) {
  const int64_t B = kB > 0 ? kB : b;
  for (int64_t j = 0; j < B; ++j) {
    double s = z[j];
    for (int64_t k = 0; k < j; ++k) s -= L[j + k * B] * z[k];
    z[j] = s / L[j + j * B];
  }
}

// w^T D^-1 w for one B x B diagonal block D; +inf when D is not positive definite, so that such
// a block is only removed when nothing else is left. scratch: B * B + B doubles.
template <int kB>
SPADE_HOST_DEVICE double block_loss(const double* D, const double* w, int64_t b, double* scratch) {
  const int64_t B = kB > 0 ? kB : b;
  if (B == 1) {
    const double l = w[0] * w[0] / D[0];
    return D[0] > 0.0 && finite(l) ? l : kInfinity;
  }
  double* L = scratch;
  double* z = scratch + B * B;
  if (!small_cholesky<kB>(D, B, B, L)) return kInfinity;
  for (int64_t j = 0; j < B; ++j) z[j] = w[j];
  forward_solve<kB>(L, B, z);
  double loss = 0;
  for (int64_t j = 0; j < B; ++j) loss += z[j] * z[j];
  return finite(loss) ? loss : kInfinity;
}

}  // namespace spade::kernels::obc_block
