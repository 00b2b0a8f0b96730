#include "kernels/cuda/hessian.h"

#include <algorithm>
#include <climits>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"

namespace spade::cuda {

namespace {

// Inner-dimension chunk of one float32 product. A GEMM sums its inner dimension sequentially in
// float32, with an error growing like sqrt(chunk): 2048 keeps it near the CPU's tiles (~3e-7
// relative); the chunks are added in double.
constexpr int64_t kChunk = 2048;
// Chunks are computed side by side (one batched GEMM) into up to this many floats of scratch,
// so that a narrow Hessian with a long inner dimension costs a few launches, not thousands.
constexpr int64_t kScratchFloats = int64_t(16) << 20;
// Hessians at least twice this wide are computed in row blocks of this many rows, each only up to
// the diagonal: 30-45% fewer flops than one full GEMM for ResNet-50's 3x3 layers (1152..4608),
// with each block still wide enough to fill the GPU (cuBLAS's SYRK is often slower).
constexpr int64_t kRowBlock = 512;
constexpr int kThreads = 256;
// Deterministic sums: the number of partial sums depends only on n, never on the device.
constexpr int64_t kMaxReduceBlocks = 1024;

int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("GPU Hessian: ") + what + " = " + std::to_string(v) + " exceeds cuBLAS's 32-bit limit");
  return static_cast<int>(v);
}

int grid_for(int64_t work, int64_t cap) {
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, cap));
}

// C[i][j] += the `slices` products S_s[i][j] (n x n each, row-major, at least the lower
// triangle written), in order, on the lower triangle.
__global__ void add_lower_kernel(const float* __restrict__ S, int64_t slices, int64_t n, double* __restrict__ C) {
  const int64_t nn = n * n;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y)
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j <= i; j += int64_t(gridDim.x) * blockDim.x) {
      double c = C[i * n + j];
      for (int64_t s = 0; s < slices; ++s) c += static_cast<double>(S[s * nn + i * n + j]);
      C[i * n + j] = c;
    }
}

// One 32 x 32 lower tile (ti >= tj) per step: scaled in place, then written transposed into the
// mirrored upper tile through shared memory so that both global accesses are row-contiguous.
__global__ void symmetrize_scale_kernel(int64_t n, double scale, double* C) {
  __shared__ double tile[32][33];
  const int64_t tiles = (n + 31) / 32;
  const int64_t tj = blockIdx.x;
  const int x = threadIdx.x;
  for (int64_t ti = blockIdx.y; ti < tiles; ti += gridDim.y) {
    if (tj > ti) continue;  // uniform over the block
    const int64_t i0 = ti * 32, j0 = tj * 32;
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
      const int64_t i = i0 + y, j = j0 + x;
      if (i < n && j <= i) {
        const double v = C[i * n + j] * scale;
        C[i * n + j] = v;
        tile[y][x] = v;
      }
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
      const int64_t r = j0 + y, c = i0 + x;  // upper element (r, c) mirrors lower (c, r)
      if (c < n && c > r) C[r * n + c] = tile[x][y];
    }
    __syncthreads();
  }
}

// Fixed-shape tree sum of one double per thread; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

__global__ void __launch_bounds__(kThreads) sum_squares_partial_kernel(int64_t n, const float* __restrict__ x,
                                                                        double* __restrict__ partial) {
  double s = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads) sum_partials_kernel(int64_t count, const double* __restrict__ partial,
                                                                double* __restrict__ out) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

void syrk_lower_add(CudaContext& ctx, int64_t n, int64_t k, const float* A, int64_t lda, double* C) {
  if (n == 0 || k == 0) return;
  if (lda < k) throw Error("GPU Hessian: leading dimension " + std::to_string(lda) + " < " + std::to_string(k));
  const int nn = checked_int(n, "n"), ld = checked_int(lda, "lda");
  const int64_t chunks = (k + kChunk - 1) / kChunk;
  const int64_t slices = std::clamp<int64_t>(kScratchFloats / (n * n), 1, chunks);
  DeviceBuffer scratch = ctx.allocate(static_cast<size_t>(n * n * slices) * sizeof(float));
  float* S = scratch.data_as<float>();
  cublasHandle_t handle = ctx.cublas();
  // The handle is shared: set the modes this call relies on (host-side flags, no GPU work).
  SPADE_CUDA_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), "setting the cuBLAS pointer mode");
  SPADE_CUDA_CHECK(cublasSetMathMode(handle, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                   "setting the cuBLAS math mode");
  const float one = 1.f, zero = 0.f;
  const int64_t block = n >= 2 * kRowBlock ? kRowBlock : n;
  const dim3 add_grid(static_cast<unsigned>(grid_for(n, 64)), static_cast<unsigned>(std::min<int64_t>(n, 65535)));
  const auto what = [&] {
    return "computing a " + std::to_string(n) + "x" + std::to_string(n) + "x" + std::to_string(k) + " Hessian product";
  };
  for (int64_t k0 = 0; k0 < k; k0 += slices * kChunk) {
    const int64_t kg = std::min(slices * kChunk, k - k0);
    const int full = static_cast<int>(kg / kChunk), rest = static_cast<int>(kg % kChunk);
    // Row-major A (n x k, lda) is column-major A^T. Rows [i0, i1) of S up to column i1 are, read
    // column-major, columns [i0, i1) and rows [0, i1): A[0:i1] A[i0:i1]^T.
    for (int64_t i0 = 0; i0 < n; i0 += block) {
      const int64_t i1 = std::min(n, i0 + block);
      const int m = static_cast<int>(i1), width = static_cast<int>(i1 - i0);
      if (full > 0)
        SPADE_CUDA_CHECK(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, width, static_cast<int>(kChunk),
                                                   &one, A + k0, ld, kChunk, A + i0 * lda + k0, ld, kChunk, &zero,
                                                   S + i0 * n, nn, n * n, full),
                         what());
      if (rest > 0) {
        const int64_t kr = k0 + int64_t(full) * kChunk;
        SPADE_CUDA_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, width, rest, &one, A + kr, ld,
                                     A + i0 * lda + kr, ld, &zero, S + full * n * n + i0 * n, nn),
                         what());
      }
    }
    add_lower_kernel<<<add_grid, kThreads, 0, ctx.stream()>>>(S, full + (rest > 0), n, C);
    SPADE_CUDA_CHECK_LAUNCH("adding a Hessian chunk");
  }
}

void symmetrize_scale(CudaContext& ctx, int64_t n, double scale, double* C) {
  if (n == 0) return;
  const int64_t tiles = (n + 31) / 32;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min<int64_t>(tiles, 65535)));
  symmetrize_scale_kernel<<<grid, dim3(32, 8), 0, ctx.stream()>>>(n, scale, C);
  SPADE_CUDA_CHECK_LAUNCH("symmetrising a Hessian");
}

double sum_squares(CudaContext& ctx, int64_t n, const float* x) {
  if (n <= 0) return 0.0;
  const int blocks = grid_for(n / 8 + 1, kMaxReduceBlocks);
  DeviceBuffer partial = ctx.allocate(static_cast<size_t>(blocks + 1) * sizeof(double));
  double* p = partial.data_as<double>();
  sum_squares_partial_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(n, x, p);
  SPADE_CUDA_CHECK_LAUNCH("summing squares");
  sum_partials_kernel<<<1, kThreads, 0, ctx.stream()>>>(blocks, p, p + blocks);
  SPADE_CUDA_CHECK_LAUNCH("summing partial sums");
  double out = 0.0;
  SPADE_CUDA_CHECK(cudaMemcpyAsync(&out, p + blocks, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream()),
                   "copying a sum of squares to the host");
  SPADE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), "waiting for a sum of squares");
  return out;
}

}  // namespace spade::cuda
