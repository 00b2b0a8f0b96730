#pragma once
// LIME (Ribeiro et al. 2016) over superpixels, as Captum's Lime with a feature mask (or, with
// kernel_sqrt, as the `lime` package's LimeImageExplainer):
//   1. segment the displayable image x * std + mean (clamped to [0, 1]) into K superpixels
//      (quickshift or slic, superpixels.h);
//   2. draw `samples` (-1: 50) vectors z in {0, 1}^K, each entry Bernoulli(0.5), sample s from
//      SampleRng(seed, s), so the draws do not depend on net.batch;
//   3. score each perturbed image x * z[segment] (off superpixels take the baseline 0, the mean
//      colour in normalised space) with target_scores(..., lime_score), net.batch images a pass;
//   4. weight each sample by its similarity to x and fit `regression` ("lasso": sklearn Lasso as
//      Captum's default surrogate; "ridge": sklearn Ridge as the `lime` package's) with
//      regression_alpha on (z, score);
//   5. every pixel in every channel gets max(weight of its superpixel, 0): the positive
//      evidence map of the SPADE paper.
//
// Similarity, two modes selected by MethodParams::kernel_sqrt:
//   - false (Captum's get_exp_kernel_similarity_function("cosine", kernel_width)):
//       d = 1 - cos(x, x_perturbed), cosine over the flattened normalised
//       input; similarity = exp(-d^2 / (2 kernel_width^2)).
//   - true ("lime package mode", LimeImageExplainer): d = cosine distance
//       between z and the all-ones vector (1 when z = 0); similarity = sqrt(exp(-d^2 /
//       kernel_width^2)); and sample 0 is the original image (z = all ones), as lime's
//       data_labels forces.
// An all-zero z has cosine similarity 0 (distance 1) in both modes, as sklearn and torch give.
#include <cstdint>
#include <vector>

#include "interpret/saliency/methods.h"
#include "interpret/saliency/superpixels.h"

namespace spade::interp {

// The superpixels LIME uses for image x (1, 3, H, W) in normalised space.
Segments lime_segments(const Tensor& x, const MethodParams& p);

// The interpretable vector of sample s over K superpixels (1 = kept).
std::vector<uint8_t> lime_sample(const MethodParams& p, int64_t s, int64_t num_segments);

// Similarity of one sample to the original. segment_energy[k] = sum of x^2 over superpixel k's
// pixels and channels (only Captum mode uses it).
double lime_similarity(const MethodParams& p, const std::vector<uint8_t>& z, const std::vector<double>& segment_energy);

// The fitted surrogate: one weight per superpixel and the intercept.
struct LimeSurrogate {
  std::vector<double> weights;
  double intercept = 0.0;
};
LimeSurrogate lime_surrogate(const Network& net, const Tensor& x /*(1, C, H, W)*/, int64_t target,
                             const std::vector<int32_t>& segments, int64_t num_segments, const MethodParams& p);

// LIME with a given segmentation (H * W labels in [0, num_segments)): the map of step 5.
Tensor lime_with_segments(const Network& net, const Tensor& x /*(1, C, H, W)*/, int64_t target,
                          const std::vector<int32_t>& segments, int64_t num_segments, const MethodParams& p);

}  // namespace spade::interp
