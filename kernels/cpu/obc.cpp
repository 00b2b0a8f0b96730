#include "kernels/cpu/obc.h"

#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "kernels/cpu/obc_block.h"
#include "kernels/cpu/parallel.h"

// How it is organised (see obc.h for what it computes):
//  1. prepare_hessian: dead columns, Cholesky of H with damping retries, H^-1 (shared by all rows).
//  2. RowGreedy::run, rows in parallel: the full greedy removal of one row, recording only the
//     order and the loss of each step (a full weight trace per row would not fit in memory).
//  3. obc_allocate_steps: the global choice of the cheapest steps over the layer -> r_i per row.
//  4. reconstruct_row: the row's weights after its first r_i steps, recomputed from scratch as the
//     least-squares optimum with those blocks zeroed (which is exactly what the greedy trace holds
//     after r_i steps, up to rounding).
namespace spade::kernels {

namespace {

using Mat = Eigen::MatrixXd;  // column-major
using Vec = Eigen::VectorXd;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kDampedTries = 8;  // lambda = 1, 10, ..., 1e7

// Downdate columns kept before they are applied to the stale H^-1 in one rank-k update. At 64
// the update is already as fast per flop as with more (it is limited by streaming the matrix),
// while the per-step cost of forming the current column from the stale one grows with it.
constexpr int64_t kLazyColumns = 64;

bool all_finite(const double* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// Makes A symmetric from one triangle (lower: A(j, i) = A(i, j) for i > j; else the other way),
// in square tiles so that neither side is walked with a large stride for long.
void symmetrize(Mat& A, bool from_lower) {
  const int64_t n = A.rows(), tile = 64;
  for (int64_t j0 = 0; j0 < n; j0 += tile)
    for (int64_t i0 = j0; i0 < n; i0 += tile) {
      const int64_t j1 = std::min(n, j0 + tile), i1 = std::min(n, i0 + tile);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < std::min(j1, i); ++j) {
          if (from_lower)
            A(j, i) = A(i, j);
          else
            A(i, j) = A(j, i);
        }
    }
}

// ---- the rank-k downdate of the stale inverse ------------------------------------------------

// C -= U U^T on the lower triangle of the a x a column-major C (leading dimension ldc), with U
// a x m column-major (leading dimension ldu). This is where nearly all of OBC's time goes.
#if defined(__AVX512F__)
// Eigen's triangular product sweeps each row stripe across all columns of C, touching a few
// cache lines per column on a new page each time; with C far larger than the caches that ran
// at ~50 GFLOP/s on the development machine. Here C is walked down 8-column panels (8
// sequential streams) in 24 x 8 register tiles, with U packed once per update: ~70 GFLOP/s.

// 64-byte aligned storage for the packed operands.
struct AlignedFree {
  void operator()(double* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using Packed = std::unique_ptr<double[], AlignedFree>;
Packed packed_buffer(int64_t count) {
  return Packed(static_cast<double*>(::operator new[](count * sizeof(double), std::align_val_t(64))));
}

// P[g][k][t] = U(g * w + t, k) for groups of w rows, zero-padded past row a.
void pack_rows(const double* U, int64_t ldu, int64_t a, int64_t m, int64_t w, double* P) {
  for (int64_t g = 0; g * w < a; ++g) {
    const int64_t r0 = g * w, rows = std::min(w, a - r0);
    for (int64_t k = 0; k < m; ++k) {
      const double* src = U + k * ldu + r0;
      double* dst = P + (g * m + k) * w;
      std::copy(src, src + rows, dst);
      std::fill(dst + rows, dst + w, 0.0);
    }
  }
}

// C(24 x 8 tile) -= A B^T with A = 24 packed rows, B = 8 packed rows, both m long. Masked: only
// rows r < rows, columns t < cols and r >= diag + t (the lower triangle) are written.
template <bool kMasked>
void syrk_tile(double* C, int64_t ldc, const double* A, const double* B, int64_t m, int64_t rows, int64_t cols,
               int64_t diag) {
  __m512d acc[3][8];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_pd();
  for (int t = 0; t < 8; ++t)  // C is needed only after the k loop: fetch it meanwhile
    for (int s = 0; s < 3; ++s) _mm_prefetch(reinterpret_cast<const char*>(C + t * ldc + 8 * s), _MM_HINT_T0);
  for (int64_t k = 0; k < m; ++k) {
    const __m512d a0 = _mm512_load_pd(A + k * 24), a1 = _mm512_load_pd(A + k * 24 + 8),
                  a2 = _mm512_load_pd(A + k * 24 + 16);
    for (int t = 0; t < 8; ++t) {
      const __m512d b = _mm512_set1_pd(B[k * 8 + t]);
      acc[0][t] = _mm512_fmadd_pd(a0, b, acc[0][t]);
      acc[1][t] = _mm512_fmadd_pd(a1, b, acc[1][t]);
      acc[2][t] = _mm512_fmadd_pd(a2, b, acc[2][t]);
    }
  }
  for (int t = 0; t < (kMasked ? cols : 8); ++t)
    for (int s = 0; s < 3; ++s) {
      double* p = C + t * ldc + 8 * s;
      if (!kMasked) {
        _mm512_storeu_pd(p, _mm512_sub_pd(_mm512_loadu_pd(p), acc[s][t]));
        continue;
      }
      const int64_t from = std::max<int64_t>(diag + t - 8 * s, 0), to = std::min<int64_t>(rows - 8 * s, 8);
      if (to <= from) continue;
      const __mmask8 mask = static_cast<__mmask8>(((1u << to) - 1u) & ~((1u << from) - 1u));
      _mm512_mask_storeu_pd(p, mask, _mm512_sub_pd(_mm512_maskz_loadu_pd(mask, p), acc[s][t]));
    }
}

class LowerRankUpdate {
 public:
  LowerRankUpdate(int64_t n, int64_t cap)
      : a_pack_(packed_buffer((n + 23) / 24 * 24 * cap)), b_pack_(packed_buffer((n + 7) / 8 * 8 * cap)) {}

  void run(double* C, int64_t ldc, const double* U, int64_t ldu, int64_t a, int64_t m) {
    if (a == 0 || m == 0) return;
    pack_rows(U, ldu, a, m, 24, a_pack_.get());
    pack_rows(U, ldu, a, m, 8, b_pack_.get());
    const int64_t mc = 480;  // rows of packed U kept in L2 while the panels go by
    for (int64_t i0 = 0; i0 < a; i0 += mc) {
      const int64_t i1 = std::min(a, i0 + mc);
      for (int64_t j = 0; j < i1; j += 8) {
        const int64_t cols = std::min<int64_t>(8, a - j);
        const double* B = b_pack_.get() + j * m;
        for (int64_t i = std::max(i0, j / 24 * 24); i < i1; i += 24) {
          const int64_t rows = std::min<int64_t>(24, a - i), diag = j - i;
          const double* A = a_pack_.get() + i * m;
          if (rows == 24 && cols == 8 && diag + 7 <= 0)
            syrk_tile<false>(C + i + j * ldc, ldc, A, B, m, rows, cols, diag);
          else
            syrk_tile<true>(C + i + j * ldc, ldc, A, B, m, rows, cols, diag);
        }
      }
    }
  }

 private:
  Packed a_pack_, b_pack_;
};
#else
class LowerRankUpdate {
 public:
  LowerRankUpdate(int64_t, int64_t) {}
  void run(double* C, int64_t ldc, const double* U, int64_t ldu, int64_t a, int64_t m) {
    using Stride = Eigen::OuterStride<>;
    Eigen::Map<Mat, 0, Stride> c(C, a, a, Stride(ldc));
    Eigen::Map<const Mat, 0, Stride> u(U, a, m, Stride(ldu));
    c.selfadjointView<Eigen::Lower>().rankUpdate(u, -1.0);
  }
};
#endif

// Blocked right-looking Cholesky of the lower triangle of A in place (the strict upper triangle
// is left as it was). Eigen's LLT does the same with its own triangular product for the trailing
// update, which runs at about half the speed of LowerRankUpdate on large matrices. False when A
// is not (numerically) positive definite.
bool cholesky_in_place(Mat& A) {
  const int64_t n = A.rows(), nb = 96;
  LowerRankUpdate update(n, nb);
  for (int64_t k0 = 0; k0 < n; k0 += nb) {
    const int64_t w = std::min(nb, n - k0), rest = n - k0 - w;
    Eigen::LLT<Mat> diag(A.block(k0, k0, w, w));
    const Mat& L = diag.matrixLLT();
    if (diag.info() != Eigen::Success || !(L.diagonal().array() > 0.0).all() || !L.allFinite()) return false;
    A.block(k0, k0, w, w).triangularView<Eigen::Lower>() = L;
    if (rest == 0) break;
    auto panel = A.block(k0 + w, k0, rest, w);
    L.triangularView<Eigen::Lower>().adjoint().solveInPlace<Eigen::OnTheRight>(panel);
    update.run(A.data() + (k0 + w) * (n + 1), n, panel.data(), n, rest, w);
  }
  return true;
}

// ---- 1. the Hessian -------------------------------------------------------------------------

struct Hessian {
  Mat H;     // symmetric (the lower triangle of the input mirrored), dead diagonals 1, damped
  Mat Hinv;  // H^-1, both triangles filled
  std::vector<char> dead;
};

// Inverse from the Cholesky factor, in fixed column chunks so that the result does not depend
// on the thread count. The lower part of columns j0.. of (L L^T)^-1 only involves the trailing
// factor L22 (it equals L22^-T L22^-1), which makes the whole inverse cost ~2n^3/3 instead of 2n^3.
Mat inverse_from_cholesky(const Mat& L, int threads) {
  const int64_t n = L.rows();
  const int64_t chunk = 64, chunks = (n + chunk - 1) / chunk;
  Mat inv(n, n);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t j0 = c * chunk, w = std::min(chunk, n - j0), m = n - j0;
    auto L22 = L.bottomRightCorner(m, m).triangularView<Eigen::Lower>();
    Mat y = Mat::Zero(m, w);
    y.topRows(w).setIdentity();
    L22.solveInPlace(y);
    L22.adjoint().solveInPlace(y);
    inv.block(j0, j0, m, w) = y;
  }
  symmetrize(inv, /*from_lower=*/true);
  return inv;
}

// Dead columns and the Cholesky factorisation with damping retries (stats filled in). False when
// H is not finite or stays indefinite; W is not touched here.
bool prepare_hessian(const double* Hp, int64_t n, Hessian& out, ObcStats& st, bool need_inverse, int threads) {
  if (!all_finite(Hp, n * n)) return false;  // damping cannot repair NaN/inf (and LLT would not notice)
  // Row-major read as column-major is H^T: its upper triangle is the input's lower one.
  Mat H = Eigen::Map<const Mat>(Hp, n, n);
  symmetrize(H, /*from_lower=*/false);
  out.dead.assign(n, 0);
  for (int64_t j = 0; j < n; ++j)
    if (H(j, j) == 0.0) {
      out.dead[j] = 1;
      H(j, j) = 1.0;
      ++st.dead_columns;
    }
  const Vec diag = H.diagonal();
  Mat L;
  for (int attempt = 0; attempt <= kDampedTries; ++attempt) {
    const double lambda = attempt == 0 ? 0.0 : std::pow(10.0, attempt - 1);
    H.diagonal() = diag.array() + lambda;
    L = H;
    if (cholesky_in_place(L)) {
      st.damping = lambda;
      st.retries = attempt;
      out.H = std::move(H);
      if (need_inverse) out.Hinv = inverse_from_cholesky(L, threads);
      return true;
    }
  }
  st.retries = kDampedTries + 1;
  return false;
}

// ---- small dense helpers for the block x block systems: kernels/cpu/obc_block.h ----------------

using obc_block::block_loss;
using obc_block::forward_solve;
using obc_block::small_cholesky;

// ---- 2. the greedy removal of one row --------------------------------------------------------

// Greedy OBS on one row with a lazily updated, symmetrically permuted H^-1.
//
// Blocks are addressed by position; the removed ones are swapped to the front, so that the active
// part of H^-1 is always the trailing a x a corner and the chosen block's column is contiguous
// in column-major lower storage. Only the lower triangle of S is kept. The current inverse is
//   Hinv = S - U U^T   on the active positions,
// where S is the stale matrix and U holds the last m downdate columns (Hinv -= G G^T with
// G = Hinv[:, b] L^-T, L L^T = Hinv_bb). Every step needs only the chosen block's current
// columns (stale column minus the U correction) and the diagonal blocks (kept exact in D);
// when U is full it is applied to S with one rank-m update, which runs at GEMM speed.
class RowGreedy {
 public:
  RowGreedy(int64_t n, int64_t B)
      : n_(n), B_(B), nb_(n / B), cap_(std::max(B, kLazyColumns / B * B)), S_(n, n), U_(n, cap_), C_(n, B),
        w_(n), D_(nb_ * B * B), loss_(nb_), perm_(nb_), scratch_(B * B + B), chol_(B * B), z_(B), update_(n, cap_) {}

  // w0: the row (length n, dead columns already zero); hinv: H^-1 in the original order.
  // Writes the original block index and the loss of every step.
  void run(const Mat& hinv, const double* w0, int32_t* order, double* step_loss) {
    load(hinv, w0);
    for (int64_t k = 0; k < nb_; ++k) {
      const int64_t p = cheapest(k);
      if (p != k) swap_positions(k, p);
      order[k] = perm_[k];
      step_loss[k] = remove_first_active(k);
    }
  }

 private:
  double* D(int64_t pos) { return D_.data() + pos * B_ * B_; }

  void load(const Mat& hinv, const double* w0) {
    for (int64_t j = 0; j < n_; ++j)  // the lower triangle only: that is all the steps read
      std::copy(hinv.data() + j * n_ + j, hinv.data() + (j + 1) * n_, S_.data() + j * n_ + j);
    std::copy(w0, w0 + n_, w_.data());
    m_ = 0;
    for (int64_t c = 0; c < nb_; ++c) {
      perm_[c] = static_cast<int32_t>(c);
      for (int64_t t = 0; t < B_; ++t)
        for (int64_t s = 0; s < B_; ++s) D(c)[s + t * B_] = hinv(c * B_ + s, c * B_ + t);
      loss_[c] = block_loss<0>(D(c), w_.data() + c * B_, B_, scratch_.data());
    }
  }

  // The active position with the smallest loss; ties go to the lowest original block index so
  // that the result does not depend on the internal permutation.
  int64_t cheapest(int64_t k) const {
    int64_t best = k;
    for (int64_t c = k + 1; c < nb_; ++c)
      if (loss_[c] < loss_[best] || (loss_[c] == loss_[best] && perm_[c] < perm_[best])) best = c;
    return best;
  }

  // Symmetric swap of block positions q < p in the lower triangle of S, restricted to the active
  // part (positions >= q), plus the matching rows of U and the per-position state.
  void swap_positions(int64_t q, int64_t p) {
    const int64_t B = B_, q0 = q * B, p0 = p * B;
    double* S = S_.data();
    const int64_t n = n_;
    auto at = [&](int64_t i, int64_t j) -> double& { return S[i + j * n]; };
    for (int64_t t = 0; t < B; ++t)  // diagonal blocks (their upper parts are never read)
      for (int64_t s = 0; s < B; ++s) std::swap(at(q0 + s, q0 + t), at(p0 + s, p0 + t));
    for (int64_t j = q0 + B; j < p0; ++j)  // between: (J, Q) <-> (P, J)^T
      for (int64_t t = 0; t < B; ++t) std::swap(at(j, q0 + t), at(p0 + t, j));
    for (int64_t t = 0; t < B; ++t)  // (P, Q) becomes its own transpose
      for (int64_t s = t + 1; s < B; ++s) std::swap(at(p0 + s, q0 + t), at(p0 + t, q0 + s));
    for (int64_t t = 0; t < B; ++t)  // below: whole column segments
      std::swap_ranges(&at(p0 + B, q0 + t), &at(0, q0 + t + 1), &at(p0 + B, p0 + t));
    for (int64_t c = 0; c < m_; ++c)
      for (int64_t t = 0; t < B; ++t) std::swap(U_(q0 + t, c), U_(p0 + t, c));
    std::swap_ranges(D(q), D(q) + B * B, D(p));
    std::swap_ranges(w_.data() + q0, w_.data() + q0 + B, w_.data() + p0);
    std::swap(loss_[q], loss_[p]);
    std::swap(perm_[q], perm_[p]);
  }

  // One OBS step removing the block at position k (the first active one). Returns its loss.
  double remove_first_active(int64_t k) {
    const int64_t B = B_, k0 = k * B, a = n_ - k0, rest = a - B;
    // Hinv_bb from the exactly maintained diagonal block; the same matrix the loss was chosen by.
    double* L = chol_.data();
    if (!small_cholesky<0>(D(k), B, B, L)) jittered_cholesky(D(k), L);
    double* z = z_.data();
    std::copy(w_.data() + k0, w_.data() + k0 + B, z);
    forward_solve<0>(L, B, z);
    double loss = 0;
    for (int64_t t = 0; t < B; ++t) loss += z[t] * z[t];
    std::fill(w_.data() + k0, w_.data() + k0 + B, 0.0);
    if (rest == 0) return loss;

    // G = Hinv[rest, b] L^-T for the remaining rows: stale column minus the buffered corrections.
    auto G = C_.topRows(rest);
    G = S_.block(k0 + B, k0, rest, B);
    if (m_ > 0) G.noalias() -= U_.block(k0 + B, 0, rest, m_) * U_.block(k0, 0, B, m_).transpose();
    Eigen::Map<const Mat> Lm(L, B, B);
    Lm.triangularView<Eigen::Lower>().adjoint().solveInPlace<Eigen::OnTheRight>(G);

    // w -= Hinv[:, b] Hinv_bb^-1 w_b = G z; diagonal blocks -= G_c G_c^T; new losses.
    if (B == 1)
      update_remaining_single(k, z[0]);
    else if (B == 9)
      update_remaining_blocks<9>(k, z);
    else
      update_remaining_blocks<0>(k, z);

    U_.block(k0 + B, m_, rest, B) = G;
    m_ += B;
    if (m_ + B > cap_) flush(k0 + B);
    return loss;
  }

  // The part of a step after G (in C_) is known, for single columns: one vectorisable pass.
  void update_remaining_single(int64_t k, double z) {
    const int64_t rest = nb_ - k - 1;
    const double* g = C_.data();
    double* w = w_.data() + k + 1;
    double* d = D_.data() + k + 1;
    double* loss = loss_.data() + k + 1;
    for (int64_t c = 0; c < rest; ++c) {
      w[c] -= g[c] * z;
      d[c] -= g[c] * g[c];
      const double l = w[c] * w[c] / d[c];
      loss[c] = d[c] > 0.0 && l <= kInf ? l : kInf;  // see block_loss
    }
  }

  template <int kB>
  void update_remaining_blocks(int64_t k, const double* z) {
    const int64_t B = kB > 0 ? kB : B_, k0 = k * B, rest = n_ - k0 - B, ld = n_;
    w_.segment(k0 + B, rest).noalias() -= C_.topRows(rest) * Eigen::Map<const Vec>(z, B);
    for (int64_t c = k + 1; c < nb_; ++c) {
      const double* g = C_.data() + (c - k - 1) * B;  // G_c: B x B, leading dimension ld
      double* Dc = D(c);
      for (int64_t t = 0; t < B; ++t)  // lower triangle of D_c -= G_c G_c^T
        for (int64_t s = t; s < B; ++s) {
          double v = Dc[s + t * B];
          for (int64_t u = 0; u < B; ++u) v -= g[s + u * ld] * g[t + u * ld];
          Dc[s + t * B] = v;
        }
      loss_[c] = block_loss<kB>(Dc, w_.data() + c * B, B, scratch_.data());
    }
  }

  // S -= U U^T on the active lower triangle (from row/column a0 on), emptying the buffer.
  void flush(int64_t a0) {
    const int64_t a = n_ - a0;
    update_.run(S_.data() + a0 + a0 * n_, n_, U_.data() + a0, n_, a, m_);
    m_ = 0;
  }

  // Hinv_bb lost positive definiteness to rounding (only for hopelessly conditioned H): factor it
  // with a growing diagonal jitter, finally as its diagonal, so that the step still completes.
  void jittered_cholesky(const double* Dk, double* L) const {
    const int64_t B = B_;
    double scale = 0;
    for (int64_t s = 0; s < B; ++s) scale = std::max(scale, std::fabs(Dk[s + s * B]));
    if (!(scale > 0) || !std::isfinite(scale)) scale = 1;
    std::vector<double> A(Dk, Dk + B * B);
    for (double eps = 1e-12 * scale; eps <= scale; eps *= 100) {
      for (int64_t s = 0; s < B; ++s) A[s + s * B] = Dk[s + s * B] + eps;
      if (small_cholesky<0>(A.data(), B, B, L)) return;
    }
    std::fill(L, L + B * B, 0.0);
    for (int64_t s = 0; s < B; ++s) L[s + s * B] = std::sqrt(std::max(std::fabs(Dk[s + s * B]), scale * 1e-12));
  }

  int64_t n_, B_, nb_, cap_, m_ = 0;
  Mat S_, U_, C_;
  Vec w_;
  std::vector<double> D_;
  std::vector<double> loss_;
  std::vector<int32_t> perm_;
  std::vector<double> scratch_, chol_, z_;  // small per-step buffers
  LowerRankUpdate update_;
};

// ---- 4. reconstruction ---------------------------------------------------------------------

// Solves A x = b for symmetric positive definite A (LDLT when rounding defeats Cholesky).
Vec spd_solve(Mat A, const Vec& b) {
  // The factorisation writes only the lower triangle, so the upper one still holds A.
  if (!cholesky_in_place(A)) return Eigen::LDLT<Mat, Eigen::Upper>(A).solve(b);
  Vec x = A.triangularView<Eigen::Lower>().solve(b);
  A.triangularView<Eigen::Lower>().adjoint().solveInPlace(x);
  return x;
}

// The row's weights once the blocks order[0..r) are removed: w_S = 0 and the rest compensated
// optimally. Uses whichever system is smaller:
//   |S| <= |F|:  w' = w - Hinv[:, S] (Hinv_SS)^-1 w_S
//   otherwise:   w'_F = w_F + (H_FF)^-1 H_FS w_S
void reconstruct_row(const Hessian& hs, int64_t B, const int32_t* order, int64_t r, double* w) {
  const int64_t n = hs.H.rows(), nb = n / B;
  if (r == 0) return;
  std::vector<char> removed(n, 0);
  for (int64_t k = 0; k < r; ++k)
    for (int64_t t = 0; t < B; ++t) removed[order[k] * B + t] = 1;
  std::vector<int64_t> S, F;
  for (int64_t j = 0; j < n; ++j) (removed[j] ? S : F).push_back(j);
  Vec wS(S.size());
  for (size_t s = 0; s < S.size(); ++s) wS[s] = w[S[s]];
  if (r < nb && S.size() <= F.size()) {
    const Vec y = spd_solve(hs.Hinv(S, S), wS);
    Eigen::Map<Vec> wv(w, n);
    for (size_t s = 0; s < S.size(); ++s) wv.noalias() -= y[s] * hs.Hinv.col(S[s]);
  } else if (r < nb) {
    Vec b = Vec::Zero(F.size());
    for (size_t s = 0; s < S.size(); ++s)
      for (size_t f = 0; f < F.size(); ++f) b[f] += hs.H(F[f], S[s]) * wS[s];
    const Vec x = spd_solve(hs.H(F, F), b);
    for (size_t f = 0; f < F.size(); ++f) w[F[f]] += x[f];
  }
  for (int64_t j : S) w[j] = 0.0;
}

}  // namespace

ObcStats obc_prune(float* W, int64_t rows, int64_t cols, const double* Hp, const ObcOptions& opt) {
  ObcStats st;
  const int64_t B = opt.block;
  if (B <= 0 || rows < 0 || cols < 0 || (cols > 0 && cols % B != 0) || !(opt.sparsity >= 0.0) ||
      !(opt.sparsity <= 1.0)) {
    st.ok = false;
    return st;
  }
  if (rows == 0 || cols == 0) return st;
  const int64_t n = cols, nb = cols / B, total = rows * nb;
  // ceil with a guard against representation error: 0.5 * 8 must give 4, not 5.
  const int64_t count =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(total) * opt.sparsity - 1e-9)), 0, total);
  // num_threads() also pins Eigen to one thread inside our parallel regions; called from inside
  // someone else's parallel region, this runs on the calling thread alone.
  const int configured = std::max(1, num_threads());
  const int threads = omp_in_parallel() ? 1 : configured;

  Hessian hs;
  if (!prepare_hessian(Hp, n, hs, st, count > 0, threads)) {
    st.ok = false;
    return st;
  }

  // Rows in double with dead columns zeroed.
  std::vector<double> Wd(rows * n);
  for (int64_t i = 0; i < rows * n; ++i) Wd[i] = hs.dead[i % n] ? 0.0 : static_cast<double>(W[i]);

  if (count > 0) {
    std::vector<int32_t> order(total);
    std::vector<double> loss(total);
    const int team = static_cast<int>(std::min<int64_t>(threads, rows));
    std::atomic<int64_t> done{0};
#pragma omp parallel num_threads(team)
    {
      RowGreedy greedy(n, B);  // per thread: an n x n workspace
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < rows; ++i) {
        greedy.run(hs.Hinv, Wd.data() + i * n, order.data() + i * nb, loss.data() + i * nb);
        const int64_t d = ++done;
        if (omp_get_thread_num() == 0 && opt.progress) opt.progress(d);  // the calling thread only
      }
    }
    for (double& l : loss)
      if (std::isnan(l)) l = kInf;  // keeps the allocation's ordering a strict weak order

    const std::vector<int64_t> r = obc_allocate_steps(loss, rows, nb, count);
    for (int64_t i = 0; i < rows; ++i) {
      st.removed_blocks += r[i];
      double row_loss = 0;
      for (int64_t k = 0; k < r[i]; ++k) row_loss += loss[i * nb + k];
      st.loss += row_loss;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
    for (int64_t i = 0; i < rows; ++i) reconstruct_row(hs, B, order.data() + i * nb, r[i], Wd.data() + i * n);
  }

  for (int64_t i = 0; i < rows * n; ++i) W[i] = static_cast<float>(Wd[i]);
  if (opt.progress) opt.progress(rows);
  return st;
}

std::vector<int64_t> obc_allocate_steps(const std::vector<double>& loss, int64_t rows, int64_t nb, int64_t count) {
  std::vector<int64_t> r(rows, 0);
  const int64_t total = rows * nb;
  if (count >= total) {
    std::fill(r.begin(), r.end(), nb);
    return r;
  }
  std::vector<int64_t> idx(total);
  for (int64_t i = 0; i < total; ++i) idx[i] = i;
  auto less = [&](int64_t x, int64_t y) { return loss[x] < loss[y] || (loss[x] == loss[y] && x < y); };
  std::nth_element(idx.begin(), idx.begin() + count, idx.end(), less);
  for (int64_t i = 0; i < count; ++i) ++r[idx[i] / nb];
  return r;
}

}  // namespace spade::kernels
