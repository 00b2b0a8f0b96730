#pragma once
// The kernels every op runs, at the tensor level, on the device the tensors live on: the CPU
// kernels (kernels/cpu) or the CUDA ones (kernels/cuda, only in a build with SPADE_WITH_CUDA).
// ops.cpp and rules.cpp call these, so one definition of every op's forward and gradient serves
// both devices. Every tensor of a call must be on the same device (an Error says which is not).
// Outputs are allocated by the caller and fully overwritten.
#include <string>

#include "engine/tensor.h"
#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/pool.h"

namespace spade::backend {

// Whether float32 GPU matrix products may use TF32 tensor cores (off unless asked for).
void set_allow_tf32(bool allow);
bool allow_tf32();

// Throws an Error naming `what` unless every defined tensor is on `device`.
void check_device(Device device, std::initializer_list<const Tensor*> tensors, const std::string& what);

void conv2d_forward(const kernels::ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void conv2d_backward_input(const kernels::ConvGeom& g, const Tensor& gy, const Tensor& w, Tensor& gx);
void conv2d_backward_params(const kernels::ConvGeom& g, const Tensor& x, const Tensor& gy, Tensor& gw, Tensor* gb);

// Row-major C[M,N] = op(A) op(B) (+ C), as kernels::gemm.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& A, const Tensor& B, Tensor& C,
          bool accumulate);
// y (rows, cols) += bias (cols) on every row; out (cols) = column sums of x (rows, cols).
void add_bias_rows(const Tensor& bias, Tensor& y);
void column_sums(const Tensor& x, Tensor& out);

void clamp_forward(const Tensor& x, float lo, float hi, Tensor& y);
void clamp_backward(const Tensor& x, const Tensor& gy, float lo, float hi, Tensor& gx);
void add(const Tensor& a, const Tensor& b, Tensor& y);
void shortcut_forward(const kernels::ShortcutGeom& g, const Tensor& x, Tensor& y);
void shortcut_backward(const kernels::ShortcutGeom& g, const Tensor& gy, Tensor& gx);
void dropout_apply(const Tensor& x, float p, uint64_t seed, Tensor& y);

void maxpool2d_forward(const kernels::PoolGeom& g, const Tensor& x, Tensor& y);
void maxpool2d_backward(const kernels::PoolGeom& g, const Tensor& x, const Tensor& gy, Tensor& gx);
void avgpool2d_forward(const kernels::PoolGeom& g, const Tensor& x, Tensor& y);
void avgpool2d_backward(const kernels::PoolGeom& g, const Tensor& gy, Tensor& gx);
void global_avgpool_forward(const Tensor& x, Tensor& y);   // x (N,C,H,W) -> y (N,C,1,1)
void global_avgpool_backward(const Tensor& gy, Tensor& gx);

// Per-channel mean and 1/sqrt(var + eps) (C floats each, on x's device): the running statistics
// in eval mode; in train mode the batch statistics, and when `running_mean`/`running_var` are
// given they receive PyTorch's momentum update (unbiased variance).
struct BnCoefficients {
  Tensor mean, invstd;
};
BnCoefficients batchnorm_coefficients(const Tensor& x, bool train, const Tensor& running_mean,
                                      const Tensor& running_var, double eps, double momentum,
                                      Tensor* update_mean = nullptr, Tensor* update_var = nullptr);
void batchnorm_apply(const Tensor& x, const BnCoefficients& k, const Tensor& weight, const Tensor& bias, Tensor& y);
// gx, gweight, gbias may be nullptr.
void batchnorm_backward(bool train, const Tensor& x, const Tensor& gy, const BnCoefficients& k, const Tensor& weight,
                        Tensor* gx, Tensor* gweight, Tensor* gbias);

}  // namespace spade::backend
