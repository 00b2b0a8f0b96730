#pragma once
// SparseGPT (Frantar & Alistarh 2023) in the variant SPADE calls FastSPADE (SPADE.md 2.3):
// one layer's weights W (rows x cols) are pruned column by column with OBS error feedback
// through the upper Cholesky factor U of the damped inverse Hessian (H^-1 = U^T U); the mask is
// chosen at the start of every block of `blocksize` columns over all rows of that block.
//
// Float32 like the authors. Columns are processed in lazy blocks of ~128 columns (a multiple of
// `blocksize`): inside one, every column's error is fed to the rest of the lazy block at once;
// the columns after it get the whole lazy block's errors in one GEMM. That is the same
// arithmetic as the reference loop (the mask of a block sees every earlier column's update),
// only grouped for speed.
#include <cstdint>

namespace spade::kernels {

struct SparseGptOptions {
  int64_t blocksize = 1;   // mask block: kh*kw for convs, 1 for linear layers
  double sparsity = 0.0;   // fraction of each mask block's rows*blocksize weights pruned, [0, 1]
  double percdamp = 0.01;  // damping = percdamp * mean(diag H)
  // The authors' threshold: prune every score <= the sorted score at index floor(n * sparsity),
  // i.e. floor(n*s) + 1 weights (one per block even at sparsity 0). Default: exactly
  // round(n * s) weights per block, the smallest scores (ties by position).
  bool authors_threshold = false;
};

struct SparseGptStats {
  bool ok = true;         // false: H stayed indefinite after every retry; W is untouched
  double damping = 0.0;   // lambda added to the diagonal (absolute)
  int retries = 0;        // Cholesky failures before the one that succeeded
  int64_t dead_columns = 0;
  int64_t pruned = 0;     // weights set to zero by the masks (dead columns not counted)
  // tr(dW H dW^T) for the undamped H, dW the change of the weights (dead columns aside, where H
  // is zero). Exact without a product with H: the errors e fed back satisfy
  // tr(dW (H + lambda I) dW^T) = sum e^2, so the loss is sum e^2 - lambda ||dW||^2.
  double loss = 0.0;
};

// W: rows x cols row-major, overwritten. H: cols x cols symmetric (float64, not modified).
// Single-threaded (callers run several layers in parallel); deterministic.
SparseGptStats sparsegpt_prune(float* W, int64_t rows, int64_t cols, const double* H, const SparseGptOptions& opt);

// Upper-triangular U with U^T U = A^-1 for a symmetric positive definite A (n x n, row-major,
// float32), computed as the reversed lower Cholesky factor's inverse (one factorisation and one
// triangular inversion). Returns false when A is not positive definite.
bool inverse_upper_cholesky(int64_t n, const float* A, float* U);

}  // namespace spade::kernels
