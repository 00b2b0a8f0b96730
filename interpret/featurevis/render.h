#pragma once
// Lucent-style activation maximisation (render_vis): optimise images in the decorrelated Fourier
// parameterisation with Adam so that they maximise objectives, applying random transforms and the
// model's normalisation at every step; gradients flow through all of it. Runs on the CPU.
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/graph.h"
#include "engine/rules.h"
#include "engine/tensor.h"
#include "interpret/featurevis/objective.h"
#include "interpret/featurevis/transforms.h"

namespace spade::interp::featurevis {

struct RenderConfig {
  int64_t size = 224;  // square images of this side
  int64_t steps = 512;
  double lr = 0.05;
  uint64_t seed = 0;
  double init_std = 0.01;  // the spectrum's initial normal draws
  TransformConfig transforms = TransformConfig::standard();
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // the model's normalisation
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  // Images optimised together in one forward/backward pass. Every image's optimisation is
  // independent (its own spectrum, its own Adam state; the transforms depend on the step only), so
  // this bounds memory without changing what is computed.
  int64_t batch = 8;
};

struct RenderResult {
  Tensor images;  // (n, 3, size, size) in [0, 1]
  // The objective of every image at every step, as the optimiser saw it (under that step's random
  // transforms, before the step's update): curve[step][image].
  std::vector<std::vector<double>> curve;
  std::vector<double> final_values;  // of the final images, without transforms
};

// One image per objective; image i starts from the spectrum drawn with (seed, i), so the same
// objective at two indices gives two random starts. `weights` replaces parameters (a SPADE trace;
// nullptr: the dense model). `progress` gets (steps done, total steps over all batches).
RenderResult render(const Graph& g, const WeightOverlay* weights, const std::vector<Objective>& objectives,
                    const RenderConfig& cfg, const std::function<void(int64_t, int64_t)>& progress = {});

// The objectives' values on images (n, 3, H, W) in [0, 1], normalised but not transformed: the
// score of a finished visualisation.
std::vector<double> objective_values(const Graph& g, const WeightOverlay* weights, const std::vector<Objective>& objectives,
                                     const Tensor& images, const RenderConfig& cfg);

}  // namespace spade::interp::featurevis
