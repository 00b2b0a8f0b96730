#pragma once
// Row-major single-precision matrix product on top of Eigen:
// C[M,N] = op(A) * op(B) (+ C when accumulate), op = transpose when the flag is set.
// A is M x K (or K x M when trans_a), B is K x N (or N x K when trans_b); all contiguous.
#include <cstdint>

namespace spade::kernels {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, const float* B,
          float* C, bool accumulate);

}  // namespace spade::kernels
