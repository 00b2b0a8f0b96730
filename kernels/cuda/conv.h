#pragma once
// 2-D convolution on the GPU with the geometry and results of kernels/cpu/conv.h: im2col +
// cuBLAS GEMM for dense and grouped convs, direct kernels for depthwise convs. Device pointers,
// queued on the context's stream.
#include "kernels/cpu/conv.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

using kernels::ConvGeom;

// y (N,K,OH,OW) = conv(x (N,C,H,W), w (K, C/groups, R, S)) + bias (K, nullable)
void conv2d_forward(CudaContext& ctx, const ConvGeom& g, const float* x, const float* w, const float* bias,
                    float* y);
// gx (N,C,H,W) overwritten
void conv2d_backward_input(CudaContext& ctx, const ConvGeom& g, const float* gy, const float* w, float* gx);
// gw (K, C/groups, R, S) and gb (K, nullable) overwritten
void conv2d_backward_params(CudaContext& ctx, const ConvGeom& g, const float* x, const float* gy, float* gw,
                            float* gb);

// The unfolded inputs of all N images for the channels [c0, c0 + cin_per_group): cols is
// (cin_per_group*R*S, N*OH*OW) row-major, image n's OH*OW columns at column offset n*OH*OW, rows in
// (c, r, s) order, zero where the window leaves the image (what a layer's Hessian is made of).
void im2col_batch(CudaContext& ctx, const ConvGeom& g, const float* x, int64_t c0, float* cols);

}  // namespace spade::cuda
