#pragma once
// The layer solvers run on the GPU for a trace computed with --device cuda: the weights go to
// the device and back, the Hessian is used where it is (device memory for SparseGPT, which must
// be complete: synchronize the engine's stream first; OBC takes the host copy that the column
// reordering produced). Each calling thread works on its own stream, so several threads may
// solve layers at once. Without the CUDA backend these throw.
#include <cstdint>

#include "kernels/cpu/obc.h"
#include "kernels/cpu/sparsegpt.h"

namespace spade::interp {

// w: rows x cols host weights, overwritten; H_device: cols x cols float64 in device memory.
kernels::SparseGptStats sparsegpt_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_device,
                                            const kernels::SparseGptOptions& opt);
// w as above; H_host: cols x cols float64 in host memory.
kernels::ObcStats obc_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_host,
                                const kernels::ObcOptions& opt);

}  // namespace spade::interp
