#include "kernels/cuda/loss.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_check.h"

// One warp per row, in double as the CPU: the row maximum, then the sum of exp(x - max), both
// reduced with an xor butterfly, after which every lane holds the same bits (each step adds
// the same two values, in either order), so all lanes agree and reruns give the same result.

namespace spade::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 4096;

int blocks_for_rows(int64_t N) {
  return static_cast<int>(std::clamp<int64_t>((N + kWarps - 1) / kWarps, 1, kMaxBlocks));
}

struct RowSoftmax {
  double max, sum;
};

__device__ RowSoftmax row_softmax(const float* row, int64_t classes, int lane) {
  double m = -INFINITY;
  for (int64_t j = lane; j < classes; j += 32) m = fmax(m, static_cast<double>(row[j]));
  for (int off = 16; off > 0; off >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, off));
  double s = 0;
  for (int64_t j = lane; j < classes; j += 32) s += exp(static_cast<double>(row[j]) - m);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return {m, s};
}

__global__ void softmax_cross_entropy_kernel(int64_t N, int64_t classes, const float* __restrict__ logits,
                                             const int64_t* __restrict__ targets, double* __restrict__ row_loss,
                                             float* __restrict__ probs) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t n = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; n < N; n += warps) {
    const float* row = logits + n * classes;
    const RowSoftmax r = row_softmax(row, classes, lane);
    if (lane == 0) {
      const int64_t t = targets[n];
      row_loss[n] = t >= 0 && t < classes ? r.max + log(r.sum) - static_cast<double>(row[t]) : NAN;
    }
    if (probs)
      for (int64_t j = lane; j < classes; j += 32)
        probs[n * classes + j] = static_cast<float>(exp(static_cast<double>(row[j]) - r.max) / r.sum);
  }
}

__global__ void softmax_cross_entropy_backward_kernel(int64_t N, int64_t classes, const float* __restrict__ logits,
                                                      const int64_t* __restrict__ targets,
                                                      float* __restrict__ grad) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  const double count = static_cast<double>(N);
  for (int64_t n = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; n < N; n += warps) {
    const float* row = logits + n * classes;
    const RowSoftmax r = row_softmax(row, classes, lane);
    const int64_t t = targets[n];
    const bool valid = t >= 0 && t < classes;
    for (int64_t j = lane; j < classes; j += 32) {
      const double p = exp(static_cast<double>(row[j]) - r.max) / r.sum;
      grad[n * classes + j] = valid ? static_cast<float>((p - (j == t ? 1.0 : 0.0)) / count) : NAN;
    }
  }
}

}  // namespace

void softmax_cross_entropy(CudaContext& ctx, int64_t N, int64_t classes, const float* logits,
                           const int64_t* targets, double* row_loss, float* probs) {
  if (N <= 0) return;
  softmax_cross_entropy_kernel<<<blocks_for_rows(N), kThreads, 0, ctx.stream()>>>(N, classes, logits, targets,
                                                                                 row_loss, probs);
  SPADE_CUDA_CHECK_LAUNCH("softmax cross-entropy");
}

void softmax_cross_entropy_backward(CudaContext& ctx, int64_t N, int64_t classes, const float* logits,
                                    const int64_t* targets, float* grad) {
  if (N <= 0) return;
  softmax_cross_entropy_backward_kernel<<<blocks_for_rows(N), kThreads, 0, ctx.stream()>>>(N, classes, logits,
                                                                                          targets, grad);
  SPADE_CUDA_CHECK_LAUNCH("softmax cross-entropy backward");
}

}  // namespace spade::cuda
