#pragma once
// Device memory for the CUDA backend. cudaMalloc/cudaFree are slow and synchronise the whole
// device, and a forward pass asks for the same handful of sizes again and again, so freed
// blocks are kept and handed out again instead of being returned to the driver.
//
// CachingAllocator is the bookkeeping only: it gets raw memory from an "allocate raw" / "free
// raw" function pair, which makes it testable on a machine without a GPU (the tests drive it
// with malloc/free). cuda_allocator() is the instance backed by cudaMalloc for one device.
//
// Stream rule: a block is cached per stream and only handed out again on the stream it was
// allocated on. Work on one stream runs in order, so a block freed while kernels that use it
// are still queued is safe to reuse for later work on the same stream. Whoever uses a buffer on
// a second stream must synchronise before the buffer is destroyed.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/memory.h"

namespace spade {

using kernels::format_bytes;  // kernels/cpu/memory.h

struct AllocatorStats {
  size_t bytes_in_use = 0;     // rounded sizes of the blocks handed out and not yet returned
  size_t bytes_requested = 0;  // what the callers of those blocks asked for, before rounding
  size_t bytes_reserved = 0;   // everything held from the raw allocator: in use plus cached
  size_t bytes_cached = 0;     // reserved but free, waiting to be reused
  size_t peak_bytes_in_use = 0;
  size_t peak_bytes_reserved = 0;
  size_t blocks_in_use = 0;
  size_t blocks_cached = 0;
  uint64_t raw_allocs = 0;   // successful calls to the raw allocator (cudaMalloc)
  uint64_t raw_frees = 0;    // calls to the raw free function (cudaFree)
  uint64_t cache_hits = 0;   // allocations served from the cache without a raw call
  uint64_t oom_retries = 0;  // times the cache was emptied because the raw allocator ran out
};

class CachingAllocator {
 public:
  // Streams are only used as keys here, so any pointer-sized identity will do.
  using StreamKey = const void*;
  // Returns nullptr when memory is exhausted (the allocator then empties its cache and tries
  // once more); throws spade::Error for any other failure.
  using RawAlloc = std::function<void*(size_t bytes)>;
  using RawFree = std::function<void(void* ptr, size_t bytes)>;
  // Extra text for the out-of-memory message, e.g. what the device says is still free.
  using OomContext = std::function<std::string()>;

  // Small requests share 512-byte granularity; from 1 MiB on, sizes are rounded to 2 MiB so
  // that activations of slightly different shapes land on the same cached block.
  static constexpr size_t kSmallRounding = 512;
  static constexpr size_t kLargeThreshold = size_t{1} << 20;
  static constexpr size_t kLargeRounding = size_t{2} << 20;

  // `name` starts every error message, e.g. "CUDA device 0".
  CachingAllocator(std::string name, RawAlloc raw_alloc, RawFree raw_free,
                   OomContext oom_context = {});
  // Returns the cached blocks; blocks still in use belong to their owners and are left alone.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // The block size a request of `bytes` is served with; throws spade::Error when the request
  // is too large to round.
  static size_t round_size(size_t bytes);
  // Whether a cached block may serve a request that rounds to `rounded`: blocks are not split,
  // so reuse is capped at twice the request to keep a small tensor off a huge block.
  static bool can_serve(size_t block_size, size_t rounded);

  // nullptr for zero bytes. The block is at least `bytes` long and stays valid until release().
  void* allocate(size_t bytes, StreamKey stream);
  // Returns a block to the cache of the stream it was allocated on; nullptr is ignored.
  // Throws spade::Error for a pointer this allocator did not hand out (or a double release).
  void release(void* ptr);
  // Gives every cached block back to the raw allocator.
  void empty_cache();

  AllocatorStats stats() const;
  void reset_peak_stats();
  const std::string& name() const { return name_; }

 private:
  struct LiveBlock {
    size_t size;
    size_t requested;
    StreamKey stream;
  };
  // Ordered by stream, then size, so lower_bound finds the best fit on one stream.
  using FreeBlock = std::tuple<uintptr_t, size_t, uintptr_t>;  // stream, size, address

  void* take_cached(size_t rounded, StreamKey stream, size_t* block_size);
  void free_cached();
  void note_in_use(void* ptr, size_t size, size_t requested, StreamKey stream);
  std::string oom_message(size_t bytes, size_t rounded) const;

  std::string name_;
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  OomContext oom_context_;

  mutable std::mutex mutex_;
  std::unordered_map<void*, LiveBlock> live_;
  std::set<FreeBlock> free_;
  AllocatorStats stats_;
};

// Device memory from one allocator, returned to it when destroyed. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CachingAllocator& allocator, size_t bytes, cudaStream_t stream);
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }  // bytes asked for (the block may be larger)
  bool empty() const { return ptr_ == nullptr; }
  cudaStream_t stream() const { return stream_; }
  void reset();

 private:
  CachingAllocator* allocator_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

// The process-wide allocator for a device (the current one when no index is given). It is
// created on first use and never destroyed, so buffers that outlive main() can still be freed.
CachingAllocator& cuda_allocator(int device);
CachingAllocator& cuda_allocator();

// `bytes` of device memory on the current device, ordered on `stream` (0: the legacy default).
DeviceBuffer device_alloc(size_t bytes, cudaStream_t stream = nullptr);

// Blocking copies, ordered on the buffer's stream: when they return, the data is where it was
// sent and the host memory may be reused.
DeviceBuffer copy_to_device(const float* host, size_t count, cudaStream_t stream = nullptr);
void copy_to_device(const float* host, size_t count, DeviceBuffer& dst);  // into dst's start
void copy_to_host(const DeviceBuffer& src, float* host, size_t count);
std::vector<float> copy_to_host(const DeviceBuffer& src);  // all size() / 4 floats

}  // namespace spade
