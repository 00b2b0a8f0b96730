#include "engine/backend.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/pool.h"
#endif

namespace spade::backend {

// Runs cpu_call on CPU tensors and cuda_call (with `ctx`, the engine's CUDA context) on CUDA ones.
// In a build without the backend the CUDA branch is never compiled: a CUDA tensor cannot exist.
#ifdef SPADE_WITH_CUDA
#define SPADE_DISPATCH(device, cpu_call, cuda_call) \
  do {                                              \
    if ((device) == Device::CPU) {                  \
      cpu_call;                                     \
    } else {                                        \
      CudaContext& ctx = cuda_context();            \
      cuda_call;                                    \
    }                                               \
  } while (0)
#else
#define SPADE_DISPATCH(device, cpu_call, cuda_call) \
  do {                                              \
    if ((device) != Device::CPU) throw Error("CUDA tensor used, but this build has no CUDA backend"); \
    cpu_call;                                       \
  } while (0)
#endif

#ifdef SPADE_WITH_CUDA
void set_allow_tf32(bool allow) { cuda::set_allow_tf32(allow); }
bool allow_tf32() { return cuda::allow_tf32(); }
#else
void set_allow_tf32(bool allow) {
  if (allow) throw Error("TF32 requested, but this build has no CUDA backend");
}
bool allow_tf32() { return false; }
#endif

void check_device(Device device, std::initializer_list<const Tensor*> tensors, const std::string& what) {
  for (const Tensor* t : tensors)
    if (t && t->defined() && t->device() != device)
      throw Error(what + ": tensors on " + device_name(device) + " and " + device_name(t->device()) +
                  " (move the model and the input to one device)");
}

void conv2d_forward(const kernels::ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  check_device(x.device(), {&w, bias, &y}, "conv2d");
  const float* b = bias ? bias->data() : nullptr;
  SPADE_DISPATCH(x.device(), kernels::conv2d_forward(g, x.data(), w.data(), b, y.data()),
                 cuda::conv2d_forward(ctx, g, x.data(), w.data(), b, y.data()));
}

void conv2d_backward_input(const kernels::ConvGeom& g, const Tensor& gy, const Tensor& w, Tensor& gx) {
  check_device(gy.device(), {&w, &gx}, "conv2d backward");
  SPADE_DISPATCH(gy.device(), kernels::conv2d_backward_input(g, gy.data(), w.data(), gx.data()),
                 cuda::conv2d_backward_input(ctx, g, gy.data(), w.data(), gx.data()));
}

void conv2d_backward_params(const kernels::ConvGeom& g, const Tensor& x, const Tensor& gy, Tensor& gw, Tensor* gb) {
  check_device(x.device(), {&gy, &gw, gb}, "conv2d backward");
  float* b = gb ? gb->data() : nullptr;
  SPADE_DISPATCH(x.device(), kernels::conv2d_backward_params(g, x.data(), gy.data(), gw.data(), b),
                 cuda::conv2d_backward_params(ctx, g, x.data(), gy.data(), gw.data(), b));
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& A, const Tensor& B, Tensor& C,
          bool accumulate) {
  check_device(A.device(), {&B, &C}, "matrix product");
  SPADE_DISPATCH(A.device(), kernels::gemm(trans_a, trans_b, M, N, K, A.data(), B.data(), C.data(), accumulate),
                 cuda::gemm(ctx, trans_a, trans_b, M, N, K, A.data(), B.data(), C.data(), accumulate));
}

void add_bias_rows(const Tensor& bias, Tensor& y) {
  check_device(y.device(), {&bias}, "bias");
  const int64_t cols = bias.numel(), rows = cols ? y.numel() / cols : 0;
  if (y.device() == Device::CPU) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) y[r * cols + c] += bias[c];
    return;
  }
  SPADE_DISPATCH(y.device(), (void)0, cuda::add_bias_rows(ctx, rows, cols, bias.data(), y.data()));
}

void column_sums(const Tensor& x, Tensor& out) {
  check_device(x.device(), {&out}, "column sums");
  const int64_t cols = out.numel(), rows = cols ? x.numel() / cols : 0;
  if (x.device() == Device::CPU) {
    std::vector<double> acc(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) acc[c] += x[r * cols + c];
    for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<float>(acc[c]);
    return;
  }
  SPADE_DISPATCH(x.device(), (void)0, cuda::column_sums(ctx, rows, cols, x.data(), out.data()));
}

void clamp_forward(const Tensor& x, float lo, float hi, Tensor& y) {
  check_device(x.device(), {&y}, "clamp");
  SPADE_DISPATCH(x.device(), kernels::clamp_forward(x.numel(), x.data(), lo, hi, y.data()),
                 cuda::clamp_forward(ctx, x.numel(), x.data(), lo, hi, y.data()));
}

void clamp_backward(const Tensor& x, const Tensor& gy, float lo, float hi, Tensor& gx) {
  check_device(x.device(), {&gy, &gx}, "clamp backward");
  SPADE_DISPATCH(x.device(), kernels::clamp_backward(x.numel(), x.data(), gy.data(), lo, hi, gx.data()),
                 cuda::clamp_backward(ctx, x.numel(), x.data(), gy.data(), lo, hi, gx.data()));
}

void add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_device(a.device(), {&b, &y}, "add");
  SPADE_DISPATCH(a.device(), kernels::add_forward(a.numel(), a.data(), b.data(), y.data()),
                 cuda::add_forward(ctx, a.numel(), a.data(), b.data(), y.data()));
}

void shortcut_forward(const kernels::ShortcutGeom& g, const Tensor& x, Tensor& y) {
  check_device(x.device(), {&y}, "shortcut");
  SPADE_DISPATCH(x.device(), kernels::shortcut_forward(g, x.data(), y.data()),
                 cuda::shortcut_forward(ctx, g, x.data(), y.data()));
}

void shortcut_backward(const kernels::ShortcutGeom& g, const Tensor& gy, Tensor& gx) {
  check_device(gy.device(), {&gx}, "shortcut backward");
  SPADE_DISPATCH(gy.device(), kernels::shortcut_backward(g, gy.data(), gx.data()),
                 cuda::shortcut_backward(ctx, g, gy.data(), gx.data()));
}

void dropout_apply(const Tensor& x, float p, uint64_t seed, Tensor& y) {
  check_device(x.device(), {&y}, "dropout");
  SPADE_DISPATCH(x.device(), kernels::dropout_apply(x.numel(), x.data(), p, seed, y.data()),
                 cuda::dropout_apply(ctx, x.numel(), x.data(), p, seed, y.data()));
}

void maxpool2d_forward(const kernels::PoolGeom& g, const Tensor& x, Tensor& y) {
  check_device(x.device(), {&y}, "max pooling");
  SPADE_DISPATCH(x.device(), kernels::maxpool2d_forward(g, x.data(), y.data()),
                 cuda::maxpool2d_forward(ctx, g, x.data(), y.data()));
}

void maxpool2d_backward(const kernels::PoolGeom& g, const Tensor& x, const Tensor& gy, Tensor& gx) {
  check_device(x.device(), {&gy, &gx}, "max pooling backward");
  SPADE_DISPATCH(x.device(), kernels::maxpool2d_backward(g, x.data(), gy.data(), gx.data()),
                 cuda::maxpool2d_backward(ctx, g, x.data(), gy.data(), gx.data()));
}

void avgpool2d_forward(const kernels::PoolGeom& g, const Tensor& x, Tensor& y) {
  check_device(x.device(), {&y}, "average pooling");
  SPADE_DISPATCH(x.device(), kernels::avgpool2d_forward(g, x.data(), y.data()),
                 cuda::avgpool2d_forward(ctx, g, x.data(), y.data()));
}

void avgpool2d_backward(const kernels::PoolGeom& g, const Tensor& gy, Tensor& gx) {
  check_device(gy.device(), {&gx}, "average pooling backward");
  SPADE_DISPATCH(gy.device(), kernels::avgpool2d_backward(g, gy.data(), gx.data()),
                 cuda::avgpool2d_backward(ctx, g, gy.data(), gx.data()));
}

void global_avgpool_forward(const Tensor& x, Tensor& y) {
  check_device(x.device(), {&y}, "global average pooling");
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  SPADE_DISPATCH(x.device(), kernels::global_avgpool_forward(planes, hw, x.data(), y.data()),
                 cuda::global_avgpool_forward(ctx, planes, hw, x.data(), y.data()));
}

void global_avgpool_backward(const Tensor& gy, Tensor& gx) {
  check_device(gy.device(), {&gx}, "global average pooling backward");
  const int64_t planes = gx.dim(0) * gx.dim(1), hw = gx.dim(2) * gx.dim(3);
  SPADE_DISPATCH(gy.device(), kernels::global_avgpool_backward(planes, hw, gy.data(), gx.data()),
                 cuda::global_avgpool_backward(ctx, planes, hw, gy.data(), gx.data()));
}

namespace {

BnCoefficients batchnorm_coefficients_cpu(const Tensor& x, bool train, const Tensor& running_mean,
                                          const Tensor& running_var, double eps, double momentum,
                                          Tensor* update_mean, Tensor* update_var) {
  const int64_t C = x.dim(1);
  BnCoefficients k{Tensor::empty({C}), Tensor::empty({C})};
  if (!train) {
    for (int64_t c = 0; c < C; ++c) {
      k.mean[c] = running_mean[c];
      k.invstd[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
    }
    return k;
  }
  std::vector<double> m(C), v(C);
  const kernels::BNGeom g{x.dim(0), C, x.dim(2) * x.dim(3)};
  kernels::batchnorm_batch_stats(g, x.data(), m.data(), v.data());
  for (int64_t c = 0; c < C; ++c) {
    k.mean[c] = static_cast<float>(m[c]);
    k.invstd[c] = static_cast<float>(1.0 / std::sqrt(v[c] + eps));
  }
  if (update_mean && update_var) {
    const double count = static_cast<double>(g.N * g.HW);
    const double unbias = count > 1 ? count / (count - 1) : 1.0;
    Tensor& rm = *update_mean;
    Tensor& rv = *update_var;
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * k.mean[c]);
      rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * v[c] * unbias);
    }
  }
  return k;
}

}  // namespace

BnCoefficients batchnorm_coefficients(const Tensor& x, bool train, const Tensor& running_mean,
                                      const Tensor& running_var, double eps, double momentum, Tensor* update_mean,
                                      Tensor* update_var) {
  check_device(x.device(), {&running_mean, &running_var, update_mean, update_var}, "batchnorm");
  if (x.device() == Device::CPU)
    return batchnorm_coefficients_cpu(x, train, running_mean, running_var, eps, momentum, update_mean, update_var);
#ifdef SPADE_WITH_CUDA
  CudaContext& ctx = cuda_context();
  const int64_t C = x.dim(1);
  BnCoefficients k{Tensor::empty({C}, x.device()), Tensor::empty({C}, x.device())};
  if (!train) {
    cuda::batchnorm_coefficients(ctx, C, running_mean.data(), running_var.data(), eps, k.mean.data(),
                                 k.invstd.data());
    return k;
  }
  DeviceBuffer stats = ctx.allocate(2 * C * sizeof(double));
  double* m = stats.data_as<double>();
  double* v = m + C;
  const kernels::BNGeom g{x.dim(0), C, x.dim(2) * x.dim(3)};
  cuda::batchnorm_batch_stats(ctx, g, x.data(), m, v);
  cuda::batchnorm_coefficients(ctx, C, m, v, eps, k.mean.data(), k.invstd.data());
  if (update_mean && update_var)
    cuda::batchnorm_update_running(ctx, C, m, v, static_cast<double>(g.N * g.HW), momentum, update_mean->data(),
                                   update_var->data());
  return k;
#else
  throw Error("CUDA tensor used, but this build has no CUDA backend");
#endif
}

void batchnorm_apply(const Tensor& x, const BnCoefficients& k, const Tensor& weight, const Tensor& bias, Tensor& y) {
  check_device(x.device(), {&k.mean, &k.invstd, &weight, &bias, &y}, "batchnorm");
  const kernels::BNGeom g{x.dim(0), x.dim(1), x.dim(2) * x.dim(3)};
  SPADE_DISPATCH(
      x.device(),
      kernels::batchnorm_apply(g, x.data(), k.mean.data(), k.invstd.data(), weight.data(), bias.data(), y.data()),
      cuda::batchnorm_apply(ctx, g, x.data(), k.mean.data(), k.invstd.data(), weight.data(), bias.data(), y.data()));
}

void batchnorm_backward(bool train, const Tensor& x, const Tensor& gy, const BnCoefficients& k, const Tensor& weight,
                        Tensor* gx, Tensor* gweight, Tensor* gbias) {
  check_device(x.device(), {&gy, &k.mean, &k.invstd, &weight, gx, gweight, gbias}, "batchnorm backward");
  const kernels::BNGeom g{x.dim(0), x.dim(1), x.dim(2) * x.dim(3)};
  float* px = gx ? gx->data() : nullptr;
  float* pw = gweight ? gweight->data() : nullptr;
  float* pb = gbias ? gbias->data() : nullptr;
  SPADE_DISPATCH(
      x.device(),
      (train ? kernels::batchnorm_backward_train : kernels::batchnorm_backward_eval)(
          g, x.data(), gy.data(), k.mean.data(), k.invstd.data(), weight.data(), px, pw, pb),
      (train ? cuda::batchnorm_backward_train : cuda::batchnorm_backward_eval)(
          ctx, g, x.data(), gy.data(), k.mean.data(), k.invstd.data(), weight.data(), px, pw, pb));
}

}  // namespace spade::backend
