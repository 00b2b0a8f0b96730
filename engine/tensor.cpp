#include "engine/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <cstring>
#include <new>
#include <sstream>

#include "kernels/cpu/memory.h"
#ifdef SPADE_WITH_CUDA
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/elementwise.h"
#endif

namespace spade {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw Error("negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

namespace {

// Large blocks freed by tensors are kept for reuse. Each forward pass allocates the same
// activation sizes again; without the cache every large block comes fresh from the kernel
// (mmap) and its first touch page-faults, which cost ~15% of a ResNet-50 batch-16 forward.
class HostBlockCache {
 public:
  static HostBlockCache& get() {
    static HostBlockCache* cache = new HostBlockCache();  // never destroyed: tensors may outlive main
    return *cache;
  }
  // A free block of at least `bytes` (at most 25% more); its real size goes to `bytes`.
  void* take(size_t& bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 4) return nullptr;
    void* p = it->second.ptr;
    bytes = it->first;
    cached_ -= it->first;
    free_.erase(it);
    return p;
  }
  // Returns true when the cache kept the block.
  bool give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + bytes > kMaxCached) return false;
    free_.emplace(bytes, Block{p});
    cached_ += bytes;
    return true;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, b] : free_) std::free(b.ptr);
    free_.clear();
    cached_ = 0;
  }

 private:
  struct Block {
    void* ptr;
  };
  static constexpr size_t kMaxCached = size_t{1} << 31;  // 2 GiB of free blocks at most
  std::mutex mu_;
  std::multimap<size_t, Block> free_;
  size_t cached_ = 0;
};

constexpr size_t kCacheMinBytes = 256 * 1024;

// Bytes of host tensor storage alive now and at most since the last reset (the memory estimate's
// tests measure passes with it).
std::atomic<int64_t> g_live_bytes{0}, g_peak_bytes{0};

void count_allocation(int64_t bytes) {
  const int64_t live = g_live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}

// 64-byte aligned so that Eigen and the compiler can use full-width vector loads; large blocks
// on huge pages (kernels/cpu/memory.h).
std::shared_ptr<float> allocate(int64_t n) {
  size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 4095) / 4096 * 4096;
  const bool cached = bytes >= kCacheMinBytes;
  void* p = cached ? HostBlockCache::get().take(bytes) : nullptr;
  if (!p) p = kernels::allocate_host(bytes);
  if (!p) {
    HostBlockCache::get().clear();
    p = kernels::allocate_host(bytes);
  }
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  const int64_t used = std::max<int64_t>(n, 1) * static_cast<int64_t>(sizeof(float));
  count_allocation(used);
  if (!cached)
    return std::shared_ptr<float>(static_cast<float*>(p), [used](float* q) {
      g_live_bytes.fetch_sub(used, std::memory_order_relaxed);
      std::free(q);
    });
  return std::shared_ptr<float>(static_cast<float*>(p), [bytes, used](float* q) {
    g_live_bytes.fetch_sub(used, std::memory_order_relaxed);
    if (!HostBlockCache::get().give(q, bytes)) std::free(q);
  });
}
#ifdef SPADE_WITH_CUDA
// Device memory from the engine context's allocator, ordered on its stream: a block freed while
// kernels that use it are still queued is only reused by later work on the same stream.
std::shared_ptr<float> allocate_cuda(int64_t n) {
  CudaContext& ctx = cuda_context();
  CachingAllocator* alloc = &ctx.allocator();
  void* p = alloc->allocate(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float), ctx.stream());
  return std::shared_ptr<float>(static_cast<float*>(p), [alloc](float* q) { alloc->release(q); });
}

// Stream-ordered copy between any two locations (kind cudaMemcpyDefault); waits when the
// destination is host memory, so the caller may read it at once.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  CudaContext& ctx = cuda_context();
  SPADE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ctx.stream()),
                   std::string("copying ") + std::to_string(bytes) + " bytes from " + device_name(src_dev) +
                       " to " + device_name(dst_dev));
  if (dst_dev == Device::CPU || src_dev == Device::CPU) ctx.synchronize();
}
#endif

std::shared_ptr<float> allocate_on(Device device, int64_t n) {
  if (device == Device::CPU) return allocate(n);
#ifdef SPADE_WITH_CUDA
  return allocate_cuda(n);
#else
  throw Error("CUDA tensor requested, but this build has no CUDA backend");
#endif
}

// memcpy that also moves bytes to, from or within device memory.
void copy_floats(float* dst, Device dst_dev, const float* src, Device src_dev, int64_t n) {
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
#ifdef SPADE_WITH_CUDA
  copy_bytes(dst, dst_dev, src, src_dev, n * sizeof(float));
#else
  throw Error("CUDA tensor used, but this build has no CUDA backend");
#endif
}

}  // namespace

bool cuda_backend_available() {
#ifdef SPADE_WITH_CUDA
  return cuda_available();
#else
  return false;
#endif
}

Device default_device() { return cuda_backend_available() ? Device::CUDA : Device::CPU; }

Device parse_device(const std::string& name) {
  if (name == "auto") return default_device();
  if (name == "cpu") return Device::CPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (name.size() > 4) {
      const std::string digits = name.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 4)
        throw Error("bad device \"" + printable(name) + "\": expected cuda:N");
      index = std::stoi(digits);
    }
#ifdef SPADE_WITH_CUDA
    select_cuda_device(index);  // throws when there is no such GPU
    return Device::CUDA;
#else
    (void)index;
    throw Error("device \"" + printable(name) + "\" requested, but this build of spade has no CUDA backend");
#endif
  }
  throw Error("unknown device \"" + printable(name) + "\" (expected cpu, cuda, cuda:N or auto)");
}

void synchronize(Device device) {
#ifdef SPADE_WITH_CUDA
  if (device == Device::CUDA) cuda_context().synchronize();
#endif
}

void release_host_cache() { HostBlockCache::get().clear(); }

HostTensorMemory host_tensor_memory() {
  return {g_live_bytes.load(std::memory_order_relaxed), g_peak_bytes.load(std::memory_order_relaxed)};
}

void reset_host_tensor_peak() { g_peak_bytes.store(g_live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed); }

Tensor Tensor::empty(Shape shape) { return empty(std::move(shape), Device::CPU); }

Tensor Tensor::empty(Shape shape, Device device) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  t.device_ = device;
  t.storage_ = allocate_on(device, t.numel_);
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(Shape shape, Device device) {
  Tensor t = empty(std::move(shape), device);
  t.fill(0.f);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (!defined() || device == device_) return *this;
  Tensor t = empty(shape_, device);
  copy_floats(t.data_, device, data_, device_, numel_);
  return t;
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(numel_);
  if (numel_) copy_floats(v.data(), Device::CPU, data_, device_, numel_);
  return v;
}

Tensor::Tensor(Shape shape) : Tensor(empty(std::move(shape))) { fill(0.f); }

Tensor Tensor::full(Shape shape, float value) {
  Tensor t = empty(std::move(shape));
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(Shape shape, const std::vector<float>& values) {
  Tensor t = empty(std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel_)
    throw Error("from_vector: " + std::to_string(values.size()) + " values for shape " +
                shape_str(t.shape_));
  std::copy(values.begin(), values.end(), t.data_);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw Error("dimension index out of range for shape " + shape_str(shape_));
  return shape_[i];
}

Tensor Tensor::clone() const {
  if (!defined()) return Tensor();
  Tensor t = empty(shape_, device_);
  copy_floats(t.data_, device_, data_, device_, numel_);
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw Error("cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  if (ndim() == 0 || begin < 0 || end > shape_[0] || begin > end)
    throw Error("slice0 out of range for shape " + shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  Tensor t = empty(s, device_);
  int64_t inner = shape_[0] ? numel_ / shape_[0] : 0;
  copy_floats(t.data_, device_, data_ + begin * inner, device_, (end - begin) * inner);
  return t;
}

void Tensor::fill(float value) {
  if (device_ == Device::CPU) {
    std::fill(data_, data_ + numel_, value);
    return;
  }
#ifdef SPADE_WITH_CUDA
  cuda::fill(cuda_context(), numel_, value, data_);
#endif
}

void Tensor::copy_from(const Tensor& other) {
  if (other.numel_ != numel_)
    throw Error("copy_from: " + shape_str(other.shape_) + " into " + shape_str(shape_));
  copy_floats(data_, device_, other.data_, other.device_, numel_);
}

Tensor cat0(const std::vector<Tensor>& parts) {
  if (parts.empty()) throw Error("cat0 of no tensors");
  Shape inner(parts[0].shape().begin() + 1, parts[0].shape().end());
  int64_t n = 0;
  for (const Tensor& p : parts) {
    Shape pi(p.shape().begin() + 1, p.shape().end());
    if (pi != inner) throw Error("cat0: mismatched shapes " + shape_str(parts[0].shape()) + " and " + shape_str(p.shape()));
    n += p.dim(0);
  }
  Shape s = parts[0].shape();
  s[0] = n;
  Tensor out = Tensor::empty(s, parts[0].device());
  float* dst = out.data();
  for (const Tensor& p : parts) {
    copy_floats(dst, out.device(), p.data(), p.device(), p.numel());
    dst += p.numel();
  }
  return out;
}

}  // namespace spade
