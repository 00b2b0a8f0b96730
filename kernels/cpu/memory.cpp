#include "kernels/cpu/memory.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace spade::kernels {

void* allocate_host(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20, kHugeFrom = size_t{4} << 20;
  if (bytes == 0) bytes = 64;
  if (bytes < kHugeFrom) return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  bytes = (bytes + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p) madvise(p, bytes, MADV_HUGEPAGE);  // advisory: ignored where huge pages are off
#endif
  return p;
}

}  // namespace spade::kernels
