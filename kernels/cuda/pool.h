#pragma once
// Max, average and global average pooling on the GPU with the results of kernels/cpu/pool.h
// (max pooling routes the gradient to the first maximum of each window, as the CPU does).
#include "kernels/cpu/pool.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

using kernels::PoolGeom;

void maxpool2d_forward(CudaContext& ctx, const PoolGeom& g, const float* x, float* y);
void maxpool2d_backward(CudaContext& ctx, const PoolGeom& g, const float* x, const float* gy, float* gx);
void avgpool2d_forward(CudaContext& ctx, const PoolGeom& g, const float* x, float* y);
void avgpool2d_backward(CudaContext& ctx, const PoolGeom& g, const float* gy, float* gx);
void global_avgpool_forward(CudaContext& ctx, int64_t planes, int64_t hw, const float* x, float* y);
void global_avgpool_backward(CudaContext& ctx, int64_t planes, int64_t hw, const float* gy, float* gx);

}  // namespace spade::cuda
