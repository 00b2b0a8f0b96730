#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>

#include "kernels/cpu/parallel.h"

namespace spade::kernels {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using CMap = Eigen::Map<const RowMat, 0, Stride>;
using MMap = Eigen::Map<RowMat, 0, Stride>;

// A row-major view of rows x cols elements starting at p with the given leading dimension.
CMap view(const float* p, int64_t rows, int64_t cols, int64_t ld) { return CMap(p, rows, cols, Stride(ld)); }

// One single-threaded Eigen product on a block: C[i0:i1, j0:j1] of the full problem.
void block(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C,
           bool accumulate, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t m = i1 - i0, n = j1 - j0;
  MMap c(C + i0 * N + j0, m, n, Stride(N));
  // op(A) rows i0..i1: A is M x K (rows) or K x M (columns); op(B) columns j0..j1 likewise.
  auto run = [&](const auto& a, const auto& b) {
    if (accumulate)
      c.noalias() += a * b;
    else
      c.noalias() = a * b;
  };
  if (!ta && !tb) run(view(A + i0 * K, m, K, K), view(B + j0, K, n, N));
  else if (ta && !tb) run(view(A + i0, K, m, M).transpose(), view(B + j0, K, n, N));
  else if (!ta && tb) run(view(A + i0 * K, m, K, K), view(B + j0 * K, n, K, K).transpose());
  else run(view(A + i0, K, m, M).transpose(), view(B + j0 * K, n, K, K).transpose());
}

}  // namespace

// Each thread gets one fixed block of the larger output dimension (handed out dynamically): a thread that
// the OS deschedules delays only its own block instead of stalling every other thread at Eigen's
// internal spin barriers, and since the blocks are fixed the result does not depend on which
// thread computes which block.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, const float* B,
          float* C, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * N, C + (i + 1) * N, 0.f);
    return;
  }
  const int threads = num_threads();
  const bool small = static_cast<double>(M) * N * K < 2e5;
  if (threads == 1 || small || omp_in_parallel()) {
    block(trans_a, trans_b, M, N, K, A, B, C, accumulate, 0, M, 0, N);
    return;
  }
  const bool split_cols = N >= M;
  const int64_t extent = split_cols ? N : M;
  const int64_t align = split_cols ? 16 : 8;
  int64_t chunk = (extent + threads - 1) / threads;
  chunk = std::max<int64_t>(split_cols ? 64 : 16, (chunk + align - 1) / align * align);
  const int64_t blocks = (extent + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * chunk, hi = std::min(extent, lo + chunk);
    if (split_cols)
      block(trans_a, trans_b, M, N, K, A, B, C, accumulate, 0, M, lo, hi);
    else
      block(trans_a, trans_b, M, N, K, A, B, C, accumulate, lo, hi, 0, N);
  }
}

}  // namespace spade::kernels
