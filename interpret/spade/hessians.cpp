#include "interpret/spade/hessians.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/hessian.h"
#include "kernels/cpu/parallel.h"

namespace spade::interp {

namespace {

// Below this Hessian size a tile product is mostly overhead: small Hessians (depthwise 3x3
// convs: 9x9 per channel) are accumulated directly, one group per thread.
constexpr int64_t kDirectDim = 32;

// One staging buffer shared by every accumulator (they run one at a time, inside the forward
// pass), kept between calls so it is not page-faulted in again for every layer and batch.
std::vector<float, kernels::HostAllocator<float>>& staging(int64_t floats) {
  static std::vector<float, kernels::HostAllocator<float>> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(static_cast<size_t>(floats));
  return buffer;
}

}  // namespace

HessianAccumulator::HessianAccumulator(const Graph& g, const PrunableLayer& layer) : layer_(layer) {
  const Node& n = g.node(layer.node);
  node_.name = n.name;
  node_.op = n.op;
  node_.attrs = n.attrs;
  node_.inputs = n.inputs;
  if (n.attrs.bias) node_.params["bias"] = n.params.at("bias");
  h_.groups = layer.groups;
  h_.dim = layer.cols;
}

void HessianAccumulator::add(const Tensor& input, const Tensor* output) {
  if (input.device() != Device::CPU) {
    add_cuda(input, output);
    h_.samples += input.dim(0);
    return;
  }
  if (h_.h.empty()) h_.h.assign(static_cast<size_t>(h_.groups * h_.dim * h_.dim), 0.0);
  if (layer_.conv)
    add_conv(input);
  else
    add_linear(input);
  h_.samples += input.dim(0);
  if (output) {
    // Per output channel c: sum over the batch of (y - b_c)^2.
    const int64_t N = output->dim(0), C = output->dim(1), inner = output->numel() / std::max<int64_t>(1, N * C);
    const float* bias = node_.attrs.bias ? node_.params.at("bias").data() : nullptr;
    std::vector<double> plane(N * C);  // one sum per (image, channel), added in order below
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
    for (int64_t p = 0; p < N * C; ++p) {
      const float b = bias ? bias[p % C] : 0.f;
      const float* y = output->data() + p * inner;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < inner; ++i) s += static_cast<double>(y[i] - b) * (y[i] - b);
      plane[p] = s;
    }
    for (double v : plane) energy_ += v;
  }
}

void HessianAccumulator::add_conv(const Tensor& input) {
  if (input.ndim() != 4) throw Error("layer \"" + layer_.name + "\": conv input " + shape_str(input.shape()) + " is not 4-D");
  const kernels::ConvGeom g = conv_geom(node_, input.shape());
  const int64_t N = g.N, dim = h_.dim, L = g.out_h() * g.out_w(), image = g.C * g.H * g.W;
  if (dim != g.col_rows()) throw Error("layer \"" + layer_.name + "\": input " + shape_str(input.shape()) + " does not fit the weights");
  flops_ += static_cast<double>(dim) * (dim + 1) * L * N * g.groups;

  if (dim <= kDirectDim) {
    const int64_t groups = g.groups;
#pragma omp parallel num_threads(kernels::num_threads())
    {
      std::vector<float> cols(dim * L);
#pragma omp for schedule(static)
      for (int64_t gi = 0; gi < groups; ++gi) {
        double* h = h_.h.data() + gi * dim * dim;
        for (int64_t n = 0; n < N; ++n) {
          kernels::im2col(g, input.data() + n * image, gi * g.cin_per_group(), cols.data());
          for (int64_t a = 0; a < dim; ++a)
            for (int64_t b = 0; b <= a; ++b) {
              const float* x = cols.data() + a * L;
              const float* y = cols.data() + b * L;
              float s = 0.f;
              for (int64_t i = 0; i < L; ++i) s += x[i] * y[i];
              h[a * dim + b] += s;
            }
        }
      }
    }
    return;
  }

  // Several images side by side in one staging buffer, dim x (count * L), so that the rank
  // update has a long inner dimension even for 7x7 feature maps.
  const int64_t per = std::clamp<int64_t>(kHessianBufferFloats / std::max<int64_t>(1, dim * L), 1, N);
  auto& buffer = staging(dim * per * L);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    for (int64_t n0 = 0; n0 < N; n0 += per) {
      const int64_t count = std::min(per, N - n0), ld = count * L;
#pragma omp parallel for schedule(static) num_threads(kernels::num_threads())
      for (int64_t k = 0; k < count; ++k)
        kernels::im2col(g, input.data() + (n0 + k) * image, gi * g.cin_per_group(), buffer.data() + k * L, ld);
      kernels::syrk_lower_add(dim, ld, buffer.data(), ld, h_.h.data() + gi * dim * dim);
    }
  }
}

void HessianAccumulator::add_linear(const Tensor& input) {
  if (input.ndim() != 2 || input.dim(1) != h_.dim)
    throw Error("layer \"" + layer_.name + "\": input " + shape_str(input.shape()) + " does not fit the weights");
  const int64_t N = input.dim(0), dim = h_.dim;
  flops_ += static_cast<double>(dim) * (dim + 1) * N;
  const int64_t per = std::clamp<int64_t>(kHessianBufferFloats / dim, 1, N);
  auto& buffer_ = staging(dim * per);
  for (int64_t n0 = 0; n0 < N; n0 += per) {
    const int64_t count = std::min(per, N - n0);
    for (int64_t k = 0; k < count; ++k)  // X^T: one column per image
      for (int64_t r = 0; r < dim; ++r) buffer_[r * count + k] = input.data()[(n0 + k) * dim + r];
    kernels::syrk_lower_add(dim, count, buffer_.data(), count, h_.h.data());
  }
}

void HessianAccumulator::finalize() {
  if (finalized_) return;
  if (h_.samples == 0) throw Error("layer \"" + layer_.name + "\": no calibration images reached it");
  finalized_ = true;
  const double scale = 2.0 / static_cast<double>(h_.samples);
  energy_ *= scale;
  if (h_.device != Device::CPU) {
    finalize_cuda(scale);
    return;
  }
  for (int64_t gi = 0; gi < h_.groups; ++gi) {
    double* h = h_.h.data() + gi * h_.dim * h_.dim;
    for (int64_t i = 0; i < h_.dim; ++i)
      for (int64_t j = 0; j <= i; ++j) h[i * h_.dim + j] *= scale;
    kernels::symmetrize_from_lower(h_.dim, h);
  }
}

}  // namespace spade::interp
