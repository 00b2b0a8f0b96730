#pragma once
// An automatic stand-in for the paper's human study of neuron visualisations (SPADE.md §7). The
// paper showed people a visualisation of the predicted class and two patches of the image, the
// regions Score-CAM finds most and least relevant, and asked which patch the visualisation
// explains. Here the "person" is the model itself: the visualisation and both patches are embedded
// in the dense model's penultimate feature space (the input of its classifier), and the
// visualisation votes for the patch whose features are closer (cosine similarity). Agreement =
// the vote goes to Score-CAM's top patch; undecided = the two similarities differ by less than a
// margin. docs/featurevis.md describes the method and its limits.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/tensor.h"

namespace spade::interp {

// Top-left corners of the two square patches of side `patch` in a (H, W) map: the window with the
// largest mean and, among the windows that do not overlap it (all windows when none is apart), the
// one with the smallest mean. Ties go to the first window in row-major order.
struct PatchPair {
  int64_t top_y = 0, top_x = 0;
  int64_t bottom_y = 0, bottom_x = 0;
};
PatchPair extreme_patches(const Tensor& map, int64_t patch);

// The square patch of side `patch` at (y, x) of images (1, C, H, W), resized bilinearly
// (align_corners=false) to (1, C, size, size).
Tensor crop_resized(const Tensor& x, int64_t y, int64_t x0, int64_t patch, int64_t size);

// The node whose output feeds the classifier (the input of the output Linear, looking through a
// Flatten): the penultimate features. Throws Error when the output is not a Linear layer.
int penultimate_node(const Graph& g);

// Penultimate features (N, D) of normalised images (N, C, H, W) on the dense model.
Tensor penultimate_features(const Graph& g, const Tensor& x);

double cosine(const float* a, const float* b, int64_t n);

// One visualisation's vote.
enum class Vote { Agree, Undecided, Disagree };
struct PatchVote {
  double cos_top = 0, cos_bottom = 0;
  double difference() const { return cos_top - cos_bottom; }
  Vote vote(double margin) const;
};
const char* vote_name(Vote v);

// Rates over many votes, like the paper's Table 3.
struct VoteRates {
  int64_t count = 0;
  double agree = 0, undecided = 0, disagree = 0;  // fractions
  double mean_difference = 0;
};
VoteRates vote_rates(const std::vector<PatchVote>& votes, double margin);

}  // namespace spade::interp
