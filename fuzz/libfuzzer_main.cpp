// The libFuzzer driver of one target (SPADE_FUZZ_TARGET, set per executable by fuzz/CMakeLists.txt).
#include <cstdio>
#include <cstdlib>

#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const spade::fuzz::Target* target = [] {
    const spade::fuzz::Target* t = spade::fuzz::find_target(SPADE_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "unknown fuzz target %s\n", SPADE_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  spade::fuzz::run_one(*target, data, size);
  return 0;
}
