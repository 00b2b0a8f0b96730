#pragma once
// Exact greedy OBS (OBC) on the GPU (kernels/cpu/obc.h has the method, the options and the
// statistics): many rows' greedy passes run at once, each with its own copy of the inverse
// Hessian on the device; the global loss allocation and the final weights follow the CPU
// solver's rules, so masks agree with it except where losses tie within rounding.
#include <cstdint>

#include "kernels/cpu/obc.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

// W: rows x cols row-major float32 on the device, overwritten. H: cols x cols symmetric float64
// on the device (not modified). opt.progress is called from the calling thread, after each batch
// of rows. Blocks until W is written. rows_in_flight caps the rows solved at once (0: as many as
// a quarter of the free device memory holds; the tests set it to exercise the batching).
kernels::ObcStats obc_prune(CudaContext& ctx, float* W, int64_t rows, int64_t cols, const double* H,
                            const kernels::ObcOptions& opt, int64_t rows_in_flight = 0);

}  // namespace spade::cuda
