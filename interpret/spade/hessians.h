#pragma once
// Layer Hessians H = (2/n) sum over the n calibration images of X X^T, where X holds the
// layer's unfolded input columns for every output position (im2col with the layer's own kernel,
// stride, padding and dilation; one Hessian per group). Streamed: each batch's inputs are folded
// in as they pass and nothing else is kept.
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/graph.h"
#include "engine/tensor.h"
#include "interpret/spade/layers.h"
#include "kernels/cpu/memory.h"

namespace spade::interp {

struct LayerHessian {
  int64_t groups = 1;
  int64_t dim = 0;        // cols of the layer (per group)
  int64_t samples = 0;    // images folded in
  // Where the matrices live: the inputs' device (a CUDA forward pass accumulates on the GPU).
  Device device = Device::CPU;
  std::vector<double, kernels::HostAllocator<double>> h;  // CPU: groups * dim * dim, row-major; lower triangle until finalised
  std::shared_ptr<double> device_h;                       // CUDA: the same layout in device memory
  const double* group(int64_t g) const { return (device == Device::CPU ? h.data() : device_h.get()) + g * dim * dim; }
  double* group(int64_t g) { return (device == Device::CPU ? h.data() : device_h.get()) + g * dim * dim; }
  // The matrices in host memory (a copy when they live on the GPU).
  std::vector<double> to_host() const;
};

class HessianAccumulator {
 public:
  HessianAccumulator(const Graph& g, const PrunableLayer& layer);
  // Folds one batch of the layer's input ((N,C,H,W) for a conv, (N,F) for a linear layer) in.
  // `output`, when given, is the layer's output on it: its energy without the bias is
  // tr(W H W^T), which reports use to put a pruning loss in proportion.
  void add(const Tensor& input, const Tensor* output = nullptr);
  // Scales by 2/n and fills the upper triangle, after the last add. Later calls do nothing, so a
  // finalised Hessian can be solved again at another target (interp::SampleSolutions).
  void finalize();
  const LayerHessian& hessian() const { return h_; }
  LayerHessian& hessian() { return h_; }
  // Useful multiply-adds done so far (the lower triangle's share of X X^T).
  double flops() const { return flops_; }
  // (2/n) sum over the outputs given to add() of ||y - bias||^2 = tr(W H W^T); after finalize().
  double output_energy() const { return energy_; }

 private:
  void add_conv(const Tensor& input);
  void add_linear(const Tensor& input);
  // The same on the GPU (hessians_cuda.cpp).
  void add_cuda(const Tensor& input, const Tensor* output);
  void finalize_cuda(double scale);

  PrunableLayer layer_;
  Node node_;  // the layer's node (geometry, bias)
  LayerHessian h_;
  double flops_ = 0.0;
  double energy_ = 0.0;
  bool finalized_ = false;
};

// The largest number of floats the shared staging buffer holds (bounds memory: 32 MiB).
constexpr int64_t kHessianBufferFloats = int64_t(8) << 20;

}  // namespace spade::interp
