#pragma once
// Launch geometry shared by the grid-stride kernels of the CUDA backend.
#include <algorithm>
#include <cstdint>

namespace spade::cuda {

constexpr int kThreadsPerBlock = 256;
// Enough resident threads to saturate memory bandwidth on any current GPU; larger inputs are
// covered by the grid-stride loops.
constexpr int64_t kMaxGridBlocks = 4096;

// Blocks of kThreadsPerBlock threads for `work` items, at least 1 and at most kMaxGridBlocks.
inline int grid_blocks(int64_t work) {
  const int64_t b = (work + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<int>(std::clamp<int64_t>(b, 1, kMaxGridBlocks));
}

}  // namespace spade::cuda
