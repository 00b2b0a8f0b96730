#include "interpret/featurevis/render.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/fold.h"
#include "interpret/featurevis/adam.h"
#include "interpret/featurevis/fourier_image.h"
#include "interpret/sample_rng.h"

namespace spade::interp::featurevis {

namespace {

void check_config(const RenderConfig& cfg, const std::vector<Objective>& objectives) {
  if (objectives.empty()) throw Error("feature visualisation: no objective");
  if (cfg.size < 8) throw Error("feature visualisation: image size must be at least 8, got " + std::to_string(cfg.size));
  if (cfg.steps < 0) throw Error("feature visualisation: steps must not be negative");
  if (!(cfg.lr > 0)) throw Error("feature visualisation: the learning rate must be positive");
  if (cfg.batch < 1) throw Error("feature visualisation: batch must be at least 1");
}

// Spectra of images [first, first + n), each from its own random stream.
std::vector<float> initial_spectra(const FourierImage& fourier, int64_t first, int64_t n, const RenderConfig& cfg) {
  std::vector<float> s(n * fourier.params_per_image());
  for (int64_t i = 0; i < n; ++i) {
    SampleRng rng(cfg.seed, first + i);
    float* dst = s.data() + i * fourier.params_per_image();
    for (int64_t k = 0; k < fourier.params_per_image(); ++k) dst[k] = float(rng.normal() * cfg.init_std);
  }
  return s;
}

ForwardOptions forward_options(const WeightOverlay* weights) {
  ForwardOptions fo;
  fo.overlay = weights;
  return fo;
}

}  // namespace

std::vector<double> objective_values(const Graph& g, const WeightOverlay* weights, const std::vector<Objective>& objectives,
                                     const Tensor& images, const RenderConfig& cfg) {
  if (images.ndim() != 4 || images.dim(0) != int64_t(objectives.size()))
    throw Error("feature visualisation: " + std::to_string(objectives.size()) + " objectives for images " +
                shape_str(images.shape()));
  const Tensor x = normalise(images, cfg.mean.data(), cfg.std.data());
  const ForwardResult fwd = forward(g, x, forward_options(weights));
  return evaluate_objectives(g, fwd, objectives, nullptr);
}

RenderResult render(const Graph& g, const WeightOverlay* weights, const std::vector<Objective>& objectives,
                    const RenderConfig& cfg, const std::function<void(int64_t, int64_t)>& progress) {
  check_config(cfg, objectives);
  // Every step is an eval-mode pass: BatchNorm folded into the convolutions computes the same
  // function with fewer passes over memory. The objectives follow their nodes into the folded
  // graph (a folded BatchNorm's output is its convolution's there).
  const FoldedGraph folded = fold_batchnorm(g, weights, objective_nodes(objectives));
  std::vector<Objective> mapped = objectives;
  for (Objective& o : mapped)
    for (ObjectiveTerm& t : o.terms) t.node = folded.node_map.at(t.node);
  const FourierImage fourier(cfg.size, cfg.size);
  const int64_t total = static_cast<int64_t>(objectives.size());
  RenderResult result;
  result.curve.assign(cfg.steps, std::vector<double>(total, 0.0));
  std::vector<Tensor> parts;
  int64_t done = 0;
  const int64_t total_steps = cfg.steps * ((total + cfg.batch - 1) / cfg.batch);
  for (int64_t first = 0; first < total; first += cfg.batch) {
    const int64_t n = std::min(cfg.batch, total - first);
    const std::vector<Objective> group(mapped.begin() + first, mapped.begin() + first + n);
    std::vector<float> spectrum = initial_spectra(fourier, first, n, cfg);
    // Fail before the long run when a neuron's position is outside its map at this size (the
    // transforms only enlarge the image, so the maps during the optimisation are no smaller).
    objective_values(folded.graph, nullptr, group, fourier.render(spectrum, n), cfg);
    Adam adam(cfg.lr);
    BackwardOptions bo;
    bo.input_grad = true;
    for (int64_t step = 0; step < cfg.steps; ++step) {
      const Tensor images = fourier.render(spectrum, n);
      TransformChain chain(cfg.transforms, draw_transforms(cfg.transforms, cfg.seed, step));
      const Tensor x = normalise(chain.forward(images), cfg.mean.data(), cfg.std.data());
      const ForwardResult fwd = forward(folded.graph, x);
      std::map<int, Tensor> seeds;
      const std::vector<double> values = evaluate_objectives(folded.graph, fwd, group, &seeds);
      for (int64_t i = 0; i < n; ++i) result.curve[step][first + i] = values[i];
      const BackwardResult back = backward(folded.graph, fwd, seeds, bo);
      const Tensor grad_images = chain.backward(normalise_backward(back.input_grad, cfg.std.data()));
      std::vector<float> grad = fourier.backward(images, grad_images);
      // Adam minimises; the objective is maximised.
      for (float& v : grad) v = -v;
      adam.step(spectrum, grad);
      if (progress) progress(++done, total_steps);
    }
    parts.push_back(fourier.render(spectrum, n));
  }
  result.images = parts.size() == 1 ? parts[0] : cat0(parts);
  result.final_values = objective_values(g, weights, objectives, result.images, cfg);
  return result;
}

}  // namespace spade::interp::featurevis
