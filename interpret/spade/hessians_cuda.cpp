// The GPU half of HessianAccumulator: a CUDA forward pass hands the layer's input over as a device
// tensor, which is unfolded (im2col) and folded into a float64 Hessian in device memory, so
// nothing crosses to the host until the solver's results do.
#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/ops.h"
#include "interpret/spade/hessians.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/conv.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/hessian.h"
#endif

namespace spade::interp {

#ifdef SPADE_WITH_CUDA

namespace {

// out (cols x rows) = in (rows x cols)^T, row-major device matrices.
void transpose(CudaContext& ctx, int64_t rows, int64_t cols, const float* in, float* out) {
  const float one = 1.f, zero = 0.f;
  // Row-major in is column-major (cols x rows); its transpose is column-major (rows x cols),
  // which is out in row-major order.
  SPADE_CUDA_CHECK(cublasSgeam(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(cols),
                               &one, in, static_cast<int>(cols), &zero, out, static_cast<int>(rows), out,
                               static_cast<int>(rows)),
                   "transposing a linear layer's inputs");
}

}  // namespace

std::vector<double> LayerHessian::to_host() const {
  const size_t n = static_cast<size_t>(groups * dim * dim);
  if (device == Device::CPU) return std::vector<double>(h.begin(), h.end());
  std::vector<double> out(n);
  CudaContext& ctx = cuda_context();
  SPADE_CUDA_CHECK(cudaMemcpyAsync(out.data(), device_h.get(), n * sizeof(double), cudaMemcpyDeviceToHost,
                                   ctx.stream()),
                   "copying a Hessian to the host");
  ctx.synchronize();
  return out;
}

void HessianAccumulator::add_cuda(const Tensor& input, const Tensor* output) {
  CudaContext& ctx = cuda_context();
  const int64_t dim = h_.dim;
  if (!h_.device_h) {
    const size_t bytes = static_cast<size_t>(h_.groups * dim * dim) * sizeof(double);
    CachingAllocator* alloc = &ctx.allocator();
    h_.device_h = std::shared_ptr<double>(static_cast<double*>(alloc->allocate(bytes, ctx.stream())),
                                          [alloc](double* p) { alloc->release(p); });
    SPADE_CUDA_CHECK(cudaMemsetAsync(h_.device_h.get(), 0, bytes, ctx.stream()), "clearing a Hessian");
    h_.device = Device::CUDA;
  }
  if (layer_.conv) {
    if (input.ndim() != 4)
      throw Error("layer \"" + layer_.name + "\": conv input " + shape_str(input.shape()) + " is not 4-D");
    const kernels::ConvGeom g = conv_geom(node_, input.shape());
    const int64_t L = g.out_h() * g.out_w(), image = g.C * g.H * g.W;
    if (dim != g.col_rows())
      throw Error("layer \"" + layer_.name + "\": input " + shape_str(input.shape()) + " does not fit the weights");
    flops_ += static_cast<double>(dim) * (dim + 1) * L * g.N * g.groups;
    // Images per unfolding, so that the column buffer stays within 512 MiB.
    const int64_t budget = int64_t(128) << 20;
    const int64_t per = std::clamp<int64_t>(budget / std::max<int64_t>(1, dim * L), 1, g.N);
    DeviceBuffer cols = ctx.allocate(static_cast<size_t>(dim * per * L) * sizeof(float));
    for (int64_t n0 = 0; n0 < g.N; n0 += per) {
      kernels::ConvGeom part = g;
      part.N = std::min(per, g.N - n0);
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        cuda::im2col_batch(ctx, part, input.data() + n0 * image, gi * g.cin_per_group(), cols.data_as<float>());
        cuda::syrk_lower_add(ctx, dim, part.N * L, cols.data_as<float>(), part.N * L, h_.group(gi));
      }
    }
  } else {
    if (input.ndim() != 2 || input.dim(1) != dim)
      throw Error("layer \"" + layer_.name + "\": input " + shape_str(input.shape()) + " does not fit the weights");
    const int64_t N = input.dim(0);
    flops_ += static_cast<double>(dim) * (dim + 1) * N;
    // X is (N, dim) row-major = X^T column-major: H += X^T X is the rank update of the transpose.
    Tensor xt = Tensor::empty({dim, N}, Device::CUDA);
    transpose(ctx, N, dim, input.data(), xt.data());
    cuda::syrk_lower_add(ctx, dim, N, xt.data(), N, h_.group(0));
  }
  if (output) {
    if (node_.attrs.bias) {
      // Only linear layers carry a bias in the models we prune; their outputs are small.
      const Tensor y = output->cpu();
      const int64_t N = y.dim(0), C = y.dim(1), inner = y.numel() / std::max<int64_t>(1, N * C);
      const Tensor& bias = node_.params.at("bias");
      for (int64_t p = 0; p < N * C; ++p) {
        const float b = bias[p % C];
        for (int64_t i = 0; i < inner; ++i) energy_ += static_cast<double>(y[p * inner + i] - b) * (y[p * inner + i] - b);
      }
    } else {
      energy_ += cuda::sum_squares(ctx, output->numel(), output->data());
    }
  }
}

void HessianAccumulator::finalize_cuda(double scale) {
  CudaContext& ctx = cuda_context();
  for (int64_t gi = 0; gi < h_.groups; ++gi) cuda::symmetrize_scale(ctx, h_.dim, scale, h_.group(gi));
}

#else

std::vector<double> LayerHessian::to_host() const { return std::vector<double>(h.begin(), h.end()); }

void HessianAccumulator::add_cuda(const Tensor&, const Tensor*) {
  throw Error("CUDA tensor used, but this build has no CUDA backend");
}

void HessianAccumulator::finalize_cuda(double) {
  throw Error("CUDA tensor used, but this build has no CUDA backend");
}

#endif

}  // namespace spade::interp
