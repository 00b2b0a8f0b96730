#pragma once
// Large host buffers backed by transparent huge pages where the kernel allows it (madvise
// mode): a fresh 1 GiB buffer then costs 512 page faults instead of 262144, which dominated
// one-shot passes such as SPADE's Hessians over a few dozen images.
#include <cstddef>
#include <cstdlib>
#include <new>

namespace spade::kernels {

// 64-byte aligned memory of at least `bytes`; buffers of 4 MiB or more are 2 MiB aligned and
// advised as huge pages. Free with std::free. Returns nullptr when out of memory.
void* allocate_host(size_t bytes);

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
