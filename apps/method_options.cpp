#include "apps/method_options.h"

#include <sstream>

#include "engine/error.h"

namespace spade::cli {

namespace {

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) parts.push_back(item);
  return parts;
}

std::array<int64_t, 3> parse_triple(const Args& a, const std::string& name) {
  const std::vector<std::string> parts = split_list(a.get(name), ',');
  std::array<int64_t, 3> v{};
  bool ok = parts.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) {
    try {
      size_t used = 0;
      v[i] = std::stoll(parts[i], &used);
      ok = used == parts[i].size() && v[i] > 0;
    } catch (const std::exception&) {
      ok = false;
    }
  }
  if (!ok) throw Error("--" + name + ": expected three positive integers C,H,W, got \"" + a.get(name) + "\"");
  return v;
}

std::vector<interp::Baseline> parse_baselines(const std::string& s) {
  std::vector<interp::Baseline> b;
  for (const std::string& part : split_list(s, ',')) {
    if (part == "zero")
      b.push_back(interp::Baseline::Zero);
    else if (part == "image")
      b.push_back(interp::Baseline::Image);
    else
      throw Error("--baselines: expected a comma-separated list of zero and image, got \"" + s + "\"");
  }
  if (b.empty()) throw Error("--baselines: empty list");
  return b;
}

nlohmann::json baselines_json(const std::vector<interp::Baseline>& b) {
  nlohmann::json j = nlohmann::json::array();
  for (interp::Baseline x : b) j.push_back(x == interp::Baseline::Zero ? "zero" : "image");
  return j;
}

}  // namespace

// The preset, then every method option the user gave explicitly.
interp::MethodParams method_params(const Args& a, const std::string& method, const Model& m) {
  const std::string preset = a.get("preset");
  if (preset != "captum" && preset != "paper") throw Error("--preset: expected captum or paper, got \"" + preset + "\"");
  interp::MethodParams p = preset == "paper" ? interp::paper_preset(method) : interp::captum_preset();
  p.mean = m.preprocess.mean;
  p.std = m.preprocess.std;
  if (a.flag("no-abs")) p.abs = false;
  if (a.has("steps")) p.steps = a.get_int("steps");
  if (a.has("samples")) p.samples = a.get_int("samples");
  if (a.has("stdev")) p.stdev = a.get_double("stdev");
  if (a.has("baselines")) p.baselines = parse_baselines(a.get("baselines"));
  if (a.has("wrapped")) p.wrapped = a.get("wrapped");
  if (a.has("layer")) p.layer = a.get("layer");
  if (a.flag("relu-attributions")) p.relu_attributions = true;
  if (a.has("window")) p.window = parse_triple(a, "window");
  if (a.has("stride")) p.stride = parse_triple(a, "stride");
  if (a.has("segmentation")) p.segmentation = a.get("segmentation");
  if (p.segmentation != "quickshift" && p.segmentation != "slic")
    throw Error("--segmentation: expected quickshift or slic, got \"" + p.segmentation + "\"");
  if (a.has("segments")) p.slic_segments = a.get_int("segments");
  if (a.has("regression")) p.regression = a.get("regression");
  if (p.regression != "lasso" && p.regression != "ridge")
    throw Error("--regression: expected lasso or ridge, got \"" + p.regression + "\"");
  if (a.has("alpha")) p.regression_alpha = a.get_double("alpha");
  if (a.has("lrp-rule")) p.lrp_rule = a.get("lrp-rule");
  if (p.lrp_rule != "epsilon" && p.lrp_rule != "alpha1beta0")
    throw Error("--lrp-rule: expected epsilon or alpha1beta0, got \"" + p.lrp_rule + "\"");
  if (a.has("lrp-epsilon")) p.lrp_epsilon = a.get_double("lrp-epsilon");
  p.seed = static_cast<uint64_t>(a.get_int("seed"));
  return p;
}

// The settings that define one method's output (what a reader needs to reproduce it).
nlohmann::json settings_json(const std::string& method, const interp::MethodParams& p) {
  nlohmann::json j;
  const std::string wrapped = method == "smoothgrad" ? p.wrapped : method;
  if (method == "smoothgrad") {
    j["wrapped"] = p.wrapped;
    j["samples"] = p.samples < 0 ? 5 : p.samples;
    j["stdev"] = p.stdev < 0 ? 1.0 : p.stdev;
  }
  if (wrapped == "saliency") j["abs"] = p.abs;
  if (wrapped == "integrated_gradients") j["steps"] = p.steps;
  if (wrapped == "integrated_gradients" || wrapped == "deeplift" || wrapped == "occlusion" || wrapped == "gradient_shap")
    j["baselines"] = baselines_json(p.baselines);
  if (wrapped == "gradient_shap") {
    j["samples"] = p.samples < 0 ? 5 : p.samples;
    j["stdev"] = p.stdev < 0 ? 0.0 : p.stdev;
  }
  if (wrapped == "gradcam" || wrapped == "guided_gradcam" || wrapped == "scorecam")
    j["layer"] = p.layer.empty() ? "(input of the global average pool)" : p.layer;
  if (wrapped == "gradcam") j["relu_attributions"] = p.relu_attributions;
  if (wrapped == "occlusion") {
    j["window"] = p.window;
    j["stride"] = p.stride;
  }
  if (wrapped == "lime") {
    j["samples"] = p.samples < 0 ? 50 : p.samples;
    j["segmentation"] = p.segmentation;
    if (p.segmentation == "slic") j["segments"] = p.slic_segments;
    j["regression"] = p.regression;
    j["alpha"] = p.regression_alpha;
    j["kernel_width"] = p.kernel_width;
    j["lime_package_mode"] = p.kernel_sqrt;
    j["score"] = p.lime_score == interp::Score::Logit ? "logit" : "probability";
  }
  if (wrapped == "lrp") {
    j["rule"] = p.lrp_rule;
    if (p.lrp_rule == "epsilon") j["epsilon"] = p.lrp_epsilon;
  }
  if (wrapped == "smoothgrad" || wrapped == "gradient_shap" || wrapped == "lime") j["seed"] = p.seed;
  return j;
}

void add_method_options(std::vector<Option>& opts) {
  opts.push_back({"preset", "captum|paper", "method defaults: Captum's, or the SPADE paper's settings", "captum"});
  opts.push_back({"steps", "N", "integrated_gradients: quadrature points", "50", integer(1, kMaxCount)});
  opts.push_back({"samples", "N", "smoothgrad / gradient_shap / lime samples (defaults 5 / 5 / 50)", "", integer(1, kMaxCount)});
  opts.push_back({"stdev", "S", "smoothgrad / gradient_shap noise stdev, absolute (defaults 1.0 / 0.0)", "", number(0, 1e6)});
  opts.push_back({"baselines", "zero,image", "baseline(s): integrated_gradients, deeplift, occlusion take one; gradient_shap draws from all", "zero"});
  opts.push_back({"wrapped", "NAME", "smoothgrad: the method it averages", "saliency"});
  opts.push_back({"no-abs", "", "saliency: keep the gradient's sign", ""});
  opts.push_back({"layer", "NAME", "gradcam / guided_gradcam / scorecam layer: a node or module name (default: the last conv stage)", ""});
  opts.push_back({"relu-attributions", "", "gradcam: ReLU the map (Captum's default is not to)", ""});
  opts.push_back({"window", "C,H,W", "occlusion window", "3,15,15"});
  opts.push_back({"stride", "C,H,W", "occlusion strides", "3,8,8"});
  opts.push_back({"segmentation", "slic|quickshift", "lime superpixels (the paper preset: quickshift)", "slic"});
  opts.push_back({"segments", "N", "lime with slic: number of segments", "50", integer(1, 1 << 20)});
  opts.push_back({"regression", "lasso|ridge", "lime surrogate fit", "lasso"});
  opts.push_back({"alpha", "A", "lime regularisation strength", "0.01", number(0, 1e6)});
  opts.push_back({"lrp-rule", "epsilon|alpha1beta0", "lrp rule (alpha1beta0 uses z^B on the first conv)", "epsilon"});
  opts.push_back({"lrp-epsilon", "E", "lrp epsilon rule stabiliser", "1e-9", number(0, 1e6)});
}

std::vector<std::string> parse_methods(const std::string& arg) {
  std::vector<std::string> methods;
  if (arg == "all")
    for (const auto& info : interp::all_methods()) methods.push_back(info.name);
  else
    methods = split_list(arg, ',');
  if (methods.empty()) throw Error("--method: no method named");
  for (const std::string& name : methods) interp::find_method(name);
  return methods;
}

}  // namespace spade::cli
