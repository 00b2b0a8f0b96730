#pragma once
// Finding CUDA devices and owning the per-thread state that GPU work runs on: a stream and the
// cuBLAS / cuSOLVER handles bound to it. Only code built with the CUDA backend
// (SPADE_WITH_CUDA) may include this header.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>

#include "kernels/cuda/caching_allocator.h"

namespace spade {

// Number of usable devices; 0, never an exception, when there is no driver or no GPU. The
// answer is determined once per process.
int cuda_device_count() noexcept;
bool cuda_available() noexcept;

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  size_t free_memory = 0;  // at the time of the query
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
};

// Throws spade::Error when `index` is not a usable device.
CudaDeviceInfo cuda_device_info(int index);
// "NVIDIA H100 80GB HBM3 (device 0, compute capability 9.0, 132 SMs, 79.10 GiB free of 79.19 GiB)"
std::string describe(const CudaDeviceInfo& info);

// Throws spade::Error naming the index and the number of devices unless 0 <= index < count.
void check_cuda_device_index(int index);
int cuda_current_device();

// Makes `device` current for a scope and restores the previous one afterwards.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool switched_ = false;
};

// An owned, non-blocking stream (it does not wait for the legacy default stream). Destroying it
// first waits for the work queued on it, so memory cached for this stream is idle afterwards.
class CudaStream {
 public:
  explicit CudaStream(int device);
  CudaStream() : CudaStream(cuda_current_device()) {}
  ~CudaStream();
  CudaStream(CudaStream&& other) noexcept;
  CudaStream& operator=(CudaStream&& other) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  void synchronize() const;

 private:
  void destroy() noexcept;

  cudaStream_t stream_ = nullptr;
  int device_ = -1;
};

// What a thread needs to run GPU work on one device: its stream, and the cuBLAS and cuSOLVER
// handles, created on first use and bound to that stream. Not thread-safe: use one context per
// thread (the allocator behind allocate() is shared and is thread-safe).
class CudaContext {
 public:
  explicit CudaContext(int device = 0);
  ~CudaContext();
  CudaContext(CudaContext&&) noexcept = default;
  CudaContext& operator=(CudaContext&& other) noexcept;
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return stream_.device(); }
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t cublas();
  cusolverDnHandle_t cusolver();

  CachingAllocator& allocator() const { return *allocator_; }
  // Memory ordered on this context's stream.
  DeviceBuffer allocate(size_t bytes) const { return DeviceBuffer(*allocator_, bytes, stream()); }
  void synchronize() const { stream_.synchronize(); }

 private:
  struct CublasDeleter {
    void operator()(std::remove_pointer_t<cublasHandle_t>* h) const noexcept;
  };
  struct CusolverDeleter {
    void operator()(std::remove_pointer_t<cusolverDnHandle_t>* h) const noexcept;
  };

  // Declared before the handles so that they are destroyed first, while the stream still lives.
  CudaStream stream_;
  CachingAllocator* allocator_;
  std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, CublasDeleter> cublas_;
  std::unique_ptr<std::remove_pointer_t<cusolverDnHandle_t>, CusolverDeleter> cusolver_;
};

// The context the engine queues its work on: one per process, on the device chosen with
// select_cuda_device (device 0 unless told otherwise). Created on first use; never destroyed, so
// tensors that outlive main() can still return their memory. Engine work is issued from one
// thread at a time.
void select_cuda_device(int device);
CudaContext& cuda_context();

}  // namespace spade
