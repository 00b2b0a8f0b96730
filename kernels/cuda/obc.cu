#include "kernels/cuda/obc.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/obc_block.h"
#include "kernels/cuda/cuda_check.h"

// How it is organised (kernels/cpu/obc.cpp has the same four parts, and obc.h the method):
//  1. prepare_hessian: finite check, dead columns, cuSOLVER Cholesky with the CPU's damping
//     retries, H^-1.
//  2. The greedy pass, a batch of rows ("problems") at a time, one CTA per row. Each problem
//     keeps the CPU's lazily updated, symmetrically permuted inverse: the removed blocks are
//     swapped to the front, so the active part is the trailing a x a corner of an n x n
//     column-major S (lower triangle), and  Hinv = S - U U^T  with U the downdate columns
//     since the last flush; the diagonal blocks D are kept exact. All problems of a batch take
//     one step per iteration, so their active corners have the same size: a CTA runs the steps
//     until U is full (`cap` columns) in one launch, then one batched cuBLAS DGEMM per column
//     chunk applies U to every problem's S (the flush, where nearly all flops are; the per-step
//     work in the kernel streams O(a * cap) values).
//  3. The global allocation on the host, exactly as the CPU does it, from the step losses.
//  4. Final weights: the rows are replayed with their recorded removal order up to r_i steps
//     (the same kernels with the choice forced), which gives the greedy trace's weights after r_i
//     steps; the CPU recomputes the same point with a direct solve. Replayed rows are sorted by
//     r_i so that a batch stops near its rows' own step counts.
// Everything is float64 like the CPU, so step losses agree to rounding and masks agree except
// where losses tie within it.
namespace spade::cuda {

namespace {

using kernels::ObcOptions;
using kernels::ObcStats;

constexpr int kThreads = 256;
constexpr int kDampedTries = 8;  // lambda = 1, 10, ..., 1e7
constexpr double kInf = static_cast<double>(INFINITY);
// Steps per flush. Two streams of memory traffic dominate: forming each step's current column
// reads the a x (s * B) buffer (~2 s n^2 bytes per row over the pass), and each flush rewrites the
// active lower triangle (~10 n^3 / (3 s B) bytes per row); their sum is smallest at
// s = sqrt(5 n / (3 B)). At least 32 buffered columns, so that the flush GEMM is not too shallow.
int64_t steps_per_flush(int64_t n, int64_t B) {
  const int64_t s = std::llround(std::sqrt(5.0 * static_cast<double>(n) / (3.0 * static_cast<double>(B))));
  return std::max<int64_t>({s, (32 + B - 1) / B, 1});
}

int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) throw Error(std::string("GPU OBC: ") + what + " exceeds the 32-bit limit of cuBLAS/cuSOLVER");
  return static_cast<int>(v);
}

int blocks_for(int64_t work, int64_t cap = 4096) {
  return static_cast<int>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, cap));
}

// ---- 1. the Hessian ---------------------------------------------------------------------------

// Hs = H made symmetric from its lower triangle (row-major: H[i][j], i >= j), dead diagonals 1;
// *bad set when any entry of H is not finite (damping cannot repair those).
__global__ void symmetrize_kernel(const double* __restrict__ H, int64_t n, double* __restrict__ Hs, int* bad) {
  const int64_t total = n * n;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    const double v = H[idx];
    if (!isfinite(v)) atomicOr(bad, 1);
    double s = i >= j ? v : H[j * n + i];
    if (i == j && s == 0.0) s = 1.0;
    Hs[idx] = s;
  }
}

__global__ void add_diagonal_kernel(const double* __restrict__ Hs, int64_t n, double lambda, double* __restrict__ A) {
  const int64_t total = n * n;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x)
    A[idx] = idx % (n + 1) == 0 ? Hs[idx] + lambda : Hs[idx];
}

// Column-major: the strict upper triangle from the lower one (which potri wrote).
__global__ void mirror_lower_kernel(double* A, int64_t n) {
  const int64_t total = n * n;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx % n, c = idx / n;
    if (r < c) A[idx] = A[c + r * n];
  }
}

__global__ void zero_dead_columns_kernel(float* W, int64_t rows, int64_t n, const uint8_t* __restrict__ dead) {
  const int64_t total = rows * n;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x)
    if (dead[idx % n]) W[idx] = 0.f;
}

// The sizes cuSOLVER takes are int; the factor and its inverse overwrite A.
struct CholeskySolver {
  CudaContext& ctx;
  int n;
  DeviceBuffer work, info;
  int lwork = 0;

  CholeskySolver(CudaContext& c, int64_t size, double* A) : ctx(c), n(checked_int(size, "the column count")) {
    int lf = 0, li = 0;
    SPADE_CUDA_CHECK(cusolverDnDpotrf_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, A, n, &lf),
                     "sizing the OBC Cholesky workspace");
    SPADE_CUDA_CHECK(cusolverDnDpotri_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, A, n, &li),
                     "sizing the OBC inverse workspace");
    lwork = std::max({lf, li, 1});
    work = ctx.allocate(sizeof(double) * lwork);
    info = ctx.allocate(sizeof(int));
  }

  int read_info(const char* what) {
    int h = 0;
    SPADE_CUDA_CHECK(cudaMemcpyAsync(&h, info.data(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()), what);
    ctx.synchronize();
    if (h < 0) throw Error(std::string("GPU OBC: cuSOLVER rejected argument ") + std::to_string(-h) + " while " + what);
    return h;
  }
  bool factor(double* A) {
    SPADE_CUDA_CHECK(cusolverDnDpotrf(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, A, n, work.data_as<double>(), lwork,
                                      info.data_as<int>()),
                     "factoring the OBC Hessian");
    return read_info("factoring the OBC Hessian") == 0;
  }
  void invert(double* A) {
    SPADE_CUDA_CHECK(cusolverDnDpotri(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, n, A, n, work.data_as<double>(), lwork,
                                      info.data_as<int>()),
                     "inverting the OBC Hessian");
    if (read_info("inverting the OBC Hessian") != 0) throw Error("GPU OBC: the factored Hessian turned out singular");
  }
};

// Dead columns and the Cholesky factorisation with damping retries (stats filled in); hinv gets
// the full symmetric H^-1 when asked for. False when H is not finite or stays indefinite.
bool prepare_hessian(CudaContext& ctx, const double* H, int64_t n, bool need_inverse, DeviceBuffer& hinv,
                     std::vector<uint8_t>& dead, ObcStats& st) {
  cudaStream_t s = ctx.stream();
  DeviceBuffer Hs = ctx.allocate(sizeof(double) * n * n), bad = ctx.allocate(sizeof(int));
  SPADE_CUDA_CHECK(cudaMemsetAsync(bad.data(), 0, sizeof(int), s), "clearing the OBC finite flag");
  symmetrize_kernel<<<blocks_for(n * n), kThreads, 0, s>>>(H, n, Hs.data_as<double>(), bad.data_as<int>());
  SPADE_CUDA_CHECK_LAUNCH("symmetrizing the OBC Hessian");
  int bad_h = 0;
  std::vector<double> diag(n);
  SPADE_CUDA_CHECK(cudaMemcpyAsync(&bad_h, bad.data(), sizeof(int), cudaMemcpyDeviceToHost, s),
                   "reading the OBC finite flag");
  SPADE_CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(double), H, sizeof(double) * (n + 1), sizeof(double), n,
                                     cudaMemcpyDeviceToHost, s),
                   "reading the OBC Hessian's diagonal");
  ctx.synchronize();
  if (bad_h) return false;
  dead.assign(n, 0);
  for (int64_t j = 0; j < n; ++j)
    if (diag[j] == 0.0) {
      dead[j] = 1;
      ++st.dead_columns;
    }

  DeviceBuffer A = ctx.allocate(sizeof(double) * n * n);
  CholeskySolver chol(ctx, n, A.data_as<double>());
  for (int attempt = 0; attempt <= kDampedTries; ++attempt) {
    const double lambda = attempt == 0 ? 0.0 : std::pow(10.0, attempt - 1);
    add_diagonal_kernel<<<blocks_for(n * n), kThreads, 0, s>>>(Hs.data_as<double>(), n, lambda, A.data_as<double>());
    SPADE_CUDA_CHECK_LAUNCH("damping the OBC Hessian");
    if (chol.factor(A.data_as<double>())) {
      st.damping = lambda;
      st.retries = attempt;
      if (need_inverse) {
        chol.invert(A.data_as<double>());
        mirror_lower_kernel<<<blocks_for(n * n), kThreads, 0, s>>>(A.data_as<double>(), n);
        SPADE_CUDA_CHECK_LAUNCH("mirroring the OBC inverse");
        hinv = std::move(A);
      }
      return true;
    }
  }
  st.retries = kDampedTries + 1;
  return false;
}

// ---- small dense helpers for the block x block systems: kernels/cpu/obc_block.h, as on the CPU -

using kernels::obc_block::block_loss;
using kernels::obc_block::forward_solve;
using kernels::obc_block::small_cholesky;

// Hinv_bb lost positive definiteness to rounding: factor it with a growing diagonal jitter,
// finally as its diagonal (the CPU's rule). A: B * B doubles of scratch.
__device__ void jittered_cholesky(const double* Dk, int64_t B, double* L, double* A) {
  double scale = 0;
  for (int64_t s = 0; s < B; ++s) scale = fmax(scale, fabs(Dk[s + s * B]));
  if (!(scale > 0) || !isfinite(scale)) scale = 1;
  for (int64_t i = 0; i < B * B; ++i) A[i] = Dk[i];
  for (double eps = 1e-12 * scale; eps <= scale; eps *= 100) {
    for (int64_t s = 0; s < B; ++s) A[s + s * B] = Dk[s + s * B] + eps;
    if (small_cholesky<0>(A, B, B, L)) return;
  }
  for (int64_t i = 0; i < B * B; ++i) L[i] = 0.0;
  for (int64_t s = 0; s < B; ++s) L[s + s * B] = sqrt(fmax(fabs(Dk[s + s * B]), scale * 1e-12));
}

__device__ __forceinline__ void swap_values(double* a, double* b) {
  const double t = *a;
  *a = *b;
  *b = t;
}

// ---- 2. the greedy pass -------------------------------------------------------------------------

// What the kernels of one batch see. Problem p's arrays start at p times their per-problem size.
struct Batch {
  int64_t n, B, nb, cap;
  const double* hinv;      // n x n, symmetric
  float* W;                // rows x n (dead columns zeroed); the replay writes its rows' results
  const int64_t* rows_of;  // problem -> row; null: row0 + problem
  int64_t row0;
  int32_t* order;          // rows x nb: original block removed at each step (written, or replayed)
  double* step_loss;       // rows x nb (written by the greedy pass)
  const int64_t* steps;    // rows: r_i (replay only)
  // Per problem:
  double* S;        // n x n column-major, the stale inverse (lower triangle of the active part)
  double* U;        // n x cap column-major, the downdate columns since the last flush
  double* D;        // nb blocks of B x B column-major: the exact diagonal blocks
  double* scratch;  // nb + 1 slots of B * B + B: per-position factorisations; the last, the step's L, z
  double* w;        // n, the row in position order
  double* loss;     // nb, the loss of removing each position now
  int32_t* perm;    // nb, original block index at each position
};

struct ArgminShared {
  double loss[kThreads / 32];
  int perm[kThreads / 32];
  int pos[kThreads / 32];
  int pick;
};

__device__ __forceinline__ bool better(double la, int pa, double lb, int pb) {
  return la < lb || (la == lb && pa < pb);
}

// The position with the smallest (loss, original index) over the CTA: the CPU's rule (ties go to
// the lowest original block). Every thread gets it.
__device__ int block_argmin(double l, int pm, int pos, ArgminShared& sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const double ol = __shfl_down_sync(0xffffffffu, l, o);
    const int op = __shfl_down_sync(0xffffffffu, pm, o), opos = __shfl_down_sync(0xffffffffu, pos, o);
    if (better(ol, op, l, pm)) l = ol, pm = op, pos = opos;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh.loss[warp] = l, sh.perm[warp] = pm, sh.pos[warp] = pos;
  __syncthreads();
  if (threadIdx.x == 0) {
    int best = 0;
    for (int i = 1; i < kThreads / 32; ++i)
      if (better(sh.loss[i], sh.perm[i], sh.loss[best], sh.perm[best])) best = i;
    sh.pick = sh.pos[best];
  }
  __syncthreads();
  return sh.pick;
}

// acc[u] = S(r, c0 + u) - U(r, :m) . U(c0 + u, :m) for u < cnt (<= kChunk): the current H^-1
// entries of row r in columns c0.., from the stale S and the buffered downdates.
template <int kChunk>
__device__ __forceinline__ void current_entries(const double* S, const double* U, int64_t n, int64_t r, int64_t c0,
                                                int64_t cnt, int64_t m, double* acc) {
#pragma unroll
  for (int u = 0; u < kChunk; ++u) acc[u] = u < cnt ? S[r + (c0 + u) * n] : 0.0;
#pragma unroll 4
  for (int64_t v = 0; v < m; ++v) {
    const double x = U[r + v * n];
    const double* q = U + c0 + v * n;
#pragma unroll
    for (int u = 0; u < kChunk; ++u)
      if (u < cnt) acc[u] -= x * q[u];
  }
}

// Steps [k_begin, k_end) of every problem of the batch, one CTA per problem; the caller flushes
// U into S between launches. kReplay: the removal order is read instead of chosen, nothing is
// recorded, and the row's weights are written to W after its r_i-th step.
template <int kB, bool kReplay>
__global__ void __launch_bounds__(kThreads) greedy_kernel(Batch b, int64_t k_begin, int64_t k_end) {
  __shared__ ArgminShared sh;
  const int tid = threadIdx.x;
  const int64_t prob = blockIdx.x;
  const int64_t row = b.rows_of ? b.rows_of[prob] : b.row0 + prob;
  const int64_t n = b.n, B = kB > 0 ? kB : b.B, nb = b.nb, BB = B * B, slot = BB + B;
  const int64_t last = kReplay ? min(k_end, b.steps[row]) : k_end;
  if (k_begin >= last) return;  // a replayed row that is already written
  double* S = b.S + prob * n * n;
  double* U = b.U + prob * n * b.cap;
  double* D = b.D + prob * nb * BB;
  double* scratch = b.scratch + prob * (nb + 1) * slot;
  double* w = b.w + prob * n;
  double* loss = b.loss + prob * nb;
  int32_t* perm = b.perm + prob * nb;
  double* L = scratch + nb * slot;  // the removed block's factor and z = L^-1 w_b, for all threads
  double* z = L + BB;
  // block_loss's workspace: per thread where its size is a compile-time constant (local memory is
  // interleaved across a warp, so those accesses coalesce), else the position's slot.
  double local[kB > 0 ? kB * kB + kB : 1];
  auto workspace = [&](int64_t c) { return kB > 0 ? local : scratch + c * slot; };

  if (k_begin == 0) {
    for (int64_t r = tid; r < n; r += kThreads) w[r] = static_cast<double>(b.W[row * n + r]);
    for (int64_t c = tid; c < nb; c += kThreads) {
      perm[c] = static_cast<int32_t>(c);
      for (int64_t i = 0; i < BB; ++i) D[c * BB + i] = b.hinv[(c * B + i % B) + (c * B + i / B) * n];
    }
    __syncthreads();
    if (!kReplay) {
      for (int64_t c = tid; c < nb; c += kThreads) loss[c] = block_loss<kB>(D + c * BB, w + c * B, B, workspace(c));
      __syncthreads();
    }
  }

  for (int64_t k = k_begin; k < last; ++k) {
    const int64_t m = (k - k_begin) * B, k0 = k * B;

    // The block to remove, moved to position k.
    int64_t p;
    if (kReplay) {
      const int32_t target = b.order[row * nb + k];
      for (int64_t c = k + tid; c < nb; c += kThreads)
        if (perm[c] == target) sh.pick = static_cast<int>(c);
      __syncthreads();
      p = sh.pick;
    } else {
      double bl = kInf;
      int bp = INT_MAX, bpos = -1;
      for (int64_t c = k + tid; c < nb; c += kThreads)
        if (better(loss[c], perm[c], bl, bp)) bl = loss[c], bp = perm[c], bpos = static_cast<int>(c);
      p = block_argmin(bl, bp, bpos, sh);
    }
    if (p != k) {
      // Symmetric swap of positions k < p in the lower triangle of S, restricted to the active
      // part; the disjoint pairs go to all threads. S's diagonal blocks are never read (D holds
      // them exactly), so they are not moved.
      const int64_t q0 = k0, p0 = p * B, between = p0 - q0 - B, below = n - p0 - B;
      // (J, Q) <-> (P, J)^T; t fastest, so that a warp covers a few rows of both sides.
      for (int64_t i = tid; i < between * B; i += kThreads) {
        const int64_t t = i % B, j = q0 + B + i / B;
        swap_values(&S[j + (q0 + t) * n], &S[p0 + t + j * n]);
      }
      for (int64_t i = tid; i < BB; i += kThreads) {  // (P, Q) becomes its own transpose
        const int64_t s = i % B, t = i / B;
        if (s > t) swap_values(&S[p0 + s + (q0 + t) * n], &S[p0 + t + (q0 + s) * n]);
      }
      for (int64_t i = tid; i < below * B; i += kThreads) {  // below: column segments
        const int64_t t = i / below, r = p0 + B + i % below;
        swap_values(&S[r + (q0 + t) * n], &S[r + (p0 + t) * n]);
      }
      for (int64_t i = tid; i < m * B; i += kThreads) {
        const int64_t v = i / B, t = i % B;
        swap_values(&U[q0 + t + v * n], &U[p0 + t + v * n]);
      }
      for (int64_t i = tid; i < BB; i += kThreads) swap_values(&D[k * BB + i], &D[p * BB + i]);
      for (int64_t i = tid; i < B; i += kThreads) swap_values(&w[q0 + i], &w[p0 + i]);
      if (tid == 0) {
        if (!kReplay) swap_values(&loss[k], &loss[p]);
        const int32_t t = perm[k];
        perm[k] = perm[p];
        perm[p] = t;
      }
      __syncthreads();
    }

    // Factor Hinv_bb (the exactly kept diagonal block), the step's loss, w_b = 0.
    if (tid == 0) {
      const double* Dk = D + k * BB;
      if (!small_cholesky<kB>(Dk, B, B, L)) jittered_cholesky(Dk, B, L, scratch + k * slot);
      for (int64_t t = 0; t < B; ++t) z[t] = w[k0 + t];
      forward_solve<kB>(L, B, z);
      double l = 0;
      for (int64_t t = 0; t < B; ++t) l += z[t] * z[t];
      if (!kReplay) {
        b.order[row * nb + k] = perm[k];
        b.step_loss[row * nb + k] = l;
      }
      for (int64_t t = 0; t < B; ++t) w[k0 + t] = 0.0;
    }
    __syncthreads();

    // G = Hinv[rest, b] L^-T, one remaining row per thread, appended to U; w -= G z.
    constexpr int kChunk = kB > 0 ? kB : 8;
    for (int64_t r = k0 + B + tid; r < n; r += kThreads) {
      double* g = U + r + m * n;  // g[u * n] = G(r, u)
      double wr = w[r];
      if (B <= kChunk) {
        double acc[kChunk];
        current_entries<kChunk>(S, U, n, r, k0, B, m, acc);
#pragma unroll
        for (int u = 0; u < kChunk; ++u) {
          if (u >= B) break;
          double s = acc[u];
#pragma unroll
          for (int v = 0; v < u; ++v) s -= acc[v] * L[u + v * B];
          acc[u] = s / L[u + u * B];
          g[u * n] = acc[u];
          wr -= acc[u] * z[u];
        }
        if (kB == 1) {  // single columns: the diagonal and the loss right here
          const double d = D[r] - acc[0] * acc[0];
          D[r] = d;
          if (!kReplay) {
            const double l = wr * wr / d;
            loss[r] = d > 0.0 && l <= kInf ? l : kInf;
          }
        }
      } else {
        for (int64_t u0 = 0; u0 < B; u0 += kChunk) {
          double acc[kChunk];
          current_entries<kChunk>(S, U, n, r, k0 + u0, B - u0 < kChunk ? B - u0 : kChunk, m, acc);
#pragma unroll
          for (int u = 0; u < kChunk; ++u)
            if (u0 + u < B) g[(u0 + u) * n] = acc[u];
        }
        for (int64_t u = 0; u < B; ++u) {
          double s = g[u * n];
          for (int64_t v = 0; v < u; ++v) s -= g[v * n] * L[u + v * B];
          s /= L[u + u * B];
          g[u * n] = s;
          wr -= s * z[u];
        }
      }
      w[r] = wr;
    }
    __syncthreads();

    if (kReplay && k + 1 == b.steps[row]) {  // the row's result: w in original column order
      for (int64_t c = tid; c < nb; c += kThreads) {
        const int64_t col = static_cast<int64_t>(perm[c]) * B;
        for (int64_t t = 0; t < B; ++t) b.W[row * n + col + t] = static_cast<float>(w[c * B + t]);
      }
      return;
    }

    if (kB != 1) {  // blocks: D_c -= G_c G_c^T (lower triangle) and the new losses
      const double* G = U + m * n;
      for (int64_t c = k + 1 + tid; c < nb; c += kThreads) {
        double* Dc = D + c * BB;
        const double* g = G + c * B;  // g[s + u * n] = G(c * B + s, u)
        for (int64_t t = 0; t < B; ++t)
          for (int64_t s = t; s < B; ++s) {
            double v = Dc[s + t * B];
            for (int64_t u = 0; u < B; ++u) v -= g[s + u * n] * g[t + u * n];
            Dc[s + t * B] = v;
          }
        if (!kReplay) loss[c] = block_loss<kB>(Dc, w + c * B, B, workspace(c));
      }
      __syncthreads();
    }
  }
}

// Every problem's S starts as H^-1.
__global__ void broadcast_kernel(const double* __restrict__ hinv, int64_t nn, int64_t problems, double* S) {
  for (int64_t p = blockIdx.y; p < problems; p += gridDim.y)
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < nn; i += int64_t(gridDim.x) * blockDim.x)
      S[p * nn + i] = hinv[i];
}

__global__ void zero_rows_kernel(float* W, int64_t n, const int64_t* __restrict__ rows, int64_t count) {
  const int64_t total = count * n;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x)
    W[rows[idx / n] * n + idx % n] = 0.f;
}

// Per-problem device memory of one batch.
struct Workspace {
  DeviceBuffer S, U, D, scratch, w, loss, perm;

  static int64_t bytes_per_problem(int64_t n, int64_t B, int64_t cap) {
    const int64_t nb = n / B;
    return int64_t(sizeof(double)) * (n * n + n * cap + nb * B * B + (nb + 1) * (B * B + B) + n + nb) +
           int64_t(sizeof(int32_t)) * nb;
  }
  Workspace(CudaContext& ctx, int64_t problems, int64_t n, int64_t B, int64_t cap) {
    const int64_t nb = n / B;
    S = ctx.allocate(sizeof(double) * problems * n * n);
    U = ctx.allocate(sizeof(double) * problems * n * cap);
    D = ctx.allocate(sizeof(double) * problems * nb * B * B);
    scratch = ctx.allocate(sizeof(double) * problems * (nb + 1) * (B * B + B));
    w = ctx.allocate(sizeof(double) * problems * n);
    loss = ctx.allocate(sizeof(double) * problems * nb);
    perm = ctx.allocate(sizeof(int32_t) * problems * nb);
  }
  void bind(Batch& b) const {
    b.S = S.data_as<double>();
    b.U = U.data_as<double>();
    b.D = D.data_as<double>();
    b.scratch = scratch.data_as<double>();
    b.w = w.data_as<double>();
    b.loss = loss.data_as<double>();
    b.perm = perm.data_as<int32_t>();
  }
};

template <bool kReplay>
void launch_steps(const Batch& b, int64_t problems, int64_t k_begin, int64_t k_end, cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>(problems);
  if (b.B == 1)
    greedy_kernel<1, kReplay><<<grid, kThreads, 0, s>>>(b, k_begin, k_end);
  else if (b.B == 9)
    greedy_kernel<9, kReplay><<<grid, kThreads, 0, s>>>(b, k_begin, k_end);
  else
    greedy_kernel<0, kReplay><<<grid, kThreads, 0, s>>>(b, k_begin, k_end);
  SPADE_CUDA_CHECK_LAUNCH(kReplay ? "replaying OBC removals" : "running OBC greedy steps");
}

// S -= U[:, :depth] U[:, :depth]^T on every problem's active lower triangle (from a0 on). In
// column chunks, each only from its diagonal down: ~5/8 of one full GEMM's flops at 4 chunks.
void flush(CudaContext& ctx, const Batch& b, int64_t problems, int64_t a0, int64_t depth) {
  const int64_t n = b.n, a = n - a0;
  if (a <= 0 || depth <= 0) return;
  const int64_t chunks = a >= 2048 ? 4 : a >= 1024 ? 2 : 1;
  const double minus_one = -1.0, one = 1.0;
  const int ld = checked_int(n, "the column count"), batch = checked_int(problems, "the rows in flight");
  for (int64_t j = 0; j < chunks; ++j) {
    const int64_t c0 = a * j / chunks, c1 = a * (j + 1) / chunks;
    const double* Ur = b.U + a0 + c0;
    SPADE_CUDA_CHECK(cublasDgemmStridedBatched(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(a - c0),
                                               static_cast<int>(c1 - c0), static_cast<int>(depth), &minus_one, Ur, ld,
                                               n * b.cap, Ur, ld, n * b.cap, &one, b.S + (a0 + c0) * (n + 1), ld,
                                               n * n, batch),
                     "flushing the OBC downdates");
  }
}

// The first `steps` steps of `problems` rows: greedy (recording order and losses) or replayed.
template <bool kReplay>
void run_batch(CudaContext& ctx, const Batch& b, int64_t problems, int64_t steps) {
  cudaStream_t s = ctx.stream();
  const dim3 grid(static_cast<unsigned>(blocks_for(b.n * b.n, 1024)),
                  static_cast<unsigned>(std::min<int64_t>(problems, 65535)));
  broadcast_kernel<<<grid, kThreads, 0, s>>>(b.hinv, b.n * b.n, problems, b.S);
  SPADE_CUDA_CHECK_LAUNCH("copying H^-1 for OBC");
  const int64_t segment = b.cap / b.B;  // steps per flush
  for (int64_t k0 = 0; k0 < steps; k0 += segment) {
    const int64_t k1 = std::min(k0 + segment, steps);
    launch_steps<kReplay>(b, problems, k0, k1, s);
    if (k1 < steps) flush(ctx, b, problems, k1 * b.B, (k1 - k0) * b.B);
  }
}

DeviceBuffer upload(CudaContext& ctx, const void* host, size_t bytes, const char* what) {
  DeviceBuffer d = ctx.allocate(bytes);
  SPADE_CUDA_CHECK(cudaMemcpyAsync(d.data(), host, bytes, cudaMemcpyHostToDevice, ctx.stream()), what);
  return d;
}

}  // namespace

ObcStats obc_prune(CudaContext& ctx, float* W, int64_t rows, int64_t cols, const double* H, const ObcOptions& opt,
                   int64_t rows_in_flight) {
  ObcStats st;
  const int64_t B = opt.block;
  if (B <= 0 || rows < 0 || cols < 0 || (cols > 0 && cols % B != 0) || !(opt.sparsity >= 0.0) ||
      !(opt.sparsity <= 1.0)) {
    st.ok = false;
    return st;
  }
  if (rows == 0 || cols == 0) return st;
  CudaDeviceGuard guard(ctx.device());
  const int64_t n = cols, nb = cols / B, total = rows * nb;
  // ceil with a guard against representation error, as on the CPU.
  const int64_t count =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(total) * opt.sparsity - 1e-9)), 0, total);
  cudaStream_t s = ctx.stream();

  DeviceBuffer hinv;
  std::vector<uint8_t> dead;
  if (!prepare_hessian(ctx, H, n, count > 0, hinv, dead, st)) {
    st.ok = false;
    return st;
  }
  if (st.dead_columns > 0) {
    const DeviceBuffer dead_d = upload(ctx, dead.data(), dead.size(), "uploading OBC dead columns");
    zero_dead_columns_kernel<<<blocks_for(rows * n), kThreads, 0, s>>>(W, rows, n, dead_d.data_as<uint8_t>());
    SPADE_CUDA_CHECK_LAUNCH("zeroing OBC dead columns");
  }

  if (count > 0) {
    const int64_t cap = steps_per_flush(n, B) * B;
    int64_t batch = rows_in_flight > 0 ? rows_in_flight : rows;
    if (rows_in_flight <= 0) {
      size_t free_bytes = 0, total_bytes = 0;
      SPADE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes), "querying free memory for OBC");
      // Blocks cached by the allocator are as good as free: it returns them when memory runs out.
      const double budget = 0.25 * static_cast<double>(free_bytes + ctx.allocator().stats().bytes_cached);
      batch = static_cast<int64_t>(budget / static_cast<double>(Workspace::bytes_per_problem(n, B, cap)));
    }
    batch = std::clamp<int64_t>(batch, 1, rows);
    const int64_t batches = (rows + batch - 1) / batch;
    batch = (rows + batches - 1) / batches;  // even batches: the last one is not a sliver

    // Native FP64 for the flushes, whatever mode the shared handle was left in.
    SPADE_CUDA_CHECK(cublasSetMathMode(ctx.cublas(), CUBLAS_DEFAULT_MATH), "setting the cuBLAS math mode");
    DeviceBuffer order = ctx.allocate(sizeof(int32_t) * total), losses = ctx.allocate(sizeof(double) * total);
    Workspace ws(ctx, batch, n, B, cap);
    Batch b{};
    b.n = n;
    b.B = B;
    b.nb = nb;
    b.cap = cap;
    b.hinv = hinv.data_as<double>();
    b.W = W;
    b.order = order.data_as<int32_t>();
    b.step_loss = losses.data_as<double>();
    ws.bind(b);

    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
      const int64_t cnt = std::min(batch, rows - r0);
      b.row0 = r0;
      run_batch<false>(ctx, b, cnt, nb);
      ctx.synchronize();
      if (opt.progress) opt.progress(r0 + cnt);
    }

    std::vector<double> loss(total);
    SPADE_CUDA_CHECK(cudaMemcpyAsync(loss.data(), losses.data(), sizeof(double) * total, cudaMemcpyDeviceToHost, s),
                     "reading OBC step losses");
    ctx.synchronize();
    for (double& l : loss)
      if (std::isnan(l)) l = kInf;  // keeps the allocation's ordering a strict weak order
    const std::vector<int64_t> r = kernels::obc_allocate_steps(loss, rows, nb, count);
    std::vector<int64_t> replay, cleared;
    for (int64_t i = 0; i < rows; ++i) {
      st.removed_blocks += r[i];
      double row_loss = 0;
      for (int64_t k = 0; k < r[i]; ++k) row_loss += loss[i * nb + k];
      st.loss += row_loss;
      if (r[i] == nb)
        cleared.push_back(i);
      else if (r[i] > 0)
        replay.push_back(i);
    }

    if (!cleared.empty()) {
      const DeviceBuffer list = upload(ctx, cleared.data(), sizeof(int64_t) * cleared.size(), "uploading OBC rows");
      const int64_t c = static_cast<int64_t>(cleared.size());
      zero_rows_kernel<<<blocks_for(c * n), kThreads, 0, s>>>(W, n, list.data_as<int64_t>(), c);
      SPADE_CUDA_CHECK_LAUNCH("zeroing fully pruned OBC rows");
    }
    if (!replay.empty()) {
      std::stable_sort(replay.begin(), replay.end(), [&](int64_t x, int64_t y) { return r[x] > r[y]; });
      const DeviceBuffer list = upload(ctx, replay.data(), sizeof(int64_t) * replay.size(), "uploading OBC rows");
      const DeviceBuffer steps = upload(ctx, r.data(), sizeof(int64_t) * rows, "uploading OBC step counts");
      b.steps = steps.data_as<int64_t>();
      const int64_t m = static_cast<int64_t>(replay.size());
      for (int64_t j0 = 0; j0 < m; j0 += batch) {
        b.rows_of = list.data_as<int64_t>() + j0;
        run_batch<true>(ctx, b, std::min(batch, m - j0), r[replay[j0]]);
      }
    }
  }
  ctx.synchronize();
  if (opt.progress) opt.progress(rows);
  return st;
}

}  // namespace spade::cuda
