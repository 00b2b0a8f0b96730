#include "interpret/metrics/roc_auc.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"

namespace spade::interp {

PixelMap channel_summed_map(const Tensor& attribution) {
  const Shape& s = attribution.shape();
  const bool batched = s.size() == 4 && s[0] == 1;
  if (!attribution.defined() || !(s.size() == 2 || s.size() == 3 || batched))
    throw Error("saliency map: expected an attribution of shape (H, W), (C, H, W) or (1, C, H, W), got " +
                shape_str(s));
  PixelMap map;
  map.height = attribution.dim(-2);
  map.width = attribution.dim(-1);
  const int64_t channels = s.size() == 2 ? 1 : attribution.dim(-3);
  const int64_t pixels = map.height * map.width;
  if (pixels == 0 || channels == 0) throw Error("saliency map: empty attribution " + shape_str(s));
  const float* a = attribution.data();
  map.values.assign(a, a + pixels);
  for (int64_t c = 1; c < channels; ++c)
    for (int64_t p = 0; p < pixels; ++p) map.values[p] += a[c * pixels + p];
  for (float v : map.values)
    if (!std::isfinite(v)) throw Error("saliency map: the attribution contains NaN or infinite values");
  return map;
}

double roc_auc(const std::vector<float>& scores, const std::vector<uint8_t>& positive) {
  if (scores.size() != positive.size())
    throw Error("roc_auc: " + std::to_string(scores.size()) + " scores but " + std::to_string(positive.size()) +
                " labels");
  for (float v : scores)
    if (std::isnan(v)) throw Error("roc_auc: a score is NaN");
  const int64_t n = static_cast<int64_t>(scores.size());
  int64_t n_pos = 0;
  for (uint8_t p : positive) n_pos += p != 0;
  const int64_t n_neg = n - n_pos;
  if (n_pos == 0 || n_neg == 0) return 0.5;

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  // Twice the rank sum of the positives, kept in integers so the statistic is exact: the tie
  // group at sorted positions [begin, end) shares the 1-based average rank (begin + 1 + end) / 2.
  int64_t twice_rank_sum = 0;
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin, group_pos = 0;
    while (end < n && scores[order[end]] == scores[order[begin]]) group_pos += positive[order[end++]] != 0;
    twice_rank_sum += group_pos * (begin + 1 + end);
    begin = end;
  }
  // U = R - P (P + 1) / 2 counts the (positive, negative) pairs ordered correctly, ties as 1/2.
  const int64_t twice_u = twice_rank_sum - n_pos * (n_pos + 1);
  return static_cast<double>(twice_u) / (2.0 * static_cast<double>(n_pos) * static_cast<double>(n_neg));
}

TrojanAuc trojan_auc(const Tensor& attribution, const std::vector<uint8_t>& mask) {
  PixelMap map = channel_summed_map(attribution);
  if (static_cast<int64_t>(mask.size()) != map.height * map.width)
    throw Error("trojan_auc: the mask has " + std::to_string(mask.size()) + " pixels but the map is " +
                std::to_string(map.height) + "x" + std::to_string(map.width));
  TrojanAuc out;
  out.signed_auc = roc_auc(map.values, mask);
  for (float& v : map.values) v = std::fabs(v);
  out.abs_auc = roc_auc(map.values, mask);
  return out;
}

}  // namespace spade::interp
