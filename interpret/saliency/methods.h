#pragma once
// Saliency methods. Every method maps images x (N, C, H, W) and one target class to
// attributions of x's shape, computed image by image as Captum would for each row; internally
// all passes are batched (Network::batch). Definitions and defaults follow Captum (docs/saliency.md
// lists every one, and where the SPADE paper's preset differs).
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "interpret/saliency/network.h"

namespace spade::interp {

enum class Baseline { Zero, Image };  // the all-zero input (the mean colour), or x itself

struct MethodParams {
  // saliency
  bool abs = true;
  // integrated_gradients: Gauss-Legendre points; deeplift / integrated_gradients / occlusion /
  // gradient_shap baselines
  int64_t steps = 50;
  std::vector<Baseline> baselines{Baseline::Zero};
  // smoothgrad (NoiseTunnel): the wrapped method, sample count and absolute noise stdev;
  // gradient_shap uses samples and stdev too. -1 / NaN: the method's own default
  // (smoothgrad 5 samples stdev 1.0, gradient_shap 5 samples stdev 0.0, lime 50 samples).
  std::string wrapped = "saliency";
  int64_t samples = -1;
  double stdev = -1.0;
  // gradcam, guided_gradcam, scorecam: see resolve_layer; empty = the last conv stage
  std::string layer;
  bool relu_attributions = false;  // gradcam only (Captum's default: no ReLU)
  // occlusion: window and stride over (C, H, W)
  std::array<int64_t, 3> window{3, 15, 15};
  std::array<int64_t, 3> stride{3, 8, 8};
  // lime
  std::string segmentation = "slic";  // or "quickshift" (the paper preset; needs large images)
  int64_t slic_segments = 50;
  double quickshift_kernel = 4.0, quickshift_max_dist = 200.0, quickshift_ratio = 0.2;
  std::string regression = "lasso";  // or "ridge"
  double regression_alpha = 0.01;
  double kernel_width = 1.0;       // exponential kernel on the cosine distance
  bool kernel_sqrt = false;        // the lime package's kernel and sampling (see lime.h)
  Score lime_score = Score::Logit;
  // the normalisation x = (pixel - mean) / std, undone where a method needs the image itself
  // (LIME segments the displayable image); the CLI sets it from the model's preprocessing
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  // lrp
  std::string lrp_rule = "epsilon";  // Captum's default; or "alpha1beta0" (z^B on the first conv)
  double lrp_epsilon = 1e-9;
  // everything random
  uint64_t seed = 0;
  // called with (done, total) during long methods; may be empty
  std::function<void(int64_t, int64_t)> progress;
};

// Captum's defaults (what a default-constructed MethodParams holds).
MethodParams captum_preset();
// The settings of the SPADE paper (SPADE.md section 5) for one method.
MethodParams paper_preset(const std::string& method);

using MethodFn = Tensor (*)(const Network&, const Tensor& x, int64_t target, const MethodParams&);

struct MethodInfo {
  const char* name;         // CLI name
  MethodFn fn;
  const char* summary;      // one line for --help
};
const std::vector<MethodInfo>& all_methods();
const MethodInfo& find_method(const std::string& name);  // throws Error listing the valid names

// The methods (one file each under interpret/saliency/).
Tensor saliency(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor input_x_gradient(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor integrated_gradients(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor smoothgrad(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor gradient_shap(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor deeplift(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor guided_backprop(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor deconvolution(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor gradcam(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor guided_gradcam(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor occlusion(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor lime(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor lrp(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor scorecam(const Network&, const Tensor& x, int64_t target, const MethodParams&);

// The baseline image for one image x (1, C, H, W).
Tensor baseline_image(Baseline b, const Tensor& x);
// The n-point Gauss-Legendre rule on [-1, 1], nodes ascending (numpy's leggauss).
void gauss_legendre(int64_t n, std::vector<double>& nodes, std::vector<double>& weights);

// Layer-resolution CAMs (N, 1, h, w) before upsampling, for export and tests.
Tensor gradcam_layer(const Network&, const Tensor& x, int64_t target, const MethodParams&);
Tensor scorecam_layer(const Network&, const Tensor& x, int64_t target, const MethodParams&);

}  // namespace spade::interp
