#pragma once
// BatchNorm2d on the GPU with the results of kernels/cpu/batchnorm.h. Per-channel statistics
// are reduced in double. Device pointers, context stream.
#include "kernels/cpu/batchnorm.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

using kernels::BNGeom;

// Biased batch mean and variance per channel (device doubles, C each).
void batchnorm_batch_stats(CudaContext& ctx, const BNGeom& g, const float* x, double* mean, double* var);
// mean_out[c] = mean[c], invstd[c] = 1 / sqrt(var[c] + eps) computed in double, both as float.
// Used with the running statistics (float) in eval mode and the batch statistics (double) in
// train mode.
void batchnorm_coefficients(CudaContext& ctx, int64_t C, const float* mean, const float* var, double eps,
                            float* mean_out, float* invstd);
void batchnorm_coefficients(CudaContext& ctx, int64_t C, const double* mean, const double* var, double eps,
                            float* mean_out, float* invstd);
// PyTorch's running-statistics update after a train-mode pass over `count` values per channel:
// rm = (1 - m) rm + m mean, rv = (1 - m) rv + m var * count / (count - 1) (computed in double).
void batchnorm_update_running(CudaContext& ctx, int64_t C, const double* mean, const double* var, double count,
                              double momentum, float* running_mean, float* running_var);
void batchnorm_apply(CudaContext& ctx, const BNGeom& g, const float* x, const float* mean, const float* invstd,
                     const float* weight, const float* bias, float* y);
// gx, gweight, gbias each nullable, as the CPU kernels.
void batchnorm_backward_eval(CudaContext& ctx, const BNGeom& g, const float* x, const float* gy, const float* mean,
                             const float* invstd, const float* weight, float* gx, float* gweight, float* gbias);
void batchnorm_backward_train(CudaContext& ctx, const BNGeom& g, const float* x, const float* gy,
                              const float* mean, const float* invstd, const float* weight, float* gx,
                              float* gweight, float* gbias);

}  // namespace spade::cuda
