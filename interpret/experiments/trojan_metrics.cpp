#include "interpret/experiments/trojan_metrics.h"

#include <algorithm>
#include <cmath>

#include "interpret/metrics/pointing_game.h"
#include "interpret/metrics/roc_auc.h"

namespace spade::interp {

const std::vector<std::string>& paper_methods() {
  static const std::vector<std::string> m = {"saliency",      "input_x_gradient", "deeplift", "lrp",
                                             "guided_backprop", "guided_gradcam", "lime",     "occlusion",
                                             "integrated_gradients", "gradient_shap"};
  return m;
}

MethodParams experiment_params(const std::string& method, const Model& m, int64_t lime_samples) {
  MethodParams p = paper_preset(method);
  p.mean = m.preprocess.mean;
  p.std = m.preprocess.std;
  const double scale = double(m.graph.input_chw[1]) / 224.0;
  if (scale < 1.0) {
    // Scaled exactly, the window would be 2 pixels and the stride 1 at 32 px (1000 forward passes
    // per map, each occluding almost nothing); side/8 and side/16 (4 and 2 at 32 px) keep about
    // the paper's number of windows per map (~200).
    const int64_t side = m.graph.input_chw[1];
    const int64_t window = std::max<int64_t>(1, side / 8);
    const int64_t stride = std::max<int64_t>(1, side / 16);
    p.window = {3, window, window};
    p.stride = {3, stride, stride};
    p.segmentation = "slic";
  }
  if (method == "lime" && lime_samples > 0) p.samples = lime_samples;
  return p;
}

void TrojanScore::add(const Tensor& attribution, const std::vector<uint8_t>& mask, double* signed_auc,
                      double* abs_auc, bool* hit) {
  const TrojanAuc t = trojan_auc(attribution, mask);
  const bool h = pointing_game(attribution, mask).hit;
  add_scores(t.signed_auc, t.abs_auc, h);
  if (signed_auc) *signed_auc = t.signed_auc;
  if (abs_auc) *abs_auc = t.abs_auc;
  if (hit) *hit = h;
}

void TrojanScore::add_scores(double signed_auc, double abs_auc, bool hit) {
  signed_sum += signed_auc;
  abs_sum += abs_auc;
  hits += hit;
  ++n;
}

double TrojanScore::auc() const { return n ? 100.0 * std::max(signed_sum, abs_sum) / double(n) : 0.0; }

}  // namespace spade::interp
