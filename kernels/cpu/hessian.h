#pragma once
// Symmetric rank-k accumulation for layer Hessians: C += A A^T on the lower triangle only, in
// float32 tiles (GEMM speed) summed into a float64 accumulator (so millions of columns can be
// added without float32 drift).
#include <cstdint>

namespace spade::kernels {

// C (n x n, row-major, float64): lower triangle += A A^T, A is n x k row-major with leading
// dimension lda >= k. The upper triangle is not touched. Tiles are spread over num_threads()
// threads; each tile is one single-threaded product, so the result does not depend on the
// thread count.
void syrk_lower_add(int64_t n, int64_t k, const float* A, int64_t lda, double* C);

// Copies the lower triangle onto the upper one.
void symmetrize_from_lower(int64_t n, double* C);

}  // namespace spade::kernels
