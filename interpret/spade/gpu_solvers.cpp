#include "interpret/spade/gpu_solvers.h"

#include "engine/error.h"
#include "engine/tensor.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/obc.h"
#include "kernels/cuda/sparsegpt.h"
#endif

namespace spade::interp {

#ifdef SPADE_WITH_CUDA

namespace {

Tensor upload_weights(const float* w, int64_t rows, int64_t cols) {
  Tensor host = Tensor::empty({rows, cols});
  std::copy(w, w + rows * cols, host.data());
  return host.to(Device::CUDA);
}

void download_weights(const Tensor& device, float* w) {
  const Tensor host = device.cpu();
  std::copy(host.data(), host.data() + host.numel(), w);
}

}  // namespace

kernels::SparseGptStats sparsegpt_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_device,
                                            const kernels::SparseGptOptions& opt) {
  Tensor wd = upload_weights(w, rows, cols);
  const kernels::SparseGptStats st = cuda::sparsegpt_prune(cuda_context(), wd.data(), rows, cols, H_device, opt);
  if (st.ok) download_weights(wd, w);
  return st;
}

kernels::ObcStats obc_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_host,
                                const kernels::ObcOptions& opt) {
  CudaContext& ctx = cuda_context();
  Tensor wd = upload_weights(w, rows, cols);
  DeviceBuffer h = ctx.allocate(static_cast<size_t>(cols * cols) * sizeof(double));
  SPADE_CUDA_CHECK(cudaMemcpyAsync(h.data(), H_host, static_cast<size_t>(cols * cols) * sizeof(double),
                                   cudaMemcpyHostToDevice, ctx.stream()),
                   "uploading a Hessian");
  const kernels::ObcStats st = cuda::obc_prune(ctx, wd.data(), rows, cols, h.data_as<double>(), opt);
  if (st.ok) download_weights(wd, w);
  return st;
}

#else

kernels::SparseGptStats sparsegpt_prune_gpu(float*, int64_t, int64_t, const double*, const kernels::SparseGptOptions&) {
  throw Error("GPU pruning requested, but this build has no CUDA backend");
}

kernels::ObcStats obc_prune_gpu(float*, int64_t, int64_t, const double*, const kernels::ObcOptions&) {
  throw Error("GPU pruning requested, but this build has no CUDA backend");
}

#endif

}  // namespace spade::interp
