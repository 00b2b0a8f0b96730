#pragma once
// Row-major float32 matrix products on the GPU through cuBLAS, with the same conventions as
// kernels/cpu/gemm.h: C[M,N] = op(A) * op(B) (+ C when accumulate); all pointers are device
// memory, work is queued on the context's stream.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace spade::cuda {

// Float32 products are exact float32 by default. TF32 tensor cores (10-bit mantissa inputs,
// ~3e-4 relative error) only when allowed explicitly; every command reports which was used.
void set_allow_tf32(bool allow);
bool allow_tf32();

void gemm(CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate);

// `batch` independent products; consecutive A, B, C are strideA, strideB, strideC floats apart.
void gemm_strided_batched(CudaContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                          const float* A, int64_t strideA, const float* B, int64_t strideB, float* C,
                          int64_t strideC, int64_t batch, bool accumulate);

}  // namespace spade::cuda
