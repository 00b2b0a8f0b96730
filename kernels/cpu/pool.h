#pragma once
// Max and average pooling on NCHW planes with PyTorch's output-size and divisor rules.
#include <cstdint>

namespace spade::kernels {

struct PoolGeom {
  int64_t N = 1, C = 1, H = 1, W = 1;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1;
  // Padding before (top, left) and after (bottom, right); max pooling ignores padded positions,
  // average pooling counts them in the divisor when count_include_pad.
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // average pooling only
  void set_padding(int64_t ph, int64_t pw) { pad_top = pad_bottom = ph, pad_left = pad_right = pw; }
  int64_t out_h() const { return out_size(H, kh, stride_h, pad_top, pad_bottom); }
  int64_t out_w() const { return out_size(W, kw, stride_w, pad_left, pad_right); }
  int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t before, int64_t after) const;
};

void maxpool2d_forward(const PoolGeom& g, const float* x, float* y);
// Routes each output gradient to the first maximum of its window (recomputed from x).
void maxpool2d_backward(const PoolGeom& g, const float* x, const float* gy, float* gx);
void avgpool2d_forward(const PoolGeom& g, const float* x, float* y);
void avgpool2d_backward(const PoolGeom& g, const float* gy, float* gx);

// Global average over each plane: x (planes, hw) -> y (planes).
void global_avgpool_forward(int64_t planes, int64_t hw, const float* x, float* y);
void global_avgpool_backward(int64_t planes, int64_t hw, const float* gy, float* gx);

}  // namespace spade::kernels
