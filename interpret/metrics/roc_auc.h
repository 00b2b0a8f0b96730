#pragma once
// How well a saliency map localises a known region (the SPADE paper's trojan-trigger patch): the
// ROC AUC of per-pixel scores against the region's mask. Also the per-pixel score map that every
// metric in interpret/metrics ranks.
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace spade::interp {

// An attribution reduced to one score per pixel: the sum over its channels, in float32 and in
// channel order (what PyTorch's attribution.sum(0) gives), row-major H * W.
struct PixelMap {
  int64_t height = 0, width = 0;
  std::vector<float> values;
};
// Accepts (H, W), (C, H, W) or (1, C, H, W). A NaN or infinite score throws spade::Error.
PixelMap channel_summed_map(const Tensor& attribution);

// The exact area under the ROC curve of `scores` for the labels `positive` (non-zero = positive):
// the Mann-Whitney U statistic with tied scores given their average rank, i.e. the probability
// that a random positive scores above a random negative, ties counting one half (equal to
// sklearn's roc_auc_score). O(n log n). 0.5 when there are no positives or no negatives.
// NaN scores and a size mismatch throw spade::Error.
double roc_auc(const std::vector<float>& scores, const std::vector<uint8_t>& positive);

// The SPADE paper's trojan localisation score: the AUC of the channel-summed map against the
// trigger mask (H * W, row-major), with the signed sum and with its absolute value |sum_c a_c|.
struct TrojanAuc {
  double signed_auc = 0.5;
  double abs_auc = 0.5;
};
TrojanAuc trojan_auc(const Tensor& attribution, const std::vector<uint8_t>& mask);

}  // namespace spade::interp
