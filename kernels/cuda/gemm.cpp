#include "kernels/cuda/gemm.h"

#include <atomic>
#include <climits>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_check.h"

namespace spade::cuda {

namespace {

std::atomic<bool> tf32_allowed{false};

// cuBLAS's classic API takes int sizes; a larger problem must fail loudly, not wrap around.
int checked_int(int64_t v, const char* name) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("GPU matrix product: ") + name + " = " + std::to_string(v) +
                (v < 0 ? " is negative" : " exceeds cuBLAS's 32-bit limit of " + std::to_string(INT_MAX)));
  return static_cast<int>(v);
}

// Other code may share the context's handle, so the modes this wrapper relies on are set on
// every call (host-side flags, no GPU work).
void configure(cublasHandle_t handle) {
  SPADE_CUDA_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), "setting the cuBLAS pointer mode");
  SPADE_CUDA_CHECK(cublasSetMathMode(handle, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                   "setting the cuBLAS math mode");
}

// An empty inner dimension makes every product zero; cuBLAS would be asked for lda = 0.
void zero_products(CudaContext& ctx, int64_t M, int64_t N, float* C, int64_t strideC, int64_t batch) {
  const size_t bytes = static_cast<size_t>(M * N) * sizeof(float);
  if (batch == 1 || strideC == M * N) {
    SPADE_CUDA_CHECK(cudaMemsetAsync(C, 0, bytes * batch, ctx.stream()), "zeroing a GEMM output with K = 0");
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    SPADE_CUDA_CHECK(cudaMemsetAsync(C + b * strideC, 0, bytes, ctx.stream()), "zeroing a GEMM output with K = 0");
}

}  // namespace

void set_allow_tf32(bool allow) { tf32_allowed.store(allow); }
bool allow_tf32() { return tf32_allowed.load(); }

void gemm(CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate) {
  gemm_strided_batched(ctx, trans_a, trans_b, M, N, K, A, 0, B, 0, C, 0, 1, accumulate);
}

// Row-major C = op(A) op(B) is, read column-major, C^T = op(B)^T op(A)^T: cuBLAS gets B first,
// with the row-major leading dimensions, and the transposes unchanged.
void gemm_strided_batched(CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                          const float* A, int64_t strideA, const float* B, int64_t strideB, float* C,
                          int64_t strideC, int64_t batch, bool accumulate) {
  const int m = checked_int(M, "M"), n = checked_int(N, "N"), k = checked_int(K, "K");
  const int count = checked_int(batch, "batch count");
  if (m == 0 || n == 0 || count == 0) return;
  if (k == 0) {
    if (!accumulate) zero_products(ctx, M, N, C, strideC, batch);
    return;
  }
  const int lda = trans_a ? m : k, ldb = trans_b ? k : n;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  cublasHandle_t handle = ctx.cublas();
  configure(handle);
  if (count == 1) {
    SPADE_CUDA_CHECK(cublasSgemm(handle, op_b, op_a, n, m, k, &alpha, B, ldb, A, lda, &beta, C, n),
                     "running a " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " GEMM");
    return;
  }
  SPADE_CUDA_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, n, m, k, &alpha, B, ldb, strideB, A, lda, strideA,
                                             &beta, C, n, strideC, count),
                   "running " + std::to_string(batch) + " batched " + std::to_string(M) + "x" + std::to_string(N) +
                       "x" + std::to_string(K) + " GEMMs");
}

}  // namespace spade::cuda
