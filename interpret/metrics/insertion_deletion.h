#pragma once
// Insertion and deletion (Petsiuk et al. 2018): how fast the class probability rises as the most
// salient pixels are put into an empty image, and falls as they are taken out of the real one.
// Two variants:
//  - Spade (default), the SPADE paper's: curve point i = 0..99 uses the top k = floor(i * H*W / 100)
//    pixels. "Keep" images hold only those pixels of x (the rest 0), "remove" images have them set
//    to 0; 0 is in the normalised space and applies to all channels of a pixel. Each point is the
//    probability divided by the probability on x itself, clipped to [0, 1]. Scores are trapezoid
//    areas with unit spacing: in [0, 99], read as a percentage.
//  - Rise, the RISE code's: `step` pixels at a time, ceil(H*W / step) + 1 points with both ends;
//    insertion goes from a blurred x (rise_blur) to x, deletion from x to zeros; raw probabilities;
//    scores are rise_auc of the curves, in [0, 1].
// Pixels are ranked by the channel-summed map (roc_auc.h), descending, ties by raster index. The
// model enters only through a ProbabilityFn, called with at most `batch` images at a time.
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/tensor.h"
#include "interpret/saliency/network.h"

namespace spade::interp {

// The probability of the explained class for every image of a (B, C, H, W) batch.
using ProbabilityFn = std::function<std::vector<double>(const Tensor& images)>;

// softmax(logits(net, images))[cls] per image, computed in double.
ProbabilityFn class_probability(const Network& net, int64_t cls);

enum class InsertionDeletionVariant { Spade, Rise };

struct InsertionDeletionParams {
  InsertionDeletionVariant variant = InsertionDeletionVariant::Spade;
  int64_t batch = 16;           // images per ProbabilityFn call
  int64_t rise_step = 224;      // Rise: pixels inserted / deleted per step
  int64_t rise_blur_size = 11;  // Rise: the insertion start's Gaussian kernel (odd) and sigma
  double rise_blur_sigma = 5.0;
  // false: only the insertion curve (half the model calls; what insertion-tuned schedules need);
  // deletion_curve stays empty and deletion 0.
  bool deletion = true;
  // called with (images done, total) after every batch; may be empty
  std::function<void(int64_t, int64_t)> progress;
};

struct InsertionDeletion {
  std::vector<int64_t> pixels;          // pixels inserted (kept) / deleted (removed) at each point
  std::vector<double> insertion_curve;  // Spade: normalised and clipped; Rise: raw probabilities
  std::vector<double> deletion_curve;
  double insertion = 0.0;  // Spade: trapezoid_area, in [0, 99]; Rise: rise_auc, in [0, 1]
  double deletion = 0.0;
  double reference_probability = 0.0;  // the probability on x itself (Spade's normaliser)
};

// x: the normalised image (1, C, H, W) or (C, H, W); attribution: its map, (H, W), (C', H, W) or
// (1, C', H, W). Throws spade::Error on mismatched shapes, non-finite values, a wrong number of
// probabilities from the callback, or (Spade) a zero probability on x.
InsertionDeletion insertion_deletion(const Tensor& x, const Tensor& attribution, const ProbabilityFn& probability,
                                     const InsertionDeletionParams& params = {});

// The building blocks, exposed for tests and for callers with curves of their own:
// pixel indices by descending score, equal scores in ascending index (raster) order.
std::vector<int64_t> saliency_order(const std::vector<float>& scores);
// Trapezoid area with unit spacing: sum - first / 2 - last / 2 (0 for a single point).
double trapezoid_area(const std::vector<double>& curve);
// RISE's normalised area: trapezoid_area / (n - 1), for n >= 2 points.
double rise_auc(const std::vector<double>& curve);
// RISE's gkern: scipy.ndimage.gaussian_filter(sigma, truncate 4, mode 'reflect') of a size x size
// delta at the centre, as float32, row-major (size * size).
std::vector<float> rise_blur_kernel(int64_t size, double sigma);
// Every channel of x ((C, H, W) or (N, C, H, W)) correlated with rise_blur_kernel, zero padding
// size / 2, same size out (RISE: conv2d(x, gkern, padding=klen // 2)).
Tensor rise_blur(const Tensor& x, int64_t size, double sigma);

}  // namespace spade::interp
