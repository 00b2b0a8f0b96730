#include "kernels/cpu/hessian.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace spade::kernels {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;

// 256 keeps a tile's float32 product (256 KiB) in L2 and gives Eigen's kernel long enough rows;
// below ~1200 columns 128 wastes less on the diagonal tiles (which are computed in full).
int64_t tile_size(int64_t n) { return n < 1200 ? 128 : 256; }

}  // namespace

void syrk_lower_add(int64_t n, int64_t k, const float* A, int64_t lda, double* C) {
  if (n == 0 || k == 0) return;
  const int64_t kTile = tile_size(n);
  const int64_t tiles = (n + kTile - 1) / kTile;
  // Lower-triangle tile pairs (i >= j), largest work first is not needed: all tiles but the
  // last row/column are the same size.
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < tiles; ++i)
    for (int64_t j = 0; j <= i; ++j) pairs.emplace_back(i, j);
  const int threads = omp_in_parallel() ? 1 : num_threads();
  if (static_cast<int64_t>(pairs.size()) < threads && k >= 256 * threads) {
    // Too few tiles to share (a small Hessian): split the inner dimension instead, one fixed
    // range per thread, and add the partial products in thread order.
    std::vector<RowMat> part(threads);
    const int64_t chunk = (k + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) {
      const int64_t k0 = t * chunk, k1 = std::min(k, k0 + chunk);
      CMap a(A + k0, n, k1 - k0, Eigen::OuterStride<>(lda));
      part[t].noalias() = a * a.transpose();
    }
    for (int t = 0; t < threads; ++t)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j <= i; ++j) C[i * n + j] += part[t](i, j);
    return;
  }
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    static thread_local RowMat tile;  // reused: a fresh 256 KiB block per call would be page-faulted in
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < static_cast<int64_t>(pairs.size()); ++p) {
      const int64_t i0 = pairs[p].first * kTile, i1 = std::min(n, i0 + kTile);
      const int64_t j0 = pairs[p].second * kTile, j1 = std::min(n, j0 + kTile);
      CMap a(A + i0 * lda, i1 - i0, k, Eigen::OuterStride<>(lda));
      CMap b(A + j0 * lda, j1 - j0, k, Eigen::OuterStride<>(lda));
      tile.noalias() = a * b.transpose();
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t jend = std::min(j1, i + 1);  // lower triangle only
        double* c = C + i * n;
        const float* t = tile.data() + (i - i0) * (j1 - j0) - j0;
        for (int64_t j = j0; j < jend; ++j) c[j] += t[j];
      }
    }
  }
}

void symmetrize_from_lower(int64_t n, double* C) {
  // In 64 x 64 tiles: a plain row-by-row copy writes a column of C at a stride of n doubles,
  // which for a 4608-wide Hessian misses the cache on every element.
  constexpr int64_t T = 64;
  for (int64_t i0 = 0; i0 < n; i0 += T)
    for (int64_t j0 = 0; j0 <= i0; j0 += T)
      for (int64_t i = i0; i < std::min(n, i0 + T); ++i)
        for (int64_t j = j0; j < std::min(i, j0 + T); ++j) C[j * n + i] = C[i * n + j];
}

}  // namespace spade::kernels
