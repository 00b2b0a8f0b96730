#include "kernels/cuda/caching_allocator.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>
#include <utility>

#include "engine/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"

namespace spade {

// ---------------------------------------------------------------------------------------------
// CachingAllocator

CachingAllocator::CachingAllocator(std::string name, RawAlloc raw_alloc, RawFree raw_free,
                                   OomContext oom_context)
    : name_(std::move(name)),
      raw_alloc_(std::move(raw_alloc)),
      raw_free_(std::move(raw_free)),
      oom_context_(std::move(oom_context)) {
  if (!raw_alloc_ || !raw_free_)
    throw Error(name_ + ": caching allocator needs both a raw allocate and a raw free function");
}

CachingAllocator::~CachingAllocator() {
  try {
    empty_cache();
  } catch (...) {
    // The driver may already be shutting down at exit; the process releases the memory anyway.
  }
}

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes == 0) return 0;
  if (bytes > std::numeric_limits<size_t>::max() - kLargeRounding)
    throw Error("device allocation of " + std::to_string(bytes) + " bytes is too large");
  const size_t step = bytes < kLargeThreshold ? kSmallRounding : kLargeRounding;
  return (bytes + step - 1) / step * step;
}

bool CachingAllocator::can_serve(size_t block_size, size_t rounded) {
  return block_size >= rounded && block_size / 2 <= rounded;
}

void* CachingAllocator::take_cached(size_t rounded, StreamKey stream, size_t* block_size) {
  const auto key = reinterpret_cast<uintptr_t>(stream);
  auto it = free_.lower_bound(FreeBlock{key, rounded, 0});
  if (it == free_.end() || std::get<0>(*it) != key || !can_serve(std::get<1>(*it), rounded))
    return nullptr;  // the smallest block that is large enough is already too wasteful
  void* ptr = reinterpret_cast<void*>(std::get<2>(*it));
  *block_size = std::get<1>(*it);
  stats_.bytes_cached -= std::get<1>(*it);
  --stats_.blocks_cached;
  free_.erase(it);
  return ptr;
}

void CachingAllocator::note_in_use(void* ptr, size_t size, size_t requested, StreamKey stream) {
  live_.emplace(ptr, LiveBlock{size, requested, stream});
  stats_.bytes_in_use += size;
  stats_.bytes_requested += requested;
  ++stats_.blocks_in_use;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
}

void* CachingAllocator::allocate(size_t bytes, StreamKey stream) {
  if (bytes == 0) return nullptr;
  const size_t rounded = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);

  size_t cached_size = 0;
  if (void* ptr = take_cached(rounded, stream, &cached_size)) {
    ++stats_.cache_hits;
    note_in_use(ptr, cached_size, bytes, stream);
    return ptr;
  }

  void* ptr = raw_alloc_(rounded);
  if (ptr == nullptr) {
    // Cached blocks of other sizes or streams may be what fills the device: give them back and
    // try once more before failing.
    ++stats_.oom_retries;
    free_cached();
    ptr = raw_alloc_(rounded);
    if (ptr == nullptr) throw Error(oom_message(bytes, rounded));
  }
  ++stats_.raw_allocs;
  stats_.bytes_reserved += rounded;
  stats_.peak_bytes_reserved = std::max(stats_.peak_bytes_reserved, stats_.bytes_reserved);
  note_in_use(ptr, rounded, bytes, stream);
  return ptr;
}

void CachingAllocator::release(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end())
    throw Error(name_ + ": released a pointer that is not an allocated block (double free?)");
  const LiveBlock block = it->second;
  live_.erase(it);
  stats_.bytes_in_use -= block.size;
  stats_.bytes_requested -= block.requested;
  --stats_.blocks_in_use;
  free_.emplace(reinterpret_cast<uintptr_t>(block.stream), block.size,
                reinterpret_cast<uintptr_t>(ptr));
  stats_.bytes_cached += block.size;
  ++stats_.blocks_cached;
}

void CachingAllocator::free_cached() {
  // Bookkeeping is updated before each raw free, so a free that throws leaves the cache
  // consistent (that block is simply forgotten).
  while (!free_.empty()) {
    const FreeBlock block = *free_.begin();
    free_.erase(free_.begin());
    const size_t size = std::get<1>(block);
    stats_.bytes_cached -= size;
    stats_.bytes_reserved -= size;
    --stats_.blocks_cached;
    ++stats_.raw_frees;
    raw_free_(reinterpret_cast<void*>(std::get<2>(block)), size);
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  free_cached();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
  stats_.peak_bytes_reserved = stats_.bytes_reserved;
}

std::string CachingAllocator::oom_message(size_t bytes, size_t rounded) const {
  std::string msg = name_ + ": out of memory: cannot allocate " + format_bytes(rounded) + " (" +
                    std::to_string(bytes) + " bytes requested) even after emptying the cache; " +
                    format_bytes(stats_.bytes_reserved) + " reserved by spade, " +
                    format_bytes(stats_.bytes_in_use) + " in use in " +
                    std::to_string(stats_.blocks_in_use) + " blocks";
  if (oom_context_) {
    try {
      const std::string extra = oom_context_();
      if (!extra.empty()) msg += "; " + extra;
    } catch (...) {
      // The context is decoration; the out-of-memory error is what must reach the user.
    }
  }
  return msg;
}

// ---------------------------------------------------------------------------------------------
// DeviceBuffer

DeviceBuffer::DeviceBuffer(CachingAllocator& allocator, size_t bytes, cudaStream_t stream)
    : allocator_(&allocator), bytes_(bytes), stream_(stream) {
  ptr_ = allocator.allocate(bytes, stream);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : allocator_(std::exchange(other.allocator_, nullptr)),
      ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      stream_(std::exchange(other.stream_, nullptr)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    allocator_ = std::exchange(other.allocator_, nullptr);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr && allocator_ != nullptr) {
    try {
      allocator_->release(ptr_);
    } catch (...) {
      // Only a pointer the allocator never handed out can fail here, which a DeviceBuffer
      // cannot hold; destructors must not throw.
    }
  }
  allocator_ = nullptr;
  ptr_ = nullptr;
  bytes_ = 0;
  stream_ = nullptr;
}

// ---------------------------------------------------------------------------------------------
// The cudaMalloc-backed allocators

namespace {

void* cuda_raw_alloc(int device, size_t bytes) {
  CudaDeviceGuard guard(device);
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it so later launch checks do not report it
    return nullptr;
  }
  if (status != cudaSuccess)
    cuda_detail::fail(status, "cudaMalloc(&ptr, bytes)",
                      "allocating " + format_bytes(bytes) + " on CUDA device " +
                          std::to_string(device),
                      __FILE__, __LINE__);
  return ptr;
}

void cuda_raw_free(int device, void* ptr, size_t bytes) {
  CudaDeviceGuard guard(device);
  SPADE_CUDA_CHECK(cudaFree(ptr), "freeing " + format_bytes(bytes) + " on CUDA device " +
                                      std::to_string(device));
}

std::string cuda_memory_report(int device) {
  CudaDeviceGuard guard(device);
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  return "the device has " + format_bytes(free_bytes) + " free of " + format_bytes(total_bytes);
}

}  // namespace

CachingAllocator& cuda_allocator(int device) {
  check_cuda_device_index(device);
  static std::mutex mutex;
  // Leaked on purpose: see the header.
  static auto* allocators = new std::vector<std::unique_ptr<CachingAllocator>>();
  std::lock_guard<std::mutex> lock(mutex);
  if (allocators->size() <= static_cast<size_t>(device)) allocators->resize(device + 1);
  auto& slot = (*allocators)[device];
  if (!slot) {
    slot = std::make_unique<CachingAllocator>(
        "CUDA device " + std::to_string(device),
        [device](size_t bytes) { return cuda_raw_alloc(device, bytes); },
        [device](void* ptr, size_t bytes) { cuda_raw_free(device, ptr, bytes); },
        [device] { return cuda_memory_report(device); });
  }
  return *slot;
}

CachingAllocator& cuda_allocator() { return cuda_allocator(cuda_current_device()); }

DeviceBuffer device_alloc(size_t bytes, cudaStream_t stream) {
  return DeviceBuffer(cuda_allocator(), bytes, stream);
}

namespace {

size_t float_bytes(size_t count) {
  if (count > std::numeric_limits<size_t>::max() / sizeof(float))
    throw Error("device copy of " + std::to_string(count) + " floats is too large");
  return count * sizeof(float);
}

}  // namespace

void copy_to_device(const float* host, size_t count, DeviceBuffer& dst) {
  const size_t bytes = float_bytes(count);
  if (bytes > dst.size())
    throw Error("copy to device: " + std::to_string(count) + " floats do not fit in a buffer of " +
                std::to_string(dst.size()) + " bytes");
  if (bytes == 0) return;
  const std::string what = "copying " + format_bytes(bytes) + " to the device";
  SPADE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), host, bytes, cudaMemcpyHostToDevice, dst.stream()),
                   what);
  SPADE_CUDA_CHECK(cudaStreamSynchronize(dst.stream()), what);
}

DeviceBuffer copy_to_device(const float* host, size_t count, cudaStream_t stream) {
  DeviceBuffer buffer = device_alloc(float_bytes(count), stream);
  copy_to_device(host, count, buffer);
  return buffer;
}

void copy_to_host(const DeviceBuffer& src, float* host, size_t count) {
  const size_t bytes = float_bytes(count);
  if (bytes > src.size())
    throw Error("copy to host: " + std::to_string(count) + " floats requested from a buffer of " +
                std::to_string(src.size()) + " bytes");
  if (bytes == 0) return;
  const std::string what = "copying " + format_bytes(bytes) + " to the host";
  SPADE_CUDA_CHECK(cudaMemcpyAsync(host, src.data(), bytes, cudaMemcpyDeviceToHost, src.stream()),
                   what);
  SPADE_CUDA_CHECK(cudaStreamSynchronize(src.stream()), what);
}

std::vector<float> copy_to_host(const DeviceBuffer& src) {
  std::vector<float> host(src.size() / sizeof(float));
  copy_to_host(src, host.data(), host.size());
  return host;
}

}  // namespace spade
