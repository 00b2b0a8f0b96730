#pragma once
// The network a saliency method explains, and the batched passes every method is built from.
// All passes run in eval mode over at most `batch` images at a time, so memory stays bounded
// whatever the number of steps or samples a method asks for.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/graph.h"
#include "engine/rules.h"

namespace spade::interp {

// The model's graph and a trace's weights copied to a GPU once, for the passes Network runs there.
struct DeviceModel {
  Graph graph;
  WeightOverlay weights;
  bool has_weights = false;
  DeviceModel(const Graph& g, const WeightOverlay* w, Device device);
  const WeightOverlay* overlay() const { return has_weights ? &weights : nullptr; }
};

struct Network {
  const Graph& graph;
  const WeightOverlay* weights = nullptr;  // a SPADE trace (nullptr: the dense model)
  // Images per forward/backward pass. 8: on ResNet-50 224x224 a pass that keeps its activations
  // for backward then holds ~1.6 GB, and fewer freshly touched pages make the first pass faster
  // than with 16 (IG 50 steps: 4.6-5.0 s against 5.6-6.9 s, measured).
  int64_t batch = 8;
  // When set, logits, target_scores, target_gradients and layer_gradients run on this copy (a
  // GPU) and their results come back to the host, unless their backward rules are CPU-only
  // (RuleSet::runs_on_any_device: DeepLift's and LRP's are). Methods that drive the executor
  // themselves (DeepLift, LRP, Score-CAM's activations) run on the CPU.
  const DeviceModel* device = nullptr;

  int64_t num_classes() const;
  // Input shape per image (C, H, W).
  Shape image_shape() const;
};

// Logits (N, classes) of a batch of images (N, C, H, W).
Tensor logits(const Network& net, const Tensor& x);

// What a perturbation method scores: the target's logit (Captum's forward output) or its
// softmax probability (the `lime` package's classifier_fn).
enum class Score { Logit, Probability };
// Score of `target` for every image of x, batched.
std::vector<double> target_scores(const Network& net, const Tensor& x, int64_t target, Score score = Score::Logit);

// d logit[target] / d x for every image of x (N, C, H, W), batched, with the backward rules
// `rules` (nullptr: the plain gradient). `scores`, when given, receives each image's target logit.
Tensor target_gradients(const Network& net, const Tensor& x, int64_t target, const RuleSet* rules = nullptr,
                        std::vector<double>* scores = nullptr);

// The node whose output a layer method (GradCAM, ScoreCAM) uses. `layer` is a node name, or a
// module prefix ("layer4", "features") meaning the last node under it, i.e. the module's output.
// Empty: the default, the input of the global average pool (the last convolutional stage).
int resolve_layer(const Graph& g, const std::string& layer);

// A layer's activations and d logit[target] / d activations for the images of x (batched).
struct LayerPass {
  Tensor activations;  // (N, K, h, w)
  Tensor gradients;    // same shape
};
LayerPass layer_gradients(const Network& net, const Tensor& x, int64_t target, int layer_node,
                          const RuleSet* rules = nullptr);

// x repeated: (count, C, H, W) copies of the single image x (1, C, H, W).
Tensor repeat_image(const Tensor& x, int64_t count);

// Checks x is (N, C, H, W) with the network's image shape and finite values; `what` names it.
void check_images(const Network& net, const Tensor& x, const std::string& what);

}  // namespace spade::interp
