#include "kernels/cuda/batchnorm.h"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"

// Two kinds of passes:
// - per-channel reductions (batch statistics, the gradient sums): each channel is cut into S
//   contiguous chunks, one block per chunk sums its chunk in double and a second kernel adds the
//   S partial sums of a channel in order. S depends on the shape only, so every run adds in the
//   same order and gives the same bits.
// - per-element passes (apply, gx): one grid-stride sweep over the tensor, float4-wide when
//   the plane size allows, that tracks the channel incrementally instead of dividing per element.
// The per-element formulas are the CPU's, operation for operation; where a product feeds a sum,
// nvcc and the host compiler may each fuse it into an FMA, so apply and the train-mode gx can
// differ from the CPU in the last bit. The eval-mode gx (products only) is bit-identical.

namespace spade::cuda {

namespace {

constexpr int kThreads = kThreadsPerBlock;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Chunks per channel: enough blocks in total to fill the GPU, chunks of at least ~4096 values.
int chunks_per_channel(int64_t C, int64_t M) {
  const int64_t s = std::min<int64_t>(M / 4096, (1024 + C - 1) / C);
  return static_cast<int>(std::clamp<int64_t>(s, 1, 64));
}

// The sum over the block of (a, b), valid in thread 0. Fixed shuffle tree, then the warps in
// order.
__device__ double2 block_sum(double a, double b) {
  __shared__ double2 warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) warp_sums[warp] = make_double2(a, b);
  __syncthreads();
  double2 s = make_double2(0.0, 0.0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) {
      s.x += warp_sums[w].x;
      s.y += warp_sums[w].y;
    }
  return s;
}

// Sum of x - shift and (x - shift)^2, shift = the channel's first value: with d centred near the
// data, E[d^2] - E[d]^2 loses little to cancellation, without a second pass over x.
struct StatsTerm {
  const float* x;
  double shift;
  __device__ void begin_channel(int64_t c, int64_t HW) { shift = x[c * HW]; }
  __device__ double2 operator()(int64_t off) const {
    const double d = static_cast<double>(x[off]) - shift;
    return make_double2(d, d * d);
  }
};

// Sum of gy and gy * (x - mean); the CPU multiplies the second by invstd afterwards.
struct GradTerm {
  const float* x;
  const float* gy;
  const float* mean;
  double m;
  __device__ void begin_channel(int64_t c, int64_t) { m = mean[c]; }
  __device__ double2 operator()(int64_t off) const {
    const double g = gy[off];
    return make_double2(g, g * (static_cast<double>(x[off]) - m));
  }
};

// Block b sums chunk b % S of channel b / S: values j in [M s / S, M (s+1) / S) of the channel's
// M = N * HW, value j being x[n, c, i] with n = j / HW, i = j % HW. Each thread walks its values
// with a constant step (no division per value), four at a time so that four loads are in flight,
// adding them in order.
template <class Term>
__global__ void channel_partials_kernel(int64_t N, int64_t C, int64_t HW, int S, Term term, double2* part) {
  const int64_t c = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t M = N * HW;
  const int64_t end = M * (s + 1) / S;
  const int64_t B = blockDim.x;
  double a = 0, b = 0;
  int64_t j = M * s / S + threadIdx.x;
  if (j < end) {
    Term t = term;
    t.begin_channel(c, HW);
    int64_t i = j % HW, off = (j / HW * C + c) * HW + i;
    const int64_t plane = C * HW, step_i = B % HW, step_off = B / HW * plane + step_i;
    auto next = [&] {
      const int64_t o = off;
      off += step_off;
      i += step_i;
      if (i >= HW) {
        i -= HW;
        off += plane - HW;
      }
      return o;
    };
    for (; j + 3 * B < end; j += 4 * B) {
      const int64_t o0 = next(), o1 = next(), o2 = next(), o3 = next();
      const double2 v0 = t(o0), v1 = t(o1), v2 = t(o2), v3 = t(o3);
      a += v0.x;
      b += v0.y;
      a += v1.x;
      b += v1.y;
      a += v2.x;
      b += v2.y;
      a += v3.x;
      b += v3.y;
    }
    for (; j < end; j += B) {
      const double2 v = t(next());
      a += v.x;
      b += v.y;
    }
  }
  const double2 sum = block_sum(a, b);
  if (threadIdx.x == 0) part[blockIdx.x] = sum;
}

__device__ double2 channel_total(const double2* part, int64_t c, int S) {
  double2 t = make_double2(0.0, 0.0);
  for (int s = 0; s < S; ++s) {
    t.x += part[c * S + s].x;
    t.y += part[c * S + s].y;
  }
  return t;
}

// With M = 0 the divisions give NaN, as the CPU's 0 / 0.
__global__ void stats_finalize_kernel(int64_t C, int64_t HW, int64_t M, int S, const float* x, const double2* part,
                                      double* mean, double* var) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const double2 t = channel_total(part, c, S);
    const double count = static_cast<double>(M);
    const double shift = M > 0 ? static_cast<double>(x[c * HW]) : 0.0;
    const double md = t.x / count;
    const double v = t.y / count - md * md;
    mean[c] = shift + md;
    var[c] = v < 0 ? 0.0 : v;  // rounding can leave a tiny negative for a constant channel
  }
}

// What the train-mode gx needs per channel: gx = k (gy - mg - xhat mgx).
struct TrainCoef {
  double k, mg, mgx;
};

__global__ void grad_finalize_kernel(int64_t C, int64_t M, int S, const double2* part, const float* invstd,
                                     const float* weight, float* gweight, float* gbias, TrainCoef* coef) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const double2 t = channel_total(part, c, S);
    const double sum_gy_xhat = t.y * static_cast<double>(invstd[c]);
    if (gbias) gbias[c] = static_cast<float>(t.x);
    if (gweight) gweight[c] = static_cast<float>(sum_gy_xhat);
    if (coef) {
      const double count = static_cast<double>(M);
      // The CPU forms weight * invstd in float.
      coef[c] = TrainCoef{static_cast<double>(weight[c] * invstd[c]), t.x / count, sum_gy_xhat / count};
    }
  }
}

template <int V>
__device__ inline void load(const float* p, int64_t u, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = reinterpret_cast<const float4*>(p)[u];
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = p[u];
  }
}

template <int V>
__device__ inline void store(float* p, int64_t u, const float (&v)[V]) {
  if constexpr (V == 4) {
    reinterpret_cast<float4*>(p)[u] = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    p[u] = v[0];
  }
}

// y may be x (in-place BatchNorm), so no __restrict__.
struct ApplyOp {
  const float *x, *mean, *invstd, *weight, *bias;
  float* y;
  template <int V>
  __device__ void run(int64_t u, int64_t c) const {
    const float scale = invstd[c] * weight[c];
    const float shift = bias[c] - mean[c] * scale;
    float v[V];
    load<V>(x, u, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = v[k] * scale + shift;
    store<V>(y, u, v);
  }
};

struct EvalGradOp {
  const float *gy, *invstd, *weight;
  float* gx;
  template <int V>
  __device__ void run(int64_t u, int64_t c) const {
    const float scale = weight[c] * invstd[c];
    float v[V];
    load<V>(gy, u, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] *= scale;
    store<V>(gx, u, v);
  }
};

struct TrainGradOp {
  const float *x, *gy, *mean, *invstd;
  const TrainCoef* coef;
  float* gx;
  template <int V>
  __device__ void run(int64_t u, int64_t c) const {
    const TrainCoef k = coef[c];
    const float m = mean[c], is = invstd[c];
    float xv[V], g[V];
    load<V>(x, u, xv);
    load<V>(gy, u, g);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const double xhat = (xv[j] - m) * is;  // formed in float, as on the CPU
      g[j] = static_cast<float>(k.k * (g[j] - k.mg - xhat * k.mgx));
    }
    store<V>(gx, u, g);
  }
};

// Grid-stride over units of V floats; the unit's channel c follows from the constant stride:
// per step the in-plane index i advances by step_i (carrying into the next plane) and the
// channel by step_c.
template <int V, class Op>
__global__ void channel_map_kernel(int64_t units, int64_t hw_units, int64_t C, int64_t step_i, int64_t step_c,
                                   Op op) {
  int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (u >= units) return;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = u % hw_units, c = (u / hw_units) % C;
  for (;;) {
    op.template run<V>(u, c);
    u += stride;
    if (u >= units) break;
    i += step_i;
    if (i >= hw_units) {
      i -= hw_units;
      ++c;
    }
    c += step_c;
    if (c >= C) c -= C;
  }
}

template <class Op>
void launch_channel_map(CudaContext& ctx, const BNGeom& g, bool aligned, const Op& op, const char* what) {
  const int64_t total = g.N * g.C * g.HW;
  if (total <= 0) return;
  const int V = aligned && g.HW % 4 == 0 ? 4 : 1;
  const int64_t units = total / V, hw_units = g.HW / V;
  const int blocks = grid_blocks(units);
  const int64_t stride = int64_t(blocks) * kThreads;
  const int64_t step_i = stride % hw_units, step_c = (stride / hw_units) % g.C;
  if (V == 4)
    channel_map_kernel<4><<<blocks, kThreads, 0, ctx.stream()>>>(units, hw_units, g.C, step_i, step_c, op);
  else
    channel_map_kernel<1><<<blocks, kThreads, 0, ctx.stream()>>>(units, hw_units, g.C, step_i, step_c, op);
  SPADE_CUDA_CHECK_LAUNCH(what);
}

// Sums of gy and gy * xhat per channel into gbias / gweight (each nullable) and, when coef is
// given, the train-mode gx coefficients.
void grad_sums(CudaContext& ctx, const BNGeom& g, const float* x, const float* gy, const float* mean,
               const float* invstd, const float* weight, float* gweight, float* gbias, TrainCoef* coef) {
  const int64_t M = g.N * g.HW;
  const int S = chunks_per_channel(g.C, M);
  DeviceBuffer part = ctx.allocate(static_cast<size_t>(g.C * S) * sizeof(double2));
  channel_partials_kernel<<<static_cast<unsigned>(g.C * S), kThreads, 0, ctx.stream()>>>(
      g.N, g.C, g.HW, S, GradTerm{x, gy, mean, 0.0}, part.data_as<double2>());
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm gradient sums");
  grad_finalize_kernel<<<grid_blocks(g.C), kThreads, 0, ctx.stream()>>>(g.C, M, S, part.data_as<double2>(), invstd,
                                                                        weight, gweight, gbias, coef);
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm gradient sums (combining)");
}

template <class T>
__global__ void coefficients_kernel(int64_t C, const T* mean, const T* var, double eps, float* mean_out,
                                    float* invstd) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const T m = mean[c];
    const double v = static_cast<double>(var[c]);
    mean_out[c] = static_cast<float>(m);
    invstd[c] = static_cast<float>(1.0 / sqrt(v + eps));
  }
}

template <class T>
void launch_coefficients(CudaContext& ctx, int64_t C, const T* mean, const T* var, double eps, float* mean_out,
                         float* invstd) {
  if (C <= 0) return;
  coefficients_kernel<T><<<grid_blocks(C), kThreads, 0, ctx.stream()>>>(C, mean, var, eps, mean_out, invstd);
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm coefficients");
}

// The engine's CPU update rounds the batch mean to float first (it keeps the float mean), so
// this does too.
__global__ void update_running_kernel(int64_t C, const double* mean, const double* var, double keep, double m,
                                      double unbias, float* running_mean, float* running_var) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const double mf = static_cast<float>(mean[c]);
    running_mean[c] = static_cast<float>(keep * running_mean[c] + m * mf);
    running_var[c] = static_cast<float>(keep * running_var[c] + m * var[c] * unbias);
  }
}

}  // namespace

void batchnorm_batch_stats(CudaContext& ctx, const BNGeom& g, const float* x, double* mean, double* var) {
  if (g.C <= 0) return;
  const int64_t M = g.N * g.HW;
  const int S = chunks_per_channel(g.C, M);
  DeviceBuffer part = ctx.allocate(static_cast<size_t>(g.C * S) * sizeof(double2));
  channel_partials_kernel<<<static_cast<unsigned>(g.C * S), kThreads, 0, ctx.stream()>>>(
      g.N, g.C, g.HW, S, StatsTerm{x, 0.0}, part.data_as<double2>());
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm batch statistics");
  stats_finalize_kernel<<<grid_blocks(g.C), kThreads, 0, ctx.stream()>>>(g.C, g.HW, M, S, x, part.data_as<double2>(),
                                                                         mean, var);
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm batch statistics (combining)");
}

void batchnorm_coefficients(CudaContext& ctx, int64_t C, const float* mean, const float* var, double eps,
                            float* mean_out, float* invstd) {
  launch_coefficients(ctx, C, mean, var, eps, mean_out, invstd);
}

void batchnorm_coefficients(CudaContext& ctx, int64_t C, const double* mean, const double* var, double eps,
                            float* mean_out, float* invstd) {
  launch_coefficients(ctx, C, mean, var, eps, mean_out, invstd);
}

void batchnorm_update_running(CudaContext& ctx, int64_t C, const double* mean, const double* var, double count,
                              double momentum, float* running_mean, float* running_var) {
  if (C <= 0) return;
  const double unbias = count > 1 ? count / (count - 1) : 1.0;
  update_running_kernel<<<grid_blocks(C), kThreads, 0, ctx.stream()>>>(C, mean, var, 1 - momentum, momentum, unbias,
                                                                        running_mean, running_var);
  SPADE_CUDA_CHECK_LAUNCH("BatchNorm running statistics update");
}

void batchnorm_apply(CudaContext& ctx, const BNGeom& g, const float* x, const float* mean, const float* invstd,
                     const float* weight, const float* bias, float* y) {
  launch_channel_map(ctx, g, aligned16(x) && aligned16(y), ApplyOp{x, mean, invstd, weight, bias, y},
                     "BatchNorm apply");
}

void batchnorm_backward_eval(CudaContext& ctx, const BNGeom& g, const float* x, const float* gy, const float* mean,
                             const float* invstd, const float* weight, float* gx, float* gweight, float* gbias) {
  if (g.C <= 0) return;
  if (gweight || gbias) grad_sums(ctx, g, x, gy, mean, invstd, weight, gweight, gbias, nullptr);
  if (gx)
    launch_channel_map(ctx, g, aligned16(gy) && aligned16(gx), EvalGradOp{gy, invstd, weight, gx},
                       "BatchNorm backward (eval)");
}

void batchnorm_backward_train(CudaContext& ctx, const BNGeom& g, const float* x, const float* gy,
                              const float* mean, const float* invstd, const float* weight, float* gx,
                              float* gweight, float* gbias) {
  if (g.C <= 0) return;
  DeviceBuffer coef;
  if (gx) coef = ctx.allocate(static_cast<size_t>(g.C) * sizeof(TrainCoef));
  grad_sums(ctx, g, x, gy, mean, invstd, weight, gweight, gbias, coef.data_as<TrainCoef>());
  if (gx)
    launch_channel_map(ctx, g, aligned16(x) && aligned16(gy) && aligned16(gx),
                       TrainGradOp{x, gy, mean, invstd, coef.data_as<TrainCoef>(), gx}, "BatchNorm backward (train)");
}

}  // namespace spade::cuda
