#pragma once
// Layer-Hessian accumulation on the GPU, the counterpart of kernels/cpu/hessian.h: float32
// rank-k products (cuBLAS) summed into a float64 accumulator, lower triangle.
#include <cstdint>

#include "kernels/cuda/device.h"

namespace spade::cuda {

// C (n x n, row-major, device float64): lower triangle += A A^T with A n x k row-major (device,
// leading dimension lda >= k). The upper triangle is not touched. Long k is processed in
// chunks, each a float32 product added into C in double.
void syrk_lower_add(CudaContext& ctx, int64_t n, int64_t k, const float* A, int64_t lda, double* C);

// Copies the lower triangle onto the upper one and multiplies everything by `scale`.
void symmetrize_scale(CudaContext& ctx, int64_t n, double scale, double* C);

// sum of squares of x (n floats, device), in double; blocks until the value is on the host.
double sum_squares(CudaContext& ctx, int64_t n, const float* x);

}  // namespace spade::cuda
