#pragma once
// SparseGPT / FastSPADE on the GPU (kernels/cpu/sparsegpt.h has the method and the options):
// cuSOLVER Cholesky and inverse of the damped Hessian, then the column loop in lazy blocks as our
// own kernels (rows in parallel, one mask selection per mask block over all rows), with cuBLAS
// for the lazy updates. Same options, statistics and failure rules as the CPU solver; masks agree
// with it up to float32 rounding of near-tied scores.
#include <cstdint>

#include "kernels/cpu/sparsegpt.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

// W: rows x cols row-major float32 on the device, overwritten. H: cols x cols symmetric float64
// on the device (not modified). Blocks until the statistics are known.
kernels::SparseGptStats sparsegpt_prune(CudaContext& ctx, float* W, int64_t rows, int64_t cols, const double* H,
                                        const kernels::SparseGptOptions& opt);

}  // namespace spade::cuda
