#include "kernels/cpu/memory.h"

#include <unistd.h>

#include <cstdio>

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

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

std::string format_bytes(size_t bytes) {
  static const char* const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace spade::kernels
