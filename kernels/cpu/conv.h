#pragma once
// 2-D convolution on NCHW float32 buffers: im2col + GEMM for dense and grouped convs, a direct
// loop for depthwise convs (groups == input channels, any channel multiplier).
#include <cstdint>

namespace spade::kernels {

struct ConvGeom {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t K = 1;                       // output channels
  int64_t R = 1, S = 1;                // kernel height, width
  int64_t stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  // Zero rows/columns added before (top, left) and after (bottom, right) the image; the kernels
  // offset windows by the leading padding, the trailing one only sets the output size.
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t groups = 1;
  void set_padding(int64_t ph, int64_t pw) { pad_top = pad_bottom = ph, pad_left = pad_right = pw; }
  int64_t out_h() const { return (H + pad_top + pad_bottom - dil_h * (R - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (W + pad_left + pad_right - dil_w * (S - 1) - 1) / stride_w + 1; }
  int64_t cin_per_group() const { return C / groups; }
  int64_t cout_per_group() const { return K / groups; }
  bool depthwise() const { return groups == C && groups > 1; }
  // Input columns seen by one output pixel of one group: the GEMM's inner dimension.
  int64_t col_rows() const { return cin_per_group() * R * S; }
};

// y (N,K,OH,OW) = conv(x (N,C,H,W), w (K, C/groups, R, S)) + bias (K, nullable)
void conv2d_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y);
// gx (N,C,H,W) = d/dx, overwritten
void conv2d_backward_input(const ConvGeom& g, const float* gy, const float* w, float* gx);
// gw (K,C/groups,R,S) and gb (K, nullable) overwritten
void conv2d_backward_params(const ConvGeom& g, const float* x, const float* gy, float* gw, float* gb);

// Unfolds the channels [c0, c0 + cin_per_group) of one image (C,H,W) into columns
// (cin_per_group*R*S, OH*OW) in (c, r, s) row order, zero where the window leaves the image.
// Rows are `ld` floats apart (0: OH*OW, packed), so several images can sit side by side.
void im2col(const ConvGeom& g, const float* image, int64_t c0, float* cols, int64_t ld = 0);
// Adds columns back into one image (the adjoint of im2col); the image must be initialised.
void col2im_add(const ConvGeom& g, const float* cols, int64_t c0, float* image);

}  // namespace spade::kernels
