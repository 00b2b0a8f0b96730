#pragma once
// BatchNorm2d on NCHW buffers. Per-channel statistics are reduced in double, in a fixed order,
// so train-mode results do not depend on the thread count.
#include <cstdint>

namespace spade::kernels {

struct BNGeom {
  int64_t N = 1, C = 1, HW = 1;
};

// y = (x - mean[c]) * invstd[c] * weight[c] + bias[c] with given per-channel mean and invstd.
void batchnorm_apply(const BNGeom& g, const float* x, const float* mean, const float* invstd,
                     const float* weight, const float* bias, float* y);
// Biased batch mean and variance per channel.
void batchnorm_batch_stats(const BNGeom& g, const float* x, double* mean, double* var);

// Eval (fixed statistics): gx = gy * weight * invstd (nullable gx); gweight = sum gy * xhat,
// gbias = sum gy (nullable).
void batchnorm_backward_eval(const BNGeom& g, const float* x, const float* gy, const float* mean,
                             const float* invstd, const float* weight, float* gx, float* gweight,
                             float* gbias);
// Train (batch statistics): the full gradient through the mean and the variance.
void batchnorm_backward_train(const BNGeom& g, const float* x, const float* gy, const float* mean,
                              const float* invstd, const float* weight, float* gx, float* gweight,
                              float* gbias);

}  // namespace spade::kernels
