#include "kernels/cpu/sparsegpt.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace spade::kernels {

namespace {

using ColMat = Eigen::MatrixXf;

// In-place inverse of the upper triangle of U (lower triangle ignored, left unspecified), by
// halves: inv([A B; 0 C]) = [A^-1, -A^-1 B C^-1; 0, C^-1]. About n^3/3 flops, most of them in
// Eigen's triangular matrix products.
void invert_upper(Eigen::Ref<ColMat> U) {
  const int64_t n = U.rows();
  if (n <= 64) {
    ColMat inv = U.triangularView<Eigen::Upper>().solve(ColMat::Identity(n, n));
    U = inv;
    return;
  }
  const int64_t h = n / 2;
  invert_upper(U.topLeftCorner(h, h));
  invert_upper(U.bottomRightCorner(n - h, n - h));
  ColMat t = U.topRightCorner(h, n - h) * U.bottomRightCorner(n - h, n - h).triangularView<Eigen::Upper>();
  U.topRightCorner(h, n - h).noalias() = -(U.topLeftCorner(h, h).triangularView<Eigen::Upper>() * t);
}

// Given r = P A P (P the reversal permutation; column-major), writes the upper U with
// U^T U = A^-1 (row-major) and returns false if A is not positive definite.
// P A P = R^T R (R upper) gives A^-1 = P R^-1 R^-T P = U^T U with U = P R^-T P, which is upper
// triangular with a positive diagonal: the unique factor. Element-wise U[i][j] = R^-1[n-1-j][n-1-i],
// which in R^-1's column-major storage is entry n*n - 1 - (i*n + j): U is R^-1's storage reversed.
bool factor_reversed(ColMat& r, float* U) {
  const int64_t n = r.rows();
  Eigen::LLT<Eigen::Ref<ColMat>, Eigen::Upper> llt(r);
  if (llt.info() != Eigen::Success) return false;
  for (int64_t i = 0; i < n; ++i)
    if (!(r(i, i) > 0.f) || !std::isfinite(r(i, i))) return false;
  invert_upper(r);
  r.triangularView<Eigen::StrictlyLower>().setZero();
  std::reverse_copy(r.data(), r.data() + n * n, U);
  return true;
}

// The mask of one block: which of the n = rows * bs scores (block-major: score[k * rows + r]) are
// pruned.
void choose_mask(const std::vector<float>& score, double sparsity, bool authors, std::vector<char>& mask) {
  const int64_t n = static_cast<int64_t>(score.size());
  mask.assign(n, 0);
  if (n == 0) return;
  if (authors) {
    // torch.sort(tmp.flatten())[0][int(numel * sparsity)]; mask = tmp <= thresh
    std::vector<float> sorted = score;
    std::sort(sorted.begin(), sorted.end());
    const int64_t at = std::min<int64_t>(n - 1, static_cast<int64_t>(static_cast<double>(n) * sparsity));
    const float thresh = sorted[at];
    for (int64_t i = 0; i < n; ++i) mask[i] = score[i] <= thresh;
    return;
  }
  const int64_t k = std::min<int64_t>(n, std::llround(static_cast<double>(n) * sparsity));
  if (k == 0) return;
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  auto less = [&](int64_t a, int64_t b) { return score[a] < score[b] || (score[a] == score[b] && a < b); };
  std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), less);
  for (int64_t i = 0; i < k; ++i) mask[idx[i]] = 1;
}

}  // namespace

bool inverse_upper_cholesky(int64_t n, const float* A, float* U) {
  // For a symmetric A, the column-major storage of P A P is A's storage reversed.
  ColMat r(n, n);
  std::reverse_copy(A, A + n * n, r.data());
  return factor_reversed(r, U);
}

SparseGptStats sparsegpt_prune(float* W, int64_t rows, int64_t cols, const double* H, const SparseGptOptions& opt) {
  SparseGptStats st;
  const int64_t bs = std::max<int64_t>(1, opt.blocksize);
  std::vector<char> dead(cols, 0);
  double mean_diag = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    const double d = H[j * cols + j];
    dead[j] = d == 0.0;
    st.dead_columns += dead[j];
    mean_diag += dead[j] ? 1.0 : static_cast<float>(d);
  }
  mean_diag /= static_cast<double>(std::max<int64_t>(1, cols));
  const float base = static_cast<float>(opt.percdamp * mean_diag);

  // Damped factorisation in float32 like the reference; on failure the damping grows tenfold
  // (at most 6 tries).
  std::vector<float> U(cols * cols);
  ColMat r(cols, cols);
  bool factored = false;
  for (int attempt = 0; attempt < 6 && !factored; ++attempt) {
    const float lambda = base * std::pow(10.f, static_cast<float>(attempt));
    const int64_t nn = cols * cols;
    float* rd = r.data();
    for (int64_t m = 0; m < nn; ++m) rd[m] = static_cast<float>(H[nn - 1 - m]);  // P H P (see factor_reversed)
    for (int64_t j = 0; j < cols; ++j) {
      float& d = rd[(cols - 1 - j) * cols + (cols - 1 - j)];
      if (dead[j]) d = 1.f;  // a dead input: H_jj = 1 (its weights are zeroed below)
      d += lambda;
    }
    factored = factor_reversed(r, U.data());
    st.damping = lambda;
    st.retries = attempt;
  }
  if (!factored) {
    st.ok = false;
    return st;
  }

  // Work on W^T so that a column of W is a contiguous row.
  std::vector<float> wt(cols * rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) wt[j * rows + r] = dead[j] ? 0.f : W[r * cols + j];

  const std::vector<float> start = wt;
  double err_sq = 0.0;
  const int64_t lazy = std::min(cols, std::max<int64_t>(1, (128 + bs - 1) / bs) * bs);
  std::vector<float> neg_err(lazy * rows), ublk, score;
  std::vector<char> mask;
  for (int64_t i1 = 0; i1 < cols; i1 += lazy) {
    const int64_t i2 = std::min(cols, i1 + lazy), count = i2 - i1;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t col = i1 + j;
      const int64_t jb = j % bs;
      if (jb == 0) {  // choose the mask of columns [col, col + bs) from their current values
        const int64_t width = std::min(bs, i2 - col);
        score.resize(width * rows);
        for (int64_t k = 0; k < width; ++k) {
          const float d = U[(col + k) * cols + col + k];
          const float* w = wt.data() + (col + k) * rows;
          for (int64_t r = 0; r < rows; ++r) score[k * rows + r] = w[r] * w[r] / (d * d);
        }
        choose_mask(score, opt.sparsity, opt.authors_threshold, mask);
      }
      const float d = U[col * cols + col];
      float* w = wt.data() + col * rows;
      float* e = neg_err.data() + j * rows;
      const char* m = mask.data() + jb * rows;
      for (int64_t r = 0; r < rows; ++r) {
        const float q = m[r] ? 0.f : w[r];
        const float err = (w[r] - q) / d;
        err_sq += static_cast<double>(err) * err;
        st.pruned += m[r];
        e[r] = -err;
        w[r] = q;
      }
      // Feed this column's error to the rest of the lazy block: W[:, k] -= err * U[col, k].
      const float* urow = U.data() + col * cols;
      for (int64_t k = col + 1; k < i2; ++k) {
        const float u = urow[k];
        float* wk = wt.data() + k * rows;
        for (int64_t r = 0; r < rows; ++r) wk[r] += e[r] * u;
      }
    }
    if (i2 < cols) {  // W[:, i2:] -= Err_block U[i1:i2, i2:], as W^T[i2:] += U[i1:i2, i2:]^T (-Err)^T
      const int64_t rest = cols - i2;
      ublk.resize(count * rest);
      for (int64_t k = 0; k < count; ++k)
        std::copy(U.data() + (i1 + k) * cols + i2, U.data() + (i1 + k + 1) * cols, ublk.data() + k * rest);
      gemm(true, false, rest, rows, count, ublk.data(), neg_err.data(), wt.data() + i2 * rows, true);
    }
  }
  double change = 0.0;
  for (int64_t i = 0; i < cols * rows; ++i) change += static_cast<double>(wt[i] - start[i]) * (wt[i] - start[i]);
  st.loss = std::max(0.0, err_sq - static_cast<double>(st.damping) * change);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) W[r * cols + j] = wt[j * rows + r];
  return st;
}

}  // namespace spade::kernels
