#include "interpret/spade/gpu_solvers.h"

#include "engine/error.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/obc.h"
#include "kernels/cuda/sparsegpt.h"
#endif

namespace spade::interp {

#ifdef SPADE_WITH_CUDA

namespace {

// Each solving thread has its own stream and library handles, so that several layers (each too
// small to fill the GPU on its own) are solved at once. Never destroyed, like the engine's
// context: thread-exit destructors may run while the CUDA runtime shuts down.
CudaContext& solver_context() {
  thread_local CudaContext* ctx = new CudaContext(cuda_context().device());
  return *ctx;
}

DeviceBuffer upload(CudaContext& ctx, const void* host, size_t bytes) {
  DeviceBuffer d = ctx.allocate(bytes);
  SPADE_CUDA_CHECK(cudaMemcpyAsync(d.data(), host, bytes, cudaMemcpyHostToDevice, ctx.stream()),
                   "uploading a layer to solve");
  return d;
}

void download(CudaContext& ctx, const DeviceBuffer& d, void* host, size_t bytes) {
  SPADE_CUDA_CHECK(cudaMemcpyAsync(host, d.data(), bytes, cudaMemcpyDeviceToHost, ctx.stream()),
                   "downloading a solved layer");
  ctx.synchronize();
}

}  // namespace

kernels::SparseGptStats sparsegpt_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_device,
                                            const kernels::SparseGptOptions& opt) {
  CudaContext& ctx = solver_context();
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  DeviceBuffer wd = upload(ctx, w, bytes);
  const kernels::SparseGptStats st = cuda::sparsegpt_prune(ctx, wd.data_as<float>(), rows, cols, H_device, opt);
  if (st.ok) download(ctx, wd, w, bytes);
  ctx.synchronize();  // the buffers go back to this stream's cache only after their work is done
  return st;
}

kernels::ObcStats obc_prune_gpu(float* w, int64_t rows, int64_t cols, const double* H_host,
                                const kernels::ObcOptions& opt) {
  CudaContext& ctx = solver_context();
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  DeviceBuffer wd = upload(ctx, w, bytes);
  DeviceBuffer h = upload(ctx, H_host, static_cast<size_t>(cols * cols) * sizeof(double));
  const kernels::ObcStats st = cuda::obc_prune(ctx, wd.data_as<float>(), rows, cols, h.data_as<double>(), opt);
  if (st.ok) download(ctx, wd, w, bytes);
  ctx.synchronize();
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
