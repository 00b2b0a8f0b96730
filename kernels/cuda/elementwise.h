#pragma once
// Pointwise GPU kernels, the counterparts of kernels/cpu/elementwise.h (same results), plus the
// small reductions the engine needs around linear layers. Device pointers, context stream.
#include <cstdint>

#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/device.h"

namespace spade::cuda {

using kernels::ShortcutGeom;

void fill(CudaContext& ctx, int64_t n, float value, float* y);
void clamp_forward(CudaContext& ctx, int64_t n, const float* x, float lo, float hi, float* y);
void clamp_backward(CudaContext& ctx, int64_t n, const float* x, const float* gy, float lo, float hi, float* gx);
void add_forward(CudaContext& ctx, int64_t n, const float* a, const float* b, float* y);
void shortcut_forward(CudaContext& ctx, const ShortcutGeom& g, const float* x, float* y);
void shortcut_backward(CudaContext& ctx, const ShortcutGeom& g, const float* gy, float* gx);
// Bit-identical masks to kernels::dropout_apply for the same (seed, p).
void dropout_apply(CudaContext& ctx, int64_t n, const float* x, float p, uint64_t seed, float* y);
// y (rows, cols) += bias (cols) on every row.
void add_bias_rows(CudaContext& ctx, int64_t rows, int64_t cols, const float* bias, float* y);
// out (cols) = sum over rows of x (rows, cols), summed in double.
void column_sums(CudaContext& ctx, int64_t rows, int64_t cols, const float* x, float* out);

}  // namespace spade::cuda
