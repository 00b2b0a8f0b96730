// The method table, the presets and the shared baseline helper.
#include "interpret/saliency/methods.h"

#include "engine/error.h"

namespace spade::interp {

const std::vector<MethodInfo>& all_methods() {
  static const std::vector<MethodInfo> table = {
      {"saliency", saliency, "absolute input gradient of the target logit"},
      {"input_x_gradient", input_x_gradient, "input times gradient"},
      {"integrated_gradients", integrated_gradients, "path-integrated gradients from the baseline (Gauss-Legendre)"},
      {"smoothgrad", smoothgrad, "mean of a gradient method over noisy copies (NoiseTunnel)"},
      {"gradient_shap", gradient_shap, "expected gradients times (x - baseline) over random points and baselines"},
      {"deeplift", deeplift, "DeepLift, rescale rule, relative to the baseline"},
      {"guided_backprop", guided_backprop, "gradient with only positive signals through the rectifiers"},
      {"deconvolution", deconvolution, "deconvnet: rectified gradients, ignoring the forward pass"},
      {"gradcam", gradcam, "Grad-CAM of a layer (default: the last conv stage), upsampled"},
      {"guided_gradcam", guided_gradcam, "guided backprop times the ReLU'd Grad-CAM"},
      {"occlusion", occlusion, "drop of the target logit when a sliding window is occluded"},
      {"lime", lime, "LIME on superpixels: positive weights of a local linear surrogate"},
      {"lrp", lrp, "layer-wise relevance propagation (epsilon; alpha1-beta0 with z^B in the paper preset)"},
      {"scorecam", scorecam, "Score-CAM of a layer (default: the last conv stage), upsampled"},
  };
  return table;
}

const MethodInfo& find_method(const std::string& name) {
  for (const MethodInfo& m : all_methods())
    if (name == m.name) return m;
  std::string names;
  for (const MethodInfo& m : all_methods()) names += std::string(names.empty() ? "" : ", ") + m.name;
  throw Error("unknown method \"" + name + "\" (valid: " + names + ", all)");
}

MethodParams captum_preset() { return MethodParams(); }

MethodParams paper_preset(const std::string& method) {
  find_method(method);
  MethodParams p;
  if (method == "gradient_shap") {
    p.samples = 50;
    p.stdev = 1e-4;
    p.baselines = {Baseline::Zero, Baseline::Image};
  } else if (method == "lime") {
    // The `lime` package's LimeImageExplainer defaults as the paper ran them.
    p.samples = 1000;
    p.segmentation = "quickshift";
    p.regression = "ridge";
    p.regression_alpha = 1.0;
    p.kernel_width = 0.25;
    p.kernel_sqrt = true;
    p.lime_score = Score::Probability;
  } else if (method == "lrp") {
    p.lrp_rule = "alpha1beta0";
  }
  // Saliency (abs), IG (baseline 0, 50 steps), DeepLift (baseline 0), GuidedGradCam (the last
  // conv stage) and Occlusion (3x15x15, stride 3x8x8) already use the paper's settings.
  return p;
}

Tensor baseline_image(Baseline b, const Tensor& x) {
  if (x.ndim() != 4 || x.dim(0) != 1) throw Error("baseline_image: expected one image, got " + shape_str(x.shape()));
  return b == Baseline::Zero ? Tensor::zeros(x.shape()) : x.clone();
}

}  // namespace spade::interp
