#pragma once
// What the Trojan experiment runs and how it scores (SPADE.md 4, 5): the paper's ten methods with
// its settings scaled to the model's input size, and the Trojan AUC / pointing game aggregates.
#include <map>
#include <string>
#include <vector>

#include "formats/model.h"
#include "interpret/saliency/methods.h"

namespace spade::interp {

// saliency, input_x_gradient, deeplift, lrp, guided_backprop, guided_gradcam, lime, occlusion,
// integrated_gradients, gradient_shap (the order of the paper's Table 1).
const std::vector<std::string>& paper_methods();

// The paper's settings (paper_preset), with the image-size-dependent ones changed for inputs
// smaller than 224 pixels: occlusion window side/8 and stride side/16 (4 and 2 at 32 px, about
// the paper's number of windows per map), and LIME on SLIC superpixels (quickshift's kernel is
// meant for full-size photos; on 32x32 it finds only a few segments). `lime_samples` <= 0 keeps
// the paper's 1000.
MethodParams experiment_params(const std::string& method, const Model& m, int64_t lime_samples = 0);

// Running means of the per-sample scores of one method under one variant (dense, FastSPADE, ...).
struct TrojanScore {
  double signed_sum = 0.0, abs_sum = 0.0, hits = 0.0;
  int64_t n = 0;
  void add(const Tensor& attribution, const std::vector<uint8_t>& mask, double* signed_auc = nullptr,
           double* abs_auc = nullptr, bool* hit = nullptr);
  // One sample's scores computed before (a resumed run's).
  void add_scores(double signed_auc, double abs_auc, bool hit);
  // 100 * max(mean signed AUC, mean absolute AUC): the paper's Trojan AUC.
  double auc() const;
  double pointing() const { return n ? 100.0 * hits / double(n) : 0.0; }  // % of hits
};

}  // namespace spade::interp
