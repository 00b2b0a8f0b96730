#include "kernels/cuda/sparsegpt.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/hessian.h"

namespace spade::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
// One CTA picks a mask block's mask: a few thousand scores, four radix passes.
constexpr int kSelectThreads = 512;
constexpr int kSelectWarps = kSelectThreads / 32;
// The column kernel: 32 rows per CTA (one per lane), its warps sharing the lazy block's columns.
constexpr int kColumnWarps = 8;
// Columns per lazy block (rounded up to whole mask blocks, as on the CPU): at most 255 columns
// of 32 rows stay in shared memory (32 KiB).
constexpr int64_t kLazy = 128;
// Damping tries: base, then tenfold each time (the CPU's rule).
constexpr int kAttempts = 6;

int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("GPU SparseGPT: ") + what + " = " + std::to_string(v) +
                " exceeds the 32-bit limit of cuBLAS/cuSOLVER");
  return static_cast<int>(v);
}

int grid_for(int64_t work) {
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, kMaxBlocks));
}

dim3 tile_grid(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + 31) / 32),
              static_cast<unsigned>(std::min<int64_t>((rows + 31) / 32, 65535)));
}

// fac (column-major) = P H P in float32, P the reversal: for a symmetric H that is H's
// row-major storage reversed. A dead input (H_jj == 0) gets H_jj = 1; lambda is added to the
// diagonal in float32. Exactly the matrix the CPU factors.
__global__ void damped_reversed_kernel(const double* __restrict__ H, int64_t n, float lambda, float* __restrict__ fac) {
  const int64_t nn = n * n;
  for (int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; m < nn; m += int64_t(gridDim.x) * blockDim.x) {
    const int64_t src = nn - 1 - m;
    const double h = H[src];
    float v = static_cast<float>(h);
    if (src % (n + 1) == 0) {
      if (h == 0.0) v = 1.f;
      v += lambda;
    }
    fac[m] = v;
  }
}

// The factorisation counts only with a clean status and a positive finite diagonal (cuSOLVER,
// like Eigen, lets NaN through without complaint).
__global__ void check_factor_kernel(const float* __restrict__ fac, int64_t n, const int* __restrict__ info,
                                    int* __restrict__ ok) {
  int bad = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float d = fac[i * (n + 1)];
    bad |= !(d > 0.f && isfinite(d));
  }
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) *ok = *info == 0 && !bad;
}

// U (row-major) = R^-1's column-major storage reversed, R^-1's strict lower triangle as zeros:
// the upper factor with U^T U = H^-1 (see kernels/cpu/sparsegpt.cpp, factor_reversed).
__global__ void reverse_upper_kernel(const float* __restrict__ rinv, int64_t n, float* __restrict__ U) {
  const int64_t nn = n * n;
  for (int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; m < nn; m += int64_t(gridDim.x) * blockDim.x) {
    const int64_t src = nn - 1 - m;
    U[m] = src % n <= src / n ? rinv[src] : 0.f;
  }
}

// dst (C x R) = src^T (src R x C, row-major); with H, the columns j of src with H_jj == 0 are
// taken as zeros.
__global__ void transpose_kernel(const float* __restrict__ src, int64_t R, int64_t C, float* __restrict__ dst,
                                 const double* __restrict__ H) {
  __shared__ float tile[32][33];
  const int64_t j0 = int64_t(blockIdx.x) * 32;
  for (int64_t r0 = int64_t(blockIdx.y) * 32; r0 < R; r0 += int64_t(gridDim.y) * 32) {
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
      const int64_t r = r0 + y, j = j0 + threadIdx.x;
      if (r < R && j < C) tile[y][threadIdx.x] = H != nullptr && H[j * (C + 1)] == 0.0 ? 0.f : src[r * C + j];
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
      const int64_t j = j0 + y, r = r0 + threadIdx.x;
      if (j < C && r < R) dst[j * R + r] = tile[threadIdx.x][y];
    }
    __syncthreads();
  }
}

// start[i] = now[i] - start[i]: the change of every weight, in float32 like the CPU.
__global__ void change_kernel(int64_t n, const float* __restrict__ now, float* __restrict__ start) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    start[i] = now[i] - start[i];
}

// The mask of one mask block (columns [c, c + n / rows)): its n current weights w (W^T rows,
// so position p = k * rows + r is the CPU's flattening) are scored w^2 / U_cc^2. Default: the
// k smallest scores, ties by position; authors: every score <= the k-th smallest. Scores are
// >= 0, so their float bits order like the floats and a 4 x 8-bit radix select finds the k-th
// smallest exactly. `keys` is scratch for the n score bits.
__global__ void __launch_bounds__(kSelectThreads)
    select_mask_kernel(const float* __restrict__ w, const float* __restrict__ U, int64_t cols, int64_t c, int64_t rows,
                       int64_t n, int64_t k, bool authors, uint32_t* keys, uint8_t* __restrict__ mask,
                       int64_t* __restrict__ count) {
  __shared__ unsigned hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int64_t s_need, s_equal;
  __shared__ int s_ties[kSelectWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t p = tid; p < n; p += kSelectThreads) {
    const int64_t col = c + p / rows;
    const float d = U[col * cols + col];
    keys[p] = __float_as_uint(w[p] * w[p] / (d * d));
  }
  if (k <= 0) {
    for (int64_t p = tid; p < n; p += kSelectThreads) mask[p] = 0;
    if (tid == 0) *count = 0;
    return;
  }
  __syncthreads();

  // Invariant: the k-th smallest key starts with `prefix` (in the bits fixed so far), and it is
  // the need-th smallest of the keys that do.
  uint32_t prefix = 0;
  int64_t need = k;
  int shift = 24;
  for (;; shift -= 8) {
    for (int b = tid; b < 256; b += kSelectThreads) hist[b] = 0;
    __syncthreads();
    const uint32_t fixed = shift == 24 ? 0u : ~0u << (shift + 8);
    for (int64_t base = 0; base < n; base += kSelectThreads) {  // uniform trip count: whole warps
      const int64_t p = base + tid;
      unsigned bin = 256;
      if (p < n) {
        const uint32_t key = keys[p];
        if ((key & fixed) == prefix) bin = (key >> shift) & 255u;
      }
      // Scores of one layer share a few exponents: one shared atomic per distinct bin per warp.
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], static_cast<unsigned>(__popc(peers)));
    }
    __syncthreads();
    if (warp == 0) {
      unsigned local = 0;
      for (int b = 0; b < 8; ++b) local += hist[lane * 8 + b];
      unsigned incl = local;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, static_cast<int64_t>(incl) >= need);
      if (lane == __ffs(hit) - 1) {
        int64_t below = static_cast<int64_t>(incl - local);
        int b = lane * 8;
        while (below + hist[b] < need) below += hist[b++];
        s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
        s_need = need - below;
        s_equal = hist[b];
      }
    }
    __syncthreads();
    prefix = s_prefix;
    need = s_need;
    // Done when the bits fixed so far decide: every key in the chosen bin is taken.
    if (shift == 0 || need == s_equal) break;
  }
  const uint32_t kth = prefix;
  const int64_t equal = s_equal;  // keys in the k-th smallest's bin (its value at shift 0)

  if (authors || need == equal) {
    for (int64_t p = tid; p < n; p += kSelectThreads) mask[p] = keys[p] >> shift <= kth >> shift;
    if (tid == 0) *count = authors ? k - need + equal : k;
    return;
  }
  // Ties at the threshold: the first `need` of them by position, counted chunk by chunk.
  int64_t taken = 0;
  for (int64_t base = 0; base < n; base += kSelectThreads) {
    const int64_t p = base + tid;
    const uint32_t key = p < n ? keys[p] : 0u;
    const bool tie = p < n && key == kth;
    const unsigned ballot = __ballot_sync(0xffffffffu, tie);
    if (lane == 0) s_ties[warp] = __popc(ballot);
    __syncthreads();
    int64_t before = taken + __popc(ballot & ((1u << lane) - 1u));
    for (int i = 0; i < kSelectWarps; ++i) {
      if (i < warp) before += s_ties[i];
      taken += s_ties[i];
    }
    if (p < n) mask[p] = key < kth || (tie && before < need);
    __syncthreads();
  }
  if (tid == 0) *count = k;
}

// Columns [c0, c1) of one mask block, for 32 rows per CTA: q = masked ? 0 : w, err = (w - q) /
// U_cc, and every later column of the lazy block (up to i2) gets w -= err * U[c, col] at once.
// The lazy block's columns of these rows live in shared memory meanwhile (tile[(col - c0) * 32 +
// lane]); the columns after i2 get the errors later in one GEMM.
__global__ void __launch_bounds__(32 * kColumnWarps)
    column_kernel(float* __restrict__ wt, float* __restrict__ err, const uint8_t* __restrict__ mask,
                  const float* __restrict__ U, int64_t rows, int64_t cols, int64_t c0, int64_t c1, int64_t i2) {
  extern __shared__ float tile[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r0 = int64_t(blockIdx.x) * 32, r = r0 + lane;
  const bool valid = r < rows;
  const int64_t width = i2 - c0;
  for (int64_t t = threadIdx.x; t < width * 32; t += blockDim.x) {
    const int64_t rr = r0 + (t & 31);
    tile[t] = rr < rows ? wt[(c0 + (t >> 5)) * rows + rr] : 0.f;
  }
  __syncthreads();
  for (int64_t c = c0; c < c1; ++c) {
    // Column c was last written before the previous barrier; nobody writes it in this step.
    const float w = tile[(c - c0) * 32 + lane];
    const float q = valid && mask[c * rows + r] ? 0.f : w;
    const float e = (w - q) / U[c * cols + c];
    if (warp == 0 && valid) {
      wt[c * rows + r] = q;
      err[c * rows + r] = e;
    }
    const float* urow = U + c * cols;
    for (int64_t k = c + 1 + warp; k < i2; k += kColumnWarps) tile[(k - c0) * 32 + lane] -= e * urow[k];
    __syncthreads();
  }
  for (int64_t t = (c1 - c0) * 32 + threadIdx.x; t < width * 32; t += blockDim.x) {
    const int64_t rr = r0 + (t & 31);
    if (rr < rows) wt[(c0 + (t >> 5)) * rows + rr] = tile[t];
  }
}

// Number of scores pruned in a mask block of n: the CPU's choose_mask rule (authors: every score
// <= the sorted one at floor(n * s), i.e. the k-th smallest with k = that index + 1).
int64_t mask_rank(int64_t n, double sparsity, bool authors) {
  if (authors) return std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(n) * sparsity), 0, n - 1) + 1;
  return std::clamp<int64_t>(std::llround(static_cast<double>(n) * sparsity), 0, n);
}

void copy_to_host_now(CudaContext& ctx, void* dst, const void* src, size_t bytes, const char* what) {
  SPADE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream()), what);
  SPADE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), what);
}

}  // namespace

kernels::SparseGptStats sparsegpt_prune(CudaContext& ctx, float* W, int64_t rows, int64_t cols, const double* H,
                                        const kernels::SparseGptOptions& opt) {
  kernels::SparseGptStats st;
  if (cols == 0) return st;
  const int n = checked_int(cols, "cols");
  checked_int(rows, "rows");
  const int64_t bs = std::max<int64_t>(1, opt.blocksize);
  cudaStream_t stream = ctx.stream();

  // Dead inputs and the damping come from the diagonal, decided on the host exactly as the CPU.
  std::vector<double> diag(static_cast<size_t>(cols));
  SPADE_CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(double), H, static_cast<size_t>(cols + 1) * sizeof(double),
                                     sizeof(double), static_cast<size_t>(cols), cudaMemcpyDeviceToHost, stream),
                   "copying a Hessian's diagonal to the host");
  SPADE_CUDA_CHECK(cudaStreamSynchronize(stream), "copying a Hessian's diagonal to the host");
  double mean_diag = 0.0;
  for (double d : diag) {
    st.dead_columns += d == 0.0;
    mean_diag += d == 0.0 ? 1.0 : static_cast<float>(d);
  }
  mean_diag /= static_cast<double>(cols);
  const float base = static_cast<float>(opt.percdamp * mean_diag);

  const int64_t nn = cols * cols;
  DeviceBuffer fac_buf = ctx.allocate(static_cast<size_t>(nn) * sizeof(float));
  DeviceBuffer flag_buf = ctx.allocate(3 * sizeof(int));
  float* fac = fac_buf.data_as<float>();
  int* potrf_info = flag_buf.data_as<int>();
  int* factor_ok = potrf_info + 1;
  int* trtri_info = potrf_info + 2;
  cusolverDnHandle_t solver = ctx.cusolver();
  int lwork = 0;
  SPADE_CUDA_CHECK(cusolverDnSpotrf_bufferSize(solver, CUBLAS_FILL_MODE_UPPER, n, fac, n, &lwork),
                   "sizing a Cholesky workspace");
  DeviceBuffer potrf_work = ctx.allocate(static_cast<size_t>(std::max(lwork, 1)) * sizeof(float));
  bool factored = false;
  for (int attempt = 0; attempt < kAttempts && !factored; ++attempt) {
    const float lambda = base * std::pow(10.f, static_cast<float>(attempt));
    damped_reversed_kernel<<<grid_for(nn), kThreads, 0, stream>>>(H, cols, lambda, fac);
    SPADE_CUDA_CHECK_LAUNCH("damping a Hessian");
    SPADE_CUDA_CHECK(cusolverDnSpotrf(solver, CUBLAS_FILL_MODE_UPPER, n, fac, n, potrf_work.data_as<float>(), lwork,
                                      potrf_info),
                     "factoring a " + std::to_string(cols) + "x" + std::to_string(cols) + " Hessian");
    check_factor_kernel<<<1, kThreads, 0, stream>>>(fac, cols, potrf_info, factor_ok);
    SPADE_CUDA_CHECK_LAUNCH("checking a Cholesky factor");
    int ok = 0;
    copy_to_host_now(ctx, &ok, factor_ok, sizeof(int), "checking a Cholesky factor");
    factored = ok != 0;
    st.damping = lambda;
    st.retries = attempt;
  }
  if (!factored) {
    st.ok = false;
    return st;
  }
  if (rows == 0) return st;

  size_t trtri_dev = 0, trtri_host = 0;
  SPADE_CUDA_CHECK(cusolverDnXtrtri_bufferSize(solver, CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, cols, CUDA_R_32F,
                                               fac, cols, &trtri_dev, &trtri_host),
                   "sizing a triangular inverse's workspace");
  DeviceBuffer trtri_work = ctx.allocate(std::max<size_t>(trtri_dev, 1));
  std::vector<char> trtri_host_work(std::max<size_t>(trtri_host, 1));
  SPADE_CUDA_CHECK(cusolverDnXtrtri(solver, CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, cols, CUDA_R_32F, fac, cols,
                                    trtri_work.data(), trtri_dev, trtri_host_work.data(), trtri_host, trtri_info),
                   "inverting a " + std::to_string(cols) + "x" + std::to_string(cols) + " Cholesky factor");
  DeviceBuffer u_buf = ctx.allocate(static_cast<size_t>(nn) * sizeof(float));
  float* U = u_buf.data_as<float>();
  reverse_upper_kernel<<<grid_for(nn), kThreads, 0, stream>>>(fac, cols, U);
  SPADE_CUDA_CHECK_LAUNCH("reversing the inverse Cholesky factor");

  // Work on W^T so that a column of W is contiguous: rows in parallel read it coalesced.
  const int64_t total = rows * cols;
  const int64_t mask_blocks = (cols + bs - 1) / bs;
  DeviceBuffer wt_buf = ctx.allocate(static_cast<size_t>(total) * sizeof(float));
  DeviceBuffer start_buf = ctx.allocate(static_cast<size_t>(total) * sizeof(float));
  DeviceBuffer err_buf = ctx.allocate(static_cast<size_t>(total) * sizeof(float));
  DeviceBuffer mask_buf = ctx.allocate(static_cast<size_t>(total));
  DeviceBuffer keys_buf = ctx.allocate(static_cast<size_t>(rows * std::min(bs, cols)) * sizeof(uint32_t));
  DeviceBuffer count_buf = ctx.allocate(static_cast<size_t>(mask_blocks) * sizeof(int64_t));
  float* wt = wt_buf.data_as<float>();
  float* err = err_buf.data_as<float>();
  uint8_t* mask = mask_buf.data_as<uint8_t>();
  int64_t* counts = count_buf.data_as<int64_t>();
  transpose_kernel<<<tile_grid(rows, cols), dim3(32, 8), 0, stream>>>(W, rows, cols, wt, H);
  SPADE_CUDA_CHECK_LAUNCH("transposing the weights");
  SPADE_CUDA_CHECK(cudaMemcpyAsync(start_buf.data(), wt, static_cast<size_t>(total) * sizeof(float),
                                   cudaMemcpyDeviceToDevice, stream),
                   "keeping the starting weights");

  cublasHandle_t blas = ctx.cublas();
  // Always exact float32, even when TF32 is allowed elsewhere: the products are small, and the
  // masks of later columns depend on them.
  SPADE_CUDA_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST), "setting the cuBLAS pointer mode");
  SPADE_CUDA_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "setting the cuBLAS math mode");
  const float minus_one = -1.f, one = 1.f;
  const int64_t lazy = (kLazy + bs - 1) / bs * bs;
  const unsigned row_tiles = static_cast<unsigned>((rows + 31) / 32);
  for (int64_t i1 = 0, i2 = 0; i1 < cols; i1 = i2) {
    // A mask block wider than kLazy is split into lazy blocks of its own: its mask is chosen at
    // its start, after every earlier column's update reached all of it.
    i2 = bs <= kLazy ? std::min(cols, i1 + lazy) : std::min({cols, i1 + kLazy, (i1 / bs + 1) * bs});
    for (int64_t c = i1, c1 = i1; c < i2; c = c1) {
      if (c % bs == 0) {
        const int64_t width = std::min(bs, cols - c), count = rows * width;
        select_mask_kernel<<<1, kSelectThreads, 0, stream>>>(wt + c * rows, U, cols, c, rows, count,
                                                             mask_rank(count, opt.sparsity, opt.authors_threshold),
                                                             opt.authors_threshold, keys_buf.data_as<uint32_t>(),
                                                             mask + c * rows, counts + c / bs);
        SPADE_CUDA_CHECK_LAUNCH("choosing a SparseGPT mask");
      }
      c1 = std::min(i2, (c / bs + 1) * bs);
      const size_t smem = static_cast<size_t>(i2 - c) * 32 * sizeof(float);
      column_kernel<<<row_tiles, 32 * kColumnWarps, smem, stream>>>(wt, err, mask, U, rows, cols, c, c1, i2);
      SPADE_CUDA_CHECK_LAUNCH("pruning SparseGPT columns");
    }
    if (i2 < cols) {  // W[:, i2:] -= Err U[i1:i2, i2:], as column-major W^T (rows x cols) products
      SPADE_CUDA_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(rows), static_cast<int>(cols - i2),
                                   static_cast<int>(i2 - i1), &minus_one, err + i1 * rows, static_cast<int>(rows),
                                   U + i1 * cols + i2, n, &one, wt + i2 * rows, static_cast<int>(rows)),
                       "updating the columns after a lazy block");
    }
  }

  std::vector<int64_t> pruned(static_cast<size_t>(mask_blocks));
  int info = 0;
  SPADE_CUDA_CHECK(cudaMemcpyAsync(&info, trtri_info, sizeof(int), cudaMemcpyDeviceToHost, stream),
                   "checking a triangular inverse");
  copy_to_host_now(ctx, pruned.data(), counts, pruned.size() * sizeof(int64_t), "counting pruned weights");
  // The factor's diagonal was checked positive, so this is a cuSOLVER failure, not bad input.
  if (info != 0) throw Error("GPU SparseGPT: inverting the Cholesky factor failed (info " + std::to_string(info) + ")");
  for (int64_t p : pruned) st.pruned += p;

  transpose_kernel<<<tile_grid(cols, rows), dim3(32, 8), 0, stream>>>(wt, cols, rows, W, nullptr);
  SPADE_CUDA_CHECK_LAUNCH("transposing the pruned weights back");
  change_kernel<<<grid_for(total), kThreads, 0, stream>>>(total, wt, start_buf.data_as<float>());
  SPADE_CUDA_CHECK_LAUNCH("measuring the weight change");
  // tr(dW (H + lambda I) dW^T) = sum e^2, so the undamped loss is sum e^2 - lambda ||dW||^2.
  const double err_sq = sum_squares(ctx, total, err);
  const double change = sum_squares(ctx, total, start_buf.data_as<float>());
  st.loss = std::max(0.0, err_sq - st.damping * change);
  return st;
}

}  // namespace spade::cuda
