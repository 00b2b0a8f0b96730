// spade explain: saliency maps of one input for the dense model and/or its SPADE trace, written
// as NPY arrays, PNG heatmaps/overlays and a JSON record of everything that produced them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/method_options.h"
#include "apps/trace_options.h"
#include "engine/executor.h"
#include "formats/file_io.h"
#include "formats/heatmap.h"
#include "formats/image.h"
#include "formats/npy.h"
#include "interpret/saliency/methods.h"
#include "formats/json_output.h"

namespace spade::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The softmax of the logits of one image, as reported in meta.json.
struct Prediction {
  std::vector<float> probs;
  int64_t cls() const { return std::max_element(probs.begin(), probs.end()) - probs.begin(); }
};

Prediction predict(const interp::Network& net, const Tensor& x) {
  const Tensor out = interp::logits(net, x);
  return {softmax(out.data(), out.dim(1))};
}

nlohmann::json prediction_json(const Prediction& p, int64_t target, const Model& m) {
  return {{"class", p.cls()}, {"label", m.labels.at(p.cls())}, {"probability", p.probs[p.cls()]},
          {"target_probability", p.probs.at(target)}};
}

// meta.json's "spade": the solver mode, the schedule the method's trace used, and its report.
nlohmann::json spade_json(const std::string& mode, const interp::Trace& t) {
  return {{"mode", mode}, {"sparsity", t.sparsity}, {"report", interp::trace_report_json(t)}};
}

// One attribution and everything exported from it.
struct Result {
  std::string method, variant;  // variant: "dense" or "spade"
  Tensor attribution;           // (3, H, W)
  Tensor map;                   // (H, W)
  Image heat, over;
  double seconds = 0;
};

Result explain_one(const interp::Network& net, const Tensor& x, int64_t target, const std::string& method,
                   const interp::MethodParams& params, const std::string& variant, bool quiet) {
  const interp::MethodInfo& info = interp::find_method(method);
  interp::MethodParams p = params;
  std::unique_ptr<Progress> bar;
  if (!quiet)
    p.progress = [&](int64_t done, int64_t total) {
      if (!bar) bar = std::make_unique<Progress>(method + " (" + variant + ")", total);
      bar->update(done);
    };
  Result r;
  r.method = method;
  r.variant = variant;
  const auto t0 = Clock::now();
  Tensor a = info.fn(net, x, target, p);
  r.seconds = seconds_since(t0);
  if (bar) bar->finish();
  const int64_t C = a.dim(1), H = a.dim(2), W = a.dim(3);
  r.attribution = a.reshape({C, H, W});
  r.map = Tensor::zeros({H, W});
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H * W; ++i) r.map[i] += a[c * H * W + i];
  for (int64_t i = 0; i < r.map.numel(); ++i)
    if (!std::isfinite(r.map[i])) throw Error(method + " (" + variant + "): the attribution contains NaN or Inf");
  return r;
}

// Signed maps diverge around 0; maps without negative values are drawn from 0 (docs/cli.md).
// The dense and SPADE maps of one method share the choice so that they can be compared.
void draw(std::vector<Result*> variants, const Image& shown) {
  bool is_signed = false;
  for (const Result* r : variants)
    is_signed = is_signed || *std::min_element(r->map.data(), r->map.data() + r->map.numel()) < 0.f;
  for (Result* r : variants) {
    r->heat = heatmap(r->map, is_signed ? MapScale::Signed : MapScale::Absolute);
    r->over = overlay(shown, r->heat);
  }
}

void write_result(const Result& r, const std::string& dir) {
  save_npy(join_path(dir, "attribution.npy"), r.attribution);
  save_npy(join_path(dir, "map.npy"), r.map);
  save_png(join_path(dir, "heatmap.png"), r.heat);
  save_png(join_path(dir, "overlay.png"), r.over);
}

}  // namespace

int cmd_explain(int argc, char** argv, int first) {
  std::vector<Option> opts = model_options();
  opts.push_back({"image", "IMG", "the input image (preprocessed like the model's training data)", ""});
  opts.push_back({"input", "X.npy", "the input as a normalised (1,3,H,W) or (3,H,W) float32 array", ""});
  opts.push_back({"method", "NAME[,NAME..]|all", "saliency method(s); see the list below", ""});
  opts.push_back({"target", "C", "class to explain: an index, a class id or a name (default: the dense model's prediction)", ""});
  opts.push_back({"spade", "off|fast|exact", "explain the SPADE trace: fast = SparseGPT (FastSPADE), exact = OBC (SPADE)", "off"});
  add_trace_options(opts);
  opts.push_back({"compare", "", "with --spade: also explain the dense model and write compare.png (image | dense | SPADE)", ""});
  add_method_options(opts);
  opts.push_back({"batch", "B", "images per forward/backward pass (bounds memory; 8 keeps ResNet-50 under 2 GB)", "8", integer(1, kMaxBatch)});
  opts.push_back({"out", "DIR", "output directory", ""});
  opts.push_back({"quiet", "", "no progress bars", ""});
  add_device_options(opts);
  Args a("explain",
         "Saliency maps of one input, for the dense model or its SPADE trace. Methods: saliency, input_x_gradient, "
         "integrated_gradients, smoothgrad, gradient_shap, deeplift, guided_backprop, deconvolution, gradcam, "
         "guided_gradcam, occlusion, lime, lrp, scorecam (or all). Writes attribution.npy (3,H,W), map.npy (H,W, "
         "the channel sum), heatmap.png, overlay.png and meta.json into --out (one subdirectory per method when "
         "there are several).",
         opts, argc, argv, first);
  if (a.help()) {
    a.print_help();
    return 0;
  }
  apply_resource_options(a);
  const Device device = device_from(a);
  const auto t_start = Clock::now();
  const std::string out_dir = a.require("out");
  const std::string method_arg = a.require("method");
  const std::vector<std::string> methods = parse_methods(method_arg);
  const std::string mode = a.get("spade");
  if (mode != "off" && mode != "fast" && mode != "exact")
    throw Error("--spade: expected off, fast or exact, got \"" + mode + "\"");
  const bool use_spade = mode != "off";
  const bool compare = a.flag("compare");
  if (compare && !use_spade) throw Error("--compare needs --spade fast or --spade exact");
  const int64_t batch = a.get_int("batch");
  const bool quiet = a.flag("quiet");

  Model m = load_model_from(a);
  const Tensor x = load_input(a, m);
  check_batch_memory(a, m, batch, PassKind::ForwardBackward, device, x.dim(2));
  // Every method's parameters are checked before any long computation starts.
  std::vector<interp::MethodParams> params;
  for (const std::string& name : methods) params.push_back(method_params(a, name, m));

  // On a GPU the plain-gradient passes run there (interp::Network); rule-based ones stay here.
  std::unique_ptr<interp::DeviceModel> dense_gpu;
  if (device != Device::CPU) dense_gpu = std::make_unique<interp::DeviceModel>(m.graph, nullptr, device);
  const interp::Network dense{m.graph, nullptr, batch, dense_gpu.get()};
  const Prediction dense_pred = predict(dense, x);
  const int64_t target = target_class(a, m, dense_pred.cls());

  // One trace per distinct schedule of the methods (each method's own without --sparsity).
  MethodTraces traces;
  double trace_s = 0;
  if (use_spade) traces = spade_traces_of(a, m, methods, mode, device, quiet, &trace_s);
  std::vector<std::unique_ptr<interp::DeviceModel>> sparse_gpu;
  std::vector<interp::Network> sparse;
  std::vector<nlohmann::json> trace_pred_json;
  for (const interp::Trace& t : traces.traces) {
    if (device != Device::CPU) sparse_gpu.push_back(std::make_unique<interp::DeviceModel>(m.graph, &t.weights, device));
    sparse.push_back({m.graph, &t.weights, batch, sparse_gpu.empty() ? nullptr : sparse_gpu.back().get()});
    trace_pred_json.push_back(prediction_json(predict(sparse.back(), x), target, m));
  }
  auto explained_by = [&](size_t k) -> const interp::Network& { return use_spade ? sparse[traces.trace_of[k]] : dense; };

  const Image shown = tensor_to_image(x, m.preprocess.mean, m.preprocess.std);
  std::vector<Result> results;  // per method: primary, then dense when comparing
  for (size_t k = 0; k < methods.size(); ++k) {
    results.push_back(explain_one(explained_by(k), x, target, methods[k], params[k], use_spade ? "spade" : "dense", quiet));
    if (compare) results.push_back(explain_one(dense, x, target, methods[k], params[k], "dense", quiet));
  }
  const size_t per_method = compare ? 2 : 1;
  for (size_t k = 0; k < methods.size(); ++k) {
    std::vector<Result*> variants;
    for (size_t v = 0; v < per_method; ++v) variants.push_back(&results[k * per_method + v]);
    draw(variants, shown);
  }

  // Everything is computed; now the files (each written atomically).
  const bool one = methods.size() == 1;
  for (size_t k = 0; k < methods.size(); ++k) {
    const std::string dir = one ? out_dir : join_path(out_dir, methods[k]);
    const Result& primary = results[k * per_method];
    write_result(primary, dir);
    nlohmann::json timings = {{"attribution_s", primary.seconds}, {"trace_s", trace_s}};
    if (compare) {
      const Result& d = results[k * per_method + 1];
      write_result(d, join_path(dir, "dense"));
      timings["dense_attribution_s"] = d.seconds;
    }
    float lo = primary.map[0], hi = primary.map[0];
    for (int64_t i = 0; i < primary.map.numel(); ++i) {
      lo = std::min(lo, primary.map[i]);
      hi = std::max(hi, primary.map[i]);
    }
    nlohmann::json meta = {
        {"model", {{"arch", m.arch}, {"source", m.source}, {"weights", m.weights_path}}},
        {"input", a.has("image") ? a.get("image") : a.get("input")},
        {"input_shape", x.shape()},
        {"method", methods[k]},
        {"preset", a.get("preset")},
        {"settings", settings_json(methods[k], params[k])},
        {"explained", use_spade ? "spade trace" : "dense model"},
        {"target", target},
        {"target_label", m.labels.at(target)},
        {"dense_prediction", prediction_json(dense_pred, target, m)},
        {"trace_prediction", use_spade ? trace_pred_json[traces.trace_of[k]] : nlohmann::json(nullptr)},
        {"spade", use_spade ? spade_json(mode, traces.traces[traces.trace_of[k]]) : nlohmann::json(nullptr)},
        {"map", {{"min", lo}, {"max", hi}}},
        {"timings", timings},
    };
    write_json_file(join_path(dir, "meta.json"), meta, 2);
  }
  if (compare) {
    std::vector<std::vector<Image>> rows;
    std::vector<std::string> labels;
    for (size_t k = 0; k < methods.size(); ++k) {
      rows.push_back({shown, results[k * 2 + 1].heat, results[k * 2].heat});
      labels.push_back(methods[k]);
    }
    save_png(join_path(out_dir, "compare.png"), panel(rows, labels, {"image", "dense", "spade"}, 4));
  }
  if (!quiet) {
    std::cout << "target " << target << " (" << m.labels.at(target) << "), dense prediction " << dense_pred.cls() << " ("
              << m.labels.at(dense_pred.cls()) << ", p=" << dense_pred.probs[dense_pred.cls()] << ")";
    for (size_t t = 0; t < trace_pred_json.size(); ++t)
      std::cout << (t == 0 ? ", trace prediction " : ", ") << trace_pred_json[t]["class"].get<int64_t>() << " ("
                << traces.traces[t].sparsity << ")";
    std::cout << "\n";
    for (const Result& r : results)
      std::cout << "  " << r.method << " (" << r.variant << "): " << r.seconds << " s\n";
    std::cout << "wrote " << out_dir << " in " << seconds_since(t_start) << " s\n";
  }
  return 0;
}

}  // namespace spade::cli
