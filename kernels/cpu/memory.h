#pragma once
// Large host buffers backed by transparent huge pages where the kernel allows it (madvise
// mode): a fresh 1 GiB buffer then costs 512 page faults instead of 262144, which dominated
// one-shot passes such as SPADE's Hessians over a few dozen images.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

namespace spade::kernels {

// 64-byte aligned memory of at least `bytes`; buffers of 4 MiB or more are 2 MiB aligned and
// advised as huge pages. Free with std::free. Returns nullptr when out of memory.
void* allocate_host(size_t bytes);

// The machine's physical memory in bytes (0 when it cannot be read).
int64_t physical_memory_bytes();

// "512 B", "4.00 KiB", "1.50 GiB": for log lines and error messages.
std::string format_bytes(size_t bytes);

// A std::vector allocator on top of allocate_host.
template <class T>
struct HostAllocator {
  using value_type = T;
  HostAllocator() = default;
  template <class U>
  HostAllocator(const HostAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = allocate_host(n * sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const HostAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const HostAllocator<U>&) const { return false; }
};

}  // namespace spade::kernels
