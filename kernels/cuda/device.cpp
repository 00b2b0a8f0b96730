#include "kernels/cuda/device.h"

#include <cstring>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace spade {

// ---------------------------------------------------------------------------------------------
// Error reporting (declared in cuda_check.h)

namespace cuda_detail {

std::string status_text(cudaError_t s) {
  return std::string(cudaGetErrorName(s)) + " (" + cudaGetErrorString(s) + ")";
}

std::string status_text(cublasStatus_t s) {
  return std::string(cublasGetStatusName(s)) + " (" + cublasGetStatusString(s) + ")";
}

std::string status_text(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS (success)";
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_NOT_INITIALIZED (library not initialised)";
    case CUSOLVER_STATUS_ALLOC_FAILED:
      return "CUSOLVER_STATUS_ALLOC_FAILED (resource allocation failed)";
    case CUSOLVER_STATUS_INVALID_VALUE:
      return "CUSOLVER_STATUS_INVALID_VALUE (invalid parameter)";
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      return "CUSOLVER_STATUS_ARCH_MISMATCH (feature not supported by this device)";
    case CUSOLVER_STATUS_MAPPING_ERROR:
      return "CUSOLVER_STATUS_MAPPING_ERROR (texture memory access failed)";
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      return "CUSOLVER_STATUS_EXECUTION_FAILED (kernel failed to execute)";
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      return "CUSOLVER_STATUS_INTERNAL_ERROR (internal operation failed)";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED (matrix type not supported)";
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_NOT_SUPPORTED (operation not supported)";
    case CUSOLVER_STATUS_ZERO_PIVOT: return "CUSOLVER_STATUS_ZERO_PIVOT (zero pivot)";
    case CUSOLVER_STATUS_INVALID_LICENSE:
      return "CUSOLVER_STATUS_INVALID_LICENSE (invalid license)";
    case CUSOLVER_STATUS_INVALID_WORKSPACE:
      return "CUSOLVER_STATUS_INVALID_WORKSPACE (workspace too small or invalid)";
    default: return "cusolverStatus_t " + std::to_string(static_cast<int>(s));
  }
}

const char* library_name(cudaError_t) { return "CUDA"; }
const char* library_name(cublasStatus_t) { return "cuBLAS"; }
const char* library_name(cusolverStatus_t) { return "cuSOLVER"; }

const char* relative_source_path(const char* file) {
  // This file's own path tells where the repository root is in the paths the compiler uses.
  static const size_t root_length = [] {
    const char* self = __FILE__;
    const char* suffix = "kernels/cuda/device.cpp";
    const size_t n = std::strlen(self), m = std::strlen(suffix);
    return n >= m && std::strcmp(self + n - m, suffix) == 0 ? n - m : size_t{0};
  }();
  if (root_length > 0 && std::strncmp(file, __FILE__, root_length) == 0) return file + root_length;
  return file;
}

void throw_failure(const char* library, const std::string& status, const char* call,
                   const std::string& what, const char* file, int line) {
  std::string msg = std::string(library) + " error";
  if (!what.empty()) msg += " while " + what;
  msg += ": " + std::string(call) + " failed at " + relative_source_path(file) + ":" +
         std::to_string(line) + ": " + status;
  // One line, whatever the call text or the library put in its strings.
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  throw Error(msg);
}

}  // namespace cuda_detail

// ---------------------------------------------------------------------------------------------
// Devices

int cuda_device_count() noexcept {
  static const int count = [] {
    int n = 0;
    // Without a driver (cudaErrorInsufficientDriver) or a GPU (cudaErrorNoDevice) this fails;
    // that is the CPU-only machine, not an error.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

bool cuda_available() noexcept { return cuda_device_count() > 0; }

void check_cuda_device_index(int index) {
  const int count = cuda_device_count();
  if (count == 0)
    throw Error("CUDA device " + std::to_string(index) +
                " requested but no CUDA device is available (no GPU or no driver)");
  if (index < 0 || index >= count)
    throw Error("CUDA device " + std::to_string(index) + " does not exist (" +
                std::to_string(count) + " device" + (count == 1 ? "" : "s") + " available)");
}

int cuda_current_device() {
  int device = 0;
  SPADE_CUDA_CHECK(cudaGetDevice(&device), "querying the current CUDA device");
  return device;
}

CudaDeviceInfo cuda_device_info(int index) {
  check_cuda_device_index(index);
  const std::string what = "querying CUDA device " + std::to_string(index);
  cudaDeviceProp prop{};
  SPADE_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), what);
  CudaDeviceInfo info;
  info.index = index;
  info.name = std::string(prop.name, strnlen(prop.name, sizeof prop.name));
  info.total_memory = prop.totalGlobalMem;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  {
    CudaDeviceGuard guard(index);  // cudaMemGetInfo reports on the current device
    size_t free_bytes = 0, total_bytes = 0;
    SPADE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes), what);
    info.free_memory = free_bytes;
  }
  return info;
}

std::string describe(const CudaDeviceInfo& info) {
  return info.name + " (device " + std::to_string(info.index) + ", compute capability " +
         std::to_string(info.cc_major) + "." + std::to_string(info.cc_minor) + ", " +
         std::to_string(info.sm_count) + " SMs, " + format_bytes(info.free_memory) +
         " free of " + format_bytes(info.total_memory) + ")";
}

CudaDeviceGuard::CudaDeviceGuard(int device) {
  SPADE_CUDA_CHECK(cudaGetDevice(&previous_), "querying the current CUDA device");
  if (previous_ != device) {
    SPADE_CUDA_CHECK(cudaSetDevice(device), "selecting CUDA device " + std::to_string(device));
    switched_ = true;
  }
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (switched_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// Streams and contexts

CudaStream::CudaStream(int device) : device_(device) {
  check_cuda_device_index(device);
  CudaDeviceGuard guard(device);
  SPADE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                   "creating a stream on CUDA device " + std::to_string(device));
}

CudaStream::~CudaStream() { destroy(); }

CudaStream::CudaStream(CudaStream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)), device_(std::exchange(other.device_, -1)) {}

CudaStream& CudaStream::operator=(CudaStream&& other) noexcept {
  if (this != &other) {
    destroy();
    stream_ = std::exchange(other.stream_, nullptr);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

void CudaStream::synchronize() const {
  SPADE_CUDA_CHECK(cudaStreamSynchronize(stream_),
                   "waiting for a stream on CUDA device " + std::to_string(device_));
}

void CudaStream::destroy() noexcept {
  if (stream_ == nullptr) return;
  // Errors are ignored: this runs in destructors, possibly while the driver shuts down.
  if (cudaStreamSynchronize(stream_) != cudaSuccess) cudaGetLastError();
  if (cudaStreamDestroy(stream_) != cudaSuccess) cudaGetLastError();
  stream_ = nullptr;
}

CudaContext::CudaContext(int device) : stream_(device), allocator_(&cuda_allocator(device)) {}

CudaContext::~CudaContext() = default;

CudaContext& CudaContext::operator=(CudaContext&& other) noexcept {
  if (this != &other) {
    // The old handles go before the old stream they are bound to.
    cublas_.reset();
    cusolver_.reset();
    stream_ = std::move(other.stream_);
    allocator_ = other.allocator_;
    cublas_ = std::move(other.cublas_);
    cusolver_ = std::move(other.cusolver_);
  }
  return *this;
}

cublasHandle_t CudaContext::cublas() {
  if (!cublas_) {
    CudaDeviceGuard guard(device());
    cublasHandle_t raw = nullptr;
    SPADE_CUDA_CHECK(cublasCreate(&raw), "creating the cuBLAS handle");
    // Owned before binding, so a failed bind destroys it and the next call tries again.
    decltype(cublas_) handle(raw);
    SPADE_CUDA_CHECK(cublasSetStream(raw, stream()), "binding cuBLAS to the context stream");
    cublas_ = std::move(handle);
  }
  return cublas_.get();
}

cusolverDnHandle_t CudaContext::cusolver() {
  if (!cusolver_) {
    CudaDeviceGuard guard(device());
    cusolverDnHandle_t raw = nullptr;
    SPADE_CUDA_CHECK(cusolverDnCreate(&raw), "creating the cuSOLVER handle");
    // Owned before binding, so a failed bind destroys it and the next call tries again.
    decltype(cusolver_) handle(raw);
    SPADE_CUDA_CHECK(cusolverDnSetStream(raw, stream()), "binding cuSOLVER to the context stream");
    cusolver_ = std::move(handle);
  }
  return cusolver_.get();
}

void CudaContext::CublasDeleter::operator()(std::remove_pointer_t<cublasHandle_t>* h) const noexcept {
  cublasDestroy(h);
}

void CudaContext::CusolverDeleter::operator()(
    std::remove_pointer_t<cusolverDnHandle_t>* h) const noexcept {
  cusolverDnDestroy(h);
}

// ---------------------------------------------------------------------------------------------
// The engine's context

namespace {
int selected_device = 0;
CudaContext* engine_context = nullptr;
std::mutex engine_context_mutex;
}  // namespace

void select_cuda_device(int device) {
  check_cuda_device_index(device);
  std::lock_guard<std::mutex> lock(engine_context_mutex);
  if (engine_context && engine_context->device() != device)
    throw Error("CUDA device " + std::to_string(device) + " selected after work started on device " +
                std::to_string(engine_context->device()));
  selected_device = device;
}

CudaContext& cuda_context() {
  std::lock_guard<std::mutex> lock(engine_context_mutex);
  if (!engine_context) {
    check_cuda_device_index(selected_device);
    SPADE_CUDA_CHECK(cudaSetDevice(selected_device), "selecting CUDA device " + std::to_string(selected_device));
    engine_context = new CudaContext(selected_device);  // never destroyed (see device.h)
  }
  return *engine_context;
}

}  // namespace spade
