#pragma once
// Every CUDA, cuBLAS and cuSOLVER call goes through SPADE_CUDA_CHECK, so a failure becomes a
// spade::Error with one line naming what we were doing, the call site and the library's own
// error text, instead of a status code that is silently ignored:
//
//   SPADE_CUDA_CHECK(cudaMalloc(&p, n), "allocating " + std::to_string(n) + " bytes");
//   -> CUDA error while allocating 4096 bytes: cudaMalloc(&p, n) failed at
//      kernels/cuda/caching_allocator.cpp:57: cudaErrorMemoryAllocation (out of memory)
//
// The description is evaluated only on failure, so building a string there costs nothing on
// the normal path. Kernel launches return nothing; check them with SPADE_CUDA_CHECK_LAUNCH.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <string>
#include <type_traits>

#include "engine/error.h"

namespace spade::cuda_detail {

inline bool succeeded(cudaError_t s) { return s == cudaSuccess; }
inline bool succeeded(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
inline bool succeeded(cusolverStatus_t s) { return s == CUSOLVER_STATUS_SUCCESS; }

// "cudaErrorMemoryAllocation (out of memory)"; cuSOLVER has no string function of its own.
std::string status_text(cudaError_t s);
std::string status_text(cublasStatus_t s);
std::string status_text(cusolverStatus_t s);

const char* library_name(cudaError_t);
const char* library_name(cublasStatus_t);
const char* library_name(cusolverStatus_t);

// The call site's path relative to the repository root, so messages do not depend on where
// the tree was checked out.
const char* relative_source_path(const char* file);

[[noreturn]] void throw_failure(const char* library, const std::string& status,
                                const char* call, const std::string& what, const char* file,
                                int line);

template <typename Status>
[[noreturn]] void fail(Status s, const char* call, const std::string& what, const char* file,
                       int line) {
  // A failed runtime call also sets the thread's "last error"; clear it so the next launch
  // check does not report this failure a second time.
  if constexpr (std::is_same_v<Status, cudaError_t>) cudaGetLastError();
  throw_failure(library_name(s), status_text(s), call, what, file, line);
}

}  // namespace spade::cuda_detail

#define SPADE_CUDA_CHECK(call, what)                                                  \
  do {                                                                                \
    const auto spade_cuda_status_ = (call);                                           \
    if (!::spade::cuda_detail::succeeded(spade_cuda_status_))                        \
      ::spade::cuda_detail::fail(spade_cuda_status_, #call, (what), __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: reports bad launch configurations at once (execution errors
// surface at the next synchronising call, which is checked too).
#define SPADE_CUDA_CHECK_LAUNCH(what) SPADE_CUDA_CHECK(cudaGetLastError(), (what))
