#pragma once
// Exact greedy Optimal Brain Surgeon pruning of one layer (OBC, Frantar & Alistarh 2022) as the
// SPADE paper's exact solver uses it (SPADE.md 2.4). Float64 throughout.
//
// For every row w of W independently: repeatedly remove the block b (of `block` consecutive
// columns; block = 1 is plain unstructured OBS) with the smallest loss
//   loss_b = w_b^T (Hinv_bb)^-1 w_b      (block = 1: w_j^2 / Hinv_jj)
// which is the increase of the row's reconstruction error dw H dw^T that the step causes
// then compensate  w -= Hinv[:, b] (Hinv_bb)^-1 w_b  and downdate
//   Hinv -= Hinv[:, b] (Hinv_bb)^-1 Hinv[b, :]
// until every block is removed, recording the order and the loss of every step. Then the
// ceil(rows * nblocks * sparsity) cheapest steps over the whole layer are taken: row i keeps the
// weights after its first r_i removals, where r_i counts row i's steps among them (global loss
// allocation, as OBC's prune_unstr does).
#include <cstdint>
#include <functional>
#include <vector>

namespace spade::kernels {

struct ObcOptions {
  int64_t block = 1;       // columns removed together; must divide cols
  double sparsity = 0.0;   // fraction of blocks removed over the whole layer, in [0, 1]
  // Called from the calling thread (never concurrently) with the number of rows whose greedy pass
  // is done so far; the last call, after the weights are written, passes rows. Must not throw.
  std::function<void(int64_t rows_done)> progress;
};

struct ObcStats {
  bool ok = true;                 // false: H stayed indefinite after every retry, H is not finite
                                  // or the options are invalid; W is untouched
  double damping = 0.0;           // lambda added to the diagonal of H (0 unless Cholesky failed)
  int retries = 0;                // Cholesky failures before it succeeded
  int64_t dead_columns = 0;       // columns with diag(H) == 0 (their weights are zeroed)
  int64_t removed_blocks = 0;     // total steps taken over all rows
  double loss = 0.0;              // sum of the taken steps' losses = sum over rows of dw H dw^T,
                                  // with H as used (dead diagonals 1, plus damping*I)
};

// W: rows x cols, row-major, float32, overwritten with the pruned weights.
// H: cols x cols symmetric positive semi-definite Hessian, row-major (not modified).
// Dead columns: where H_jj == 0, H_jj is set to 1 and W[:, j] to 0 (before anything else).
// Cholesky of H fails -> H + lambda*I with lambda = 1, then 10, 100, ... (at most 8 tries), else
// ok = false. H is taken from its lower triangle (any non-finite entry: ok = false). Rows are
// spread over kernels::num_threads() threads; the result does not depend on the thread count.
//
// Cost per row ~cols^3/3 flops for the greedy pass (each thread holds a cols x cols double
// workspace), plus one Cholesky and inverse of H per call; the final weights of a row are
// recomputed from its removal order by one symmetric solve of size min(|removed|, |kept|).
ObcStats obc_prune(float* W, int64_t rows, int64_t cols, const double* H, const ObcOptions& opt);

// The global loss allocation (shared with the GPU solver): r_i, how many of row i's steps are among
// the `count` cheapest steps of the layer, `loss` holding rows x nblocks step losses. Ties are
// broken by row, then step, which is the index order of `loss`.
std::vector<int64_t> obc_allocate_steps(const std::vector<double>& loss, int64_t rows, int64_t nblocks, int64_t count);

}  // namespace spade::kernels
